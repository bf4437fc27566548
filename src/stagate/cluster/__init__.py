"""Array-level clustering of embeddings: mclust (no R) and graph communities."""

from ._consensus import consensus_vote, match_labels, pairwise_agreement
from ._em import MODELS, MclustError
from ._graph_clustering import knn_graph_clusters
from ._mclust import MclustResult, fit_mclust, mclust, mclust_bic
from ._refine import majority_vote

__all__ = ["MODELS", "MclustError", "MclustResult", "consensus_vote", "fit_mclust",
           "knn_graph_clusters", "majority_vote", "match_labels", "mclust", "mclust_bic",
           "pairwise_agreement"]
