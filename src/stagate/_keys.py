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


#: default key of the joint graph of several sections (2-D within, plus between adjacent ones)
GRAPH_3D = "spatial_3d"
#: default ``obs`` column naming the section of each spot
SECTION = "section"
#: default ``obsm`` key of coordinates aligned across sections
ALIGNED = "spatial_aligned"


def graph_keys(adata, graph_key: str = GRAPH) -> tuple[str, str, dict]:
    """``(connectivities key, distances key, uns record)`` of the graph named `graph_key`.

    Read from the record that built the graph (``uns['{graph_key}_neighbors']``, squidpy's and
    :func:`stagate.pp.spatial_network`'s; or ``uns[graph_key]``, scanpy's ``neighbors_key``
    habit), so readers never rebuild an ``obsp`` name from a prefix. A graph written to
    ``obsp`` by hand without a record is still found under the squidpy names.
    """
    from ._validation import StagateInputError

    for name in (graph_uns_key(graph_key), graph_key):
        record = adata.uns.get(name)
        if isinstance(record, dict) and "connectivities_key" in record:
            conn = record["connectivities_key"]
            dist = record.get("distances_key", dist_key(graph_key))
            if conn in adata.obsp:
                return conn, dist, record
    if conn_key(graph_key) in adata.obsp:
        return conn_key(graph_key), dist_key(graph_key), {}
    msg = (
        f"No spatial graph {graph_key!r} in adata (no uns[{graph_uns_key(graph_key)!r}] record "
        f"and no obsp[{conn_key(graph_key)!r}]). Build it first with "
        f"stagate.pp.spatial_network(adata, key_added={graph_key!r}) "
        f"(or squidpy.gr.spatial_neighbors)."
    )
    raise StagateInputError(msg)


def graph_coordinates(adata, graph_key: str = GRAPH) -> str:
    """The ``obsm`` key of the coordinates the graph `graph_key` was built on."""
    record = graph_keys(adata, graph_key)[2]
    return record.get("params", {}).get("spatial_key") or SPATIAL
