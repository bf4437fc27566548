"""Plotting: each function reads results by key, draws on `ax` and returns it."""

from ._plots import (
    attention,
    domains,
    domains_3d,
    genes,
    loss,
    match_colors,
    neighbors_histogram,
    paga,
    umap,
)

__all__ = ["attention", "domains", "domains_3d", "genes", "loss", "match_colors",
           "neighbors_histogram", "paga", "umap"]
