"""Array-level clustering of embeddings: graph communities (and mclust, see `mclust`)."""

from ._graph_clustering import knn_graph_clusters

__all__ = ["knn_graph_clusters"]
