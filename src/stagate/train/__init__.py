"""Training: the loop (Adam, clipping, progress, checkpoints) and the batches it consumes."""

from ._batch import Batch
from ._loop import train_loop

__all__ = ["Batch", "train_loop"]
