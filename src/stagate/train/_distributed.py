"""Several processes (GPUs or machines) with torch.distributed: seeds split, gradients averaged.

Launch any stagate command under ``torchrun --nproc_per_node K`` (CUDA: NCCL, one GPU per
process; CPU: gloo). Every process builds the same epoch plan; each takes every K-th seed of
each batch, and DistributedDataParallel averages the gradients. Each process's loss is scaled
by K, so the averaged gradient is exactly the single-process gradient of the whole batch and
the loss trajectory matches a single process up to the order of floating-point sums.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from ..module import STAGATEModule
from ._batch import Batch


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun describes in the environment, if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return world()


class SeedLoss(nn.Module):
    """The seeds' sum of squared errors as a ``forward``, so DDP can hook its gradients."""

    def __init__(self, module: STAGATEModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch: Batch) -> torch.Tensor:
        enc = self.module.encode(batch.x, batch.graph, **batch.inputs)
        h3 = self.module.decode_hidden(enc, batch.graph)
        return self.module.sum_squared_error(batch.x_sq, enc.xw, h3, rows=batch.rows)


def all_reduce_sum(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())
