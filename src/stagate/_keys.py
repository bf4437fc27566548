"""Every AnnData key name stagate reads or writes, built in one place (squidpy's `Key` habit)."""

from __future__ import annotations

#: default coordinates key, ``adata.obsm["spatial"]``
SPATIAL = "spatial"
#: default prefix of the spatial graph keys (squidpy's)
GRAPH = "spatial"
#: default embedding key, as in the original STAGATE
EMBEDDING = "STAGATE"
#: default domain label column
DOMAIN = "domain"
#: raw counts are kept here by :func:`stagate.pp.preprocess`
COUNTS_LAYER = "counts"


def conn_key(key_added: str = GRAPH) -> str:
    """``obsp`` key of the connectivities (squidpy: ``spatial_connectivities``)."""
    return f"{key_added}_connectivities"


def dist_key(key_added: str = GRAPH) -> str:
    """``obsp`` key of the distances (squidpy: ``spatial_distances``)."""
    return f"{key_added}_distances"


def graph_uns_key(key_added: str = GRAPH) -> str:
    """``uns`` key of the graph parameters (squidpy: ``spatial_neighbors``)."""
    return f"{key_added}_neighbors"


def recon_key(key_added: str = EMBEDDING) -> str:
    """``layers`` key of the denoised reconstruction (original: ``STAGATE_ReX``)."""
    return f"{key_added}_ReX"


def attention_key(key_added: str = EMBEDDING) -> str:
    """``obsp`` key of the learnt attention matrix."""
    return f"{key_added}_attention"
