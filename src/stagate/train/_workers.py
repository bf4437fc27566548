"""Independent training runs side by side: one forked worker process per CPU core.

Why processes: a STAGATE epoch on a few thousand spots is many small operations, and two
threads barely share them (one process, two threads: 10.3 s per DLPFC run; two processes,
one thread each: 7.5 s per run, bench/README.md). Forked workers inherit the data and the
compiled kernels, so they start at once; each runs torch and the numba kernels on a single
thread (GNU OpenMP must not be used in a forked child), which also makes a run's result
independent of how many workers or cores there are.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import torch
from threadpoolctl import threadpool_limits

from .._validation import StagateInputError
from ..module._cpu_kernels import compile_serial_kernels, use_serial_kernels

#: seconds interrupted workers get to save their checkpoints before they are ended
SAVE_GRACE_SECONDS = 20.0

#: what the workers run: (function, items), set before forking and inherited by the workers
_JOB: tuple[Callable, Sequence] | None = None


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def can_fork() -> bool:
    """Whether worker processes can be forked here (Linux; macOS and Windows spawn, which
    would re-import everything and copy the data, so runs stay in this process there)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when its parent dies (a killed `stagate run` must not
    leave workers writing checkpoints behind it)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no glibc: workers still end with their pool
        pass


def _start_worker() -> None:
    _die_with_parent()
    _private_progress_lock()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: save and stop
    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")  # numpy's BLAS too: workers share the cores
    use_serial_kernels()


def _private_progress_lock() -> None:
    """Give this worker a tqdm lock of its own, shared with no other process.

    tqdm's default lock is a multiprocessing lock shared by the parent and every forked
    worker, plus a thread lock copied at the fork. A worker forked while another thread of
    the parent (tqdm's monitor) held it, or a worker ended while holding the shared one,
    leaves every later bar, silent ones included, waiting forever: the test suite once hung
    in a worker creating its (silent) training bar. Workers draw no bars, so a private lock
    loses nothing.
    """
    import threading

    from tqdm import tqdm as std_tqdm
    from tqdm.auto import tqdm as auto_tqdm

    lock = threading.RLock()
    for cls in {std_tqdm, auto_tqdm}:
        cls.set_lock(lock)


_interrupted = False  # in a worker: Ctrl-C came; the runs still queued must not start


def _run(index: int):
    global _interrupted
    if _interrupted:
        raise KeyboardInterrupt
    fn, items = _JOB
    try:
        return fn(items[index])
    except KeyboardInterrupt:
        _interrupted = True
        raise


def _import_once_for_all() -> None:
    """Import here what each worker would otherwise import for itself.

    The first ``torch.optim`` optimiser a process makes imports torch._dynamo (~1.4 s on a
    2-core CPU: its methods are wrapped to keep torch.compile out). Imported before the fork,
    it is inherited; otherwise every worker, and the run trained here after them, pays it:
    on STARmap that was 2.8 of a consensus's ~17 s.
    """
    import torch._dynamo  # noqa: F401


def map_in_workers(fn: Callable, items: Sequence, n_workers: int, *,
                   on_result: Callable | None = None) -> list:
    """``[fn(item) for item in items]`` computed in `n_workers` forked processes.

    `fn` and `items` are inherited by the workers, not pickled; only the results travel back
    (pickled). `on_result(index, result)` is called as each result arrives, in order. An
    error in `fn` is raised here; a worker that dies (e.g. killed for memory) raises a
    :class:`StagateInputError` that names the way out (one run after another).
    """
    global _JOB
    compile_serial_kernels()  # compiled once here, inherited by every worker
    _import_once_for_all()
    _JOB = (fn, list(items))
    pool = ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_start_worker)
    try:
        futures = [pool.submit(_run, i) for i in range(len(items))]
        results = []
        for i, future in enumerate(futures):
            results.append(future.result())
            if on_result is not None:
                on_result(i, results[-1])
    except BrokenProcessPool as err:
        _stop(pool)
        msg = ("A worker process training the runs died (out of memory?). Train the runs one "
               "after another with --jobs 1 (Python: n_jobs=1).")
        raise StagateInputError(msg) from err
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reaches the workers too: each saves its checkpoint and stops;
        # give them a moment for that before ending them
        pool.shutdown(wait=False, cancel_futures=True)
        wait(futures, timeout=SAVE_GRACE_SECONDS)
        _stop(pool)
        raise
    except BaseException:  # an error in a run: stop the other runs now
        _stop(pool)
        raise
    finally:
        _JOB = None
    pool.shutdown()
    return results


def _stop(pool: ProcessPoolExecutor) -> None:
    """End the workers now (shutdown alone would let the runs already started finish)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)
