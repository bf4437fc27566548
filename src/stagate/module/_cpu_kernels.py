"""CPU kernels for the two sparse products of an epoch: CSR x dense, and SDDMM.

Why by hand: on CPU, torch's CSR x dense product zero-fills and copies its (N, F) output
around the MKL call, a fixed ~8 ms for a Visium slice at F = 512 even when the graph has only
~25k edges (the product itself is ~1 ms); an epoch runs six such products. These numba loops
run rows in parallel and write each output row once. Each row is summed by one thread in
a fixed order, so results are bit-identical from run to run. CUDA keeps torch's kernels.

A process forked from one that already ran these kernels must not use numba's OpenMP
threads (GNU OpenMP is not fork-safe: numba terminates such a child). Worker processes that
train runs side by side therefore call :func:`use_serial_kernels`: the same loops compiled
without threads, row by row in the same order, hence bit-identical results.
"""

from __future__ import annotations

import types

import torch
from numba import njit, prange
from torch import Tensor


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _csr_dense(indptr, indices, data, dense, out):  # pragma: no cover - compiled
    width = dense.shape[1]
    for i in prange(out.shape[0]):
        row = out[i]
        row[:] = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            a = data[k]
            src = dense[indices[k]]
            for f in range(width):
                row[f] += a * src[f]


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _sddmm(indptr, indices, left, right, out):  # pragma: no cover - compiled
    # Each dot product is summed in feature order (no reassociation: bit-identical results),
    # which makes it one chain of dependent additions that cannot be vectorised; four edges
    # of a row are summed side by side so the CPU overlaps their four chains (2x faster on a
    # STARmap graph at width 128, same bits).
    width = left.shape[1]
    zero = out.dtype.type(0.0)  # accumulate in the output's precision
    for i in prange(left.shape[0]):
        li = left[i]
        k, end = indptr[i], indptr[i + 1]
        while k + 4 <= end:
            r0, r1 = right[indices[k]], right[indices[k + 1]]
            r2, r3 = right[indices[k + 2]], right[indices[k + 3]]
            a0 = a1 = a2 = a3 = zero
            for f in range(width):
                lf = li[f]
                a0 += lf * r0[f]
                a1 += lf * r1[f]
                a2 += lf * r2[f]
                a3 += lf * r3[f]
            out[k], out[k + 1], out[k + 2], out[k + 3] = a0, a1, a2, a3
            k += 4
        while k < end:
            rj = right[indices[k]]
            acc = zero
            for f in range(width):
                acc += li[f] * rj[f]
            out[k] = acc
            k += 1


_TWINS: dict = {}  # threaded kernel -> its single-threaded twin
_serial = False  # whether this process runs the twins


def _serial_twin(kernel):
    """The same Python function under its own name ``<name>_serial``, compiled without
    threads and cached on disk: numba keys its cache by the function's name and line, so the
    twin needs a name of its own not to be confused with the threaded kernel (with one name,
    the twins had to be compiled afresh in every process, ~1 s)."""
    py = kernel.py_func
    name = f"{py.__name__}_serial"
    code = py.__code__.replace(co_name=name, co_qualname=f"{py.__qualname__}_serial")
    twin = types.FunctionType(code, py.__globals__, name, py.__defaults__, py.__closure__)
    twin.__module__ = py.__module__
    twin.__qualname__ = f"{py.__qualname__}_serial"
    return njit(parallel=False, fastmath=False, cache=True, nogil=True)(twin)


def compile_serial_kernels() -> None:
    """Compile (or load from the disk cache) the single-threaded twins. Call it before
    forking, so children inherit them."""
    global _serial
    for kernel in (_csr_dense, _sddmm):
        if kernel not in _TWINS:
            _TWINS[kernel] = _serial_twin(kernel)
    was, _serial = _serial, True
    try:  # one call per precision compiles them now
        crow, col, one = torch.tensor([0, 1]), torch.tensor([0]), torch.ones((1, 1))
        for dtype in (torch.float32, torch.float64):
            csr_dense(crow, col, one[0].to(dtype), one.to(dtype), 1)
            sddmm(crow, col, one.to(dtype), one.to(dtype))
    finally:
        _serial = was


def use_serial_kernels() -> None:
    """From now on, this process runs the kernels on one thread (see the module notes)."""
    global _serial
    compile_serial_kernels()
    _serial = True


def _pick(kernel):
    return _TWINS[kernel] if _serial else kernel


def csr_dense(crow: Tensor, col: Tensor, values: Tensor, dense: Tensor, n_rows: int) -> Tensor:
    """``A @ dense`` for the CSR matrix ``A = (crow, col, values)`` with `n_rows` rows."""
    dense = dense.contiguous()
    out = torch.empty((n_rows, dense.shape[1]), dtype=dense.dtype)
    _pick(_csr_dense)(crow.numpy(), col.numpy(), values.detach().contiguous().numpy(),
                      dense.detach().numpy(), out.numpy())
    return out


def sddmm(crow: Tensor, col: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """``<left[i], right[j]>`` for every non-zero ``(i, j)`` of the CSR pattern, in its order."""
    out = torch.empty(col.numel(), dtype=left.dtype)
    _pick(_sddmm)(crow.numpy(), col.numpy(), left.detach().contiguous().numpy(),
                  right.detach().contiguous().numpy(), out.numpy())
    return out
