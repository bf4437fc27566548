"""Preprocessing: expression (`preprocess`), the spatial network, section alignment."""

from ._align import align_sections
from ._preprocess import preprocess
from ._prune import prune_network
from ._spatial_network import between_section_mask, spatial_network

__all__ = ["align_sections", "between_section_mask", "preprocess", "prune_network",
           "spatial_network"]
