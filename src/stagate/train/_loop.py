"""The optimisation loop: Adam, gradient clipping, tqdm, loss history, checkpoint/resume."""

from __future__ import annotations

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
    optimiser = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    history: list[float] = []
    start = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
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
    try:
        device = module.W1.device
        for epoch in bar:
            if converged(history, tol, window):  # checked first: a resumed run stops alike
                log.info("loss fell by less than %.2g%% over the last %d epochs: stopped after "
                         "epoch %d of at most %d", 100 * tol, window, len(history), n_epochs)
                break
            if hasattr(batches, "epoch"):  # minibatch plans shuffle by epoch: resume exactly
                batches.epoch = epoch
            if lr_schedule != "constant":
                for group in optimiser.param_groups:
                    group["lr"] = learning_rate(epoch, n_epochs, lr, lr_schedule)
            total = 0.0
            optimiser.zero_grad(set_to_none=True)
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
            if not math.isfinite(total):
                msg = (f"Training diverged: the loss became {total} at epoch {epoch + 1}. Try a "
                       f"lower learning rate (--lr {lr / 10:g}) and check the input's scale: "
                       f"log-normalised expression is expected (raw counts go through "
                       f"stagate.pp.preprocess).")
                raise StagateInputError(msg)
            history.append(total)
            if epoch % 10 == 0 or epoch == n_epochs - 1:
                bar.set_postfix(loss=f"{total:.4f}")
            if ckpt is not None and rank == 0 and (epoch + 1) % checkpoint_every == 0:
                _save(ckpt, module, optimiser, history, fingerprint)
    except KeyboardInterrupt:
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
