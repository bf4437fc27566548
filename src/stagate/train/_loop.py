"""The optimisation loop: Adam, gradient clipping, tqdm, loss history, checkpoint/resume."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from .._defaults import CONVERGENCE_TOL, CONVERGENCE_WINDOW  # noqa: F401 - re-exported
from .._logging import log, progress
from .._validation import StagateInputError
from ..module import STAGATEModule
from ._batch import Batch
from ._distributed import SeedLoss, all_reduce_sum, world


def train_loop(
    module: STAGATEModule,
    batches: Sequence[Batch],
    *,
    n_values: int,
    n_epochs: int,
    lr: float,
    weight_decay: float,
    gradient_clip: float,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    show_progress: bool = True,
    step_every: str = "epoch",
    tol: float | None = None,
    window: int = CONVERGENCE_WINDOW,
    fingerprint: dict | None = None,
    lr_schedule: str = "constant",
) -> list[float]:
    """Train `module` in place and return the loss per epoch.

    The training settings have no defaults here: they come from the recipe
    (:data:`stagate.RECIPES`) through :class:`stagate.STAGATE`.

    The loss is the mean squared reconstruction error over all ``n_values`` = N x G entries
    (the PyG original's ``mse_loss``); each batch contributes its seed rows' share, so the
    epoch loss of a minibatch run is the exact full-graph loss. Weight decay is Adam's
    (L2 on every parameter), as in the PyG original.

    With `checkpoint`, the model, optimiser and history are saved there every
    `checkpoint_every` epochs and on interruption (Ctrl-C), and a run started with an
    existing checkpoint resumes from it; on CPU the result equals an uninterrupted run. The
    checkpoint carries `fingerprint` (what the run is: data, graph, settings, seed, version)
    and is resumed only by a run with the same fingerprint; anything else is refused in one
    line. After training the file holds the final state, so the same run again resumes at its
    last epoch and trains no more (a larger `n_epochs` trains on).

    `lr_schedule` ``"constant"`` keeps `lr` throughout (the original); ``"cosine"`` warms up
    linearly over the first 5% of `n_epochs` and then decays along a half cosine to 1% of `lr`
    at the last epoch. The rate is a function of the epoch alone, so a resumed run continues
    on the same schedule.

    `step_every="epoch"` accumulates the batches' gradients and takes one optimiser step per
    epoch: minibatch training is then full-batch training computed in pieces (same result up
    to summation order). ``"batch"`` steps after every batch (more updates per epoch).

    With `tol`, training stops early once the loss fell by less than the fraction `tol` over
    the last `window` epochs (``loss[e - window] - loss[e] < tol * loss[e - window]``);
    `n_epochs` is then the maximum. The rule reads only the loss history, so resumed and
    distributed runs stop at the same epoch as an uninterrupted single-process run.
    """
    if lr_schedule not in LR_SCHEDULES:
        msg = f"lr_schedule == {lr_schedule!r}, must be one of {', '.join(LR_SCHEDULES)}."
        raise ValueError(msg)
    if step_every not in ("epoch", "batch"):
        msg = f"step_every == {step_every!r}, must be 'epoch' or 'batch'."
        raise ValueError(msg)
    per_batch = step_every == "batch"
    rank, n_ranks = world()
    step_module: torch.nn.Module = SeedLoss(module)
    if n_ranks > 1:  # every rank holds a share of each batch's seeds; DDP averages gradients
        step_module = DistributedDataParallel(step_module)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    device = module.W1.device
    graphed = use_cuda_graph(device, batches, n_ranks=n_ranks, checkpoint=ckpt)
    # a replayed graph reads the learning rate from device memory: a tensor, and Adam's
    # capturable mode (its step count on the device too)
    optimiser = torch.optim.Adam(
        module.parameters(), lr=torch.tensor(lr, device=device) if graphed else lr,
        weight_decay=weight_decay, capturable=graphed)
    history: list[float] = []
    start = 0
    if ckpt is not None and ckpt.exists():
        state = _load(ckpt, module.W1.device)
        _check_fingerprint(ckpt, state.get("fingerprint"), fingerprint)
        module.load_state_dict(state["module"])
        optimiser.load_state_dict(state["optimiser"])
        history = list(state["history"])
        start = len(history)
        log.warning("resuming from checkpoint %s at epoch %d of %d", ckpt, start, n_epochs)

    module.train()
    bar = progress(range(start, n_epochs), show=show_progress and rank == 0, desc="training",
                   unit="epoch", initial=start, total=n_epochs)
    t0 = time.perf_counter()
    captured: CapturedStep | None = None
    side_stream = torch.cuda.Stream(device) if graphed else None
    try:
        for epoch in bar:
            if converged(history, tol, window):  # checked first: a resumed run stops alike
                log.info("loss fell by less than %.2g%% over the last %d epochs: stopped after "
                         "epoch %d of at most %d", 100 * tol, window, len(history), n_epochs)
                break
            if hasattr(batches, "epoch"):  # minibatch plans shuffle by epoch: resume exactly
                batches.epoch = epoch
            if lr_schedule != "constant" or graphed:
                _set_lr(optimiser, learning_rate(epoch, n_epochs, lr, lr_schedule))
            if graphed and captured is None and epoch - start >= GRAPH_WARMUP_EPOCHS:
                captured = _capture(step_module, module, optimiser, batches[0].to(device),
                                    1.0 / n_values, gradient_clip, side_stream)
                graphed = captured is not None
            if captured is not None:
                captured.replay()
                # losses stay on the GPU and are read in blocks: no wait for the GPU per epoch
                if tol is not None or captured.n_pending >= GRAPH_READ_EVERY \
                        or epoch == n_epochs - 1:
                    _read_losses(captured, history, epoch, lr, bar)
                continue
            total = 0.0
            optimiser.zero_grad(set_to_none=True)
            # before a CUDA graph is recorded, the warm-up epochs run on a side stream, after
            # what this stream did (the learning rate's update included)
            if graphed:
                side_stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side_stream) if graphed else contextlib.nullcontext():
                for batch in batches:
                    batch = batch.to(device)
                    # x n_ranks: DDP averages, the full batch's gradient is the ranks' sum
                    loss = step_module(batch) * (n_ranks / n_values)
                    loss.backward()
                    total += float(loss.detach()) / n_ranks
                    if per_batch:
                        _step(module, optimiser, gradient_clip)
                if not per_batch:
                    _step(module, optimiser, gradient_clip)
            if n_ranks > 1:
                total = all_reduce_sum(total, device)
            _check_finite(total, epoch, lr)
            history.append(total)
            if epoch % 10 == 0 or epoch == n_epochs - 1:
                bar.set_postfix(loss=f"{total:.4f}")
            if ckpt is not None and rank == 0 and (epoch + 1) % checkpoint_every == 0:
                _save(ckpt, module, optimiser, history, fingerprint)
    except KeyboardInterrupt:
        if captured is not None and captured.n_pending:  # replayed epochs count too
            _read_losses(captured, history, len(history) + captured.n_pending - 1, lr, bar)
        if ckpt is not None and rank == 0:
            _save(ckpt, module, optimiser, history, fingerprint)
            log.warning("interrupted at epoch %d; checkpoint saved to %s", len(history), ckpt)
        elif rank == 0:
            log.warning("interrupted at epoch %d; nothing was saved. Pass a checkpoint file "
                        "(command line: --checkpoint FILE) to resume an interrupted run.",
                        len(history))
        raise
    finally:
        bar.close()
    if ckpt is not None and rank == 0:
        _save(ckpt, module, optimiser, history, fingerprint)
        log.info("checkpoint %s holds the final state (epoch %d): the same run again returns "
                 "this result; delete the file to train from scratch", ckpt, len(history))
    final = history[-1] if history else float("nan")
    log.info("trained %d epochs in %.1f s, final loss %.5f",
             len(history) - start, time.perf_counter() - t0, final)
    module.eval()
    return history


def _check_finite(total: float, epoch: int, lr: float) -> None:
    if not math.isfinite(total):
        msg = (f"Training diverged: the loss became {total} at epoch {epoch + 1}. Try a "
               f"lower learning rate (--lr {lr / 10:g}) and check the input's scale: "
               f"log-normalised expression is expected (raw counts go through "
               f"stagate.pp.preprocess).")
        raise StagateInputError(msg)


# -- CUDA graphs -----------------------------------------------------------------------------
#: eager epochs before the step is recorded (they initialise Adam's state and the libraries'
#: workspaces, which must not happen while a graph is being recorded)
GRAPH_WARMUP_EPOCHS = 3
#: replayed epochs whose losses are read from the GPU at once
GRAPH_READ_EVERY = 50


def use_cuda_graph(device: torch.device, batches, *, n_ranks: int, checkpoint) -> bool:
    """Whether the training step is recorded once as a CUDA graph and replayed each epoch.

    Only for single-process, full-batch training on CUDA without a checkpoint file (a
    checkpointed run keeps the plain loop, whose state it saves and resumes);
    ``STAGATE_CUDA_GRAPHS=0`` in the environment turns it off.
    """
    return (device.type == "cuda" and n_ranks == 1 and checkpoint is None
            and isinstance(batches, (list, tuple)) and len(batches) == 1
            and os.environ.get("STAGATE_CUDA_GRAPHS", "1") != "0")


class CapturedStep:
    """One full-batch training step (forward, backward, gradient clip, Adam) recorded as a
    CUDA graph, replayed once per epoch.

    Why: an epoch on a few thousand spots is a hundred or so small kernels. Launched one by
    one from Python, the GPU waits on the CPU: on an H200, 5.5 ms per epoch for ~0.7 ms of
    GPU work (bench/README.md). A replay launches the same kernels, on the same memory, at
    once. Each replay's loss stays on the GPU until :func:`_read_losses` reads a block.
    """

    def __init__(self, graph: torch.cuda.CUDAGraph, loss: torch.Tensor, batch: Batch) -> None:
        self.graph, self.loss = graph, loss
        self.batch = batch  # the recorded kernels read its tensors: keep them alive
        self.pending: list[torch.Tensor] = []

    @property
    def n_pending(self) -> int:
        return len(self.pending)

    def replay(self) -> None:
        self.graph.replay()
        self.pending.append(self.loss.clone())  # the graph overwrites `loss` next epoch


def _capture(step_module, module, optimiser, batch, scale: float, gradient_clip: float,
             side_stream) -> CapturedStep | None:
    """Record the training step; None (and a warning) where the GPU libraries refuse."""
    torch.cuda.current_stream().wait_stream(side_stream)
    optimiser.zero_grad(set_to_none=True)  # backward then writes the graph's own gradients
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            loss = step_module(batch) * scale
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), gradient_clip)
            optimiser.step()
    except RuntimeError as err:  # an operation that cannot be recorded: train on eagerly
        log.warning("recording the training step as a CUDA graph failed (%s); training on "
                    "without it", str(err).splitlines()[0])
        optimiser.zero_grad(set_to_none=True)
        return None
    log.info("training step recorded as a CUDA graph; it is replayed every epoch")
    return CapturedStep(graph, loss.detach(), batch)


def _read_losses(captured: CapturedStep, history: list[float], epoch: int, lr: float,
                 bar) -> None:
    """Move the replayed epochs' losses into `history` (one wait for the GPU)."""
    values = torch.stack(captured.pending).tolist()
    captured.pending.clear()
    first = epoch + 1 - len(values)
    for i, total in enumerate(values):
        _check_finite(total, first + i, lr)
        history.append(total)
    bar.set_postfix(loss=f"{values[-1]:.4f}")


def _set_lr(optimiser, value: float) -> None:
    for group in optimiser.param_groups:
        if isinstance(group["lr"], torch.Tensor):  # read by a recorded graph: in place
            group["lr"].fill_(value)
        else:
            group["lr"] = value


LR_SCHEDULES = ("constant", "cosine")


def learning_rate(epoch: int, n_epochs: int, lr: float, schedule: str) -> float:
    """The learning rate of `epoch` (0-based) out of `n_epochs` under `schedule`."""
    if schedule == "constant":
        return lr
    warmup = max(1, round(0.05 * n_epochs))
    if epoch < warmup:  # linear warm-up: Adam's first steps are large on a cold start
        return lr * (epoch + 1) / warmup
    progress_ = (epoch - warmup) / max(1, n_epochs - 1 - warmup)
    return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress_))))


