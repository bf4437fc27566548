"""Plotting: each function reads results by key, draws on `ax` and returns it."""

from ._plots import attention, domains, genes, loss, neighbors_histogram, umap

__all__ = ["attention", "domains", "genes", "loss", "neighbors_histogram", "umap"]
