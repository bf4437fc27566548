"""Preprocessing: expression (`preprocess`) and the spatial neighbour network."""

from ._preprocess import preprocess
from ._prune import prune_network
from ._spatial_network import spatial_network

__all__ = ["preprocess", "prune_network", "spatial_network"]