def converged(history: Sequence[float], tol: float | None, window: int) -> bool:
    """Whether the loss fell by less than the fraction `tol` over the last `window` epochs."""
    if tol is None or len(history) <= window:
        return False
    before, now = history[-1 - window], history[-1]
    return before - now < tol * abs(before)


def _step(module, optimiser, gradient_clip: float) -> None:
    torch.nn.utils.clip_grad_norm_(module.parameters(), gradient_clip)
    optimiser.step()
    optimiser.zero_grad(set_to_none=True)


def _save(path: Path, module, optimiser, history, fingerprint: dict | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"module": module.state_dict(), "optimiser": optimiser.state_dict(),
                "history": history, "fingerprint": fingerprint}, tmp)
    os.replace(tmp, path)


def _load(path: Path, device) -> dict:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a foreign file
        msg = (f"Checkpoint {path} cannot be read ({type(err).__name__}); it is not a stagate "
               f"checkpoint or it is damaged. Delete it or pass another --checkpoint path.")
        raise StagateInputError(msg) from None
    if not isinstance(state, dict) or not {"module", "optimiser", "history"} <= set(state):
        msg = f"Checkpoint {path} is not a stagate checkpoint; delete it or use another path."
        raise StagateInputError(msg)
    return state


def _check_fingerprint(path: Path, saved: dict | None, current: dict | None) -> None:
    """Refuse to resume a checkpoint written by another run (other data, settings or seed)."""
    if current is None:
        return
    if saved is None:
        msg = (f"Checkpoint {path} carries no fingerprint of the run that wrote it (an older "
               f"version?), so it cannot be matched to this run; delete it to start over.")
        raise StagateInputError(msg)
    differ = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if differ:
        shown = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}"
                          for k in differ[:4])
        msg = (f"Checkpoint {path} belongs to another run ({shown}); resuming it would return "
               f"that run's model. Delete the file or pass another --checkpoint path.")
        raise StagateInputError(msg)
