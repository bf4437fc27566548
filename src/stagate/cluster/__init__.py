"""Array-level clustering of embeddings: mclust (no R) and graph communities."""

from ._em import MODELS, MclustError
from ._graph_clustering import knn_graph_clusters
from ._mclust import MclustResult, fit_mclust, mclust, mclust_bic

__all__ = ["MODELS", "MclustError", "MclustResult", "fit_mclust", "knn_graph_clusters",
           "mclust", "mclust_bic"]
