"""Pure-torch model: tensors in, tensors out; no AnnData here (scvi-tools' `module/`)."""

from ._autoencoder import EncoderOutput, STAGATEModule
from ._graph import NeighbourGraph
from ._layers import TiedGATLayer
from ._sparse import aggregate

__all__ = ["EncoderOutput", "NeighbourGraph", "STAGATEModule", "TiedGATLayer", "aggregate"]
