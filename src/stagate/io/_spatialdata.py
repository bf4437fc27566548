"""SpatialData stores (``.zarr``): read a table, write the results as a table on the same region.

Needs the optional extra (``pip install 'stagate[spatialdata]'``); everything else in stagate
works without it. The input store is never modified: the results go to a new store in the
output folder holding the annotated region element and a table of the results, which
napari-spatialdata and squidpy open like any SpatialData object.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _keys
from .._logging import log
from ._common import INPUT_KEY, fail, record_input

INSTALL = "pip install 'stagate[spatialdata]'"
#: name of the results table in the written store
RESULT_TABLE = "stagate"


def _spatialdata(path: Path):
    try:
        import spatialdata
    except ImportError:
        fail(path, f"reading a SpatialData store needs the optional extra: {INSTALL}")
    return spatialdata


def is_spatialdata_store(path: Path) -> bool:
    return path.name.lower().rstrip("/").endswith(".zarr")


def read_spatialdata(path: str | Path, table: str | None = None) -> AnnData:
    """Read one table of a SpatialData store, with the centroids of the region it annotates.

    Parameters
    ----------
    path
        A SpatialData ``.zarr`` store.
    table
        Name of the table (``--table``); may be omitted when the store holds one.

    Returns
    -------
    The table (counts in ``X``) with ``obsm['spatial']`` (kept when present, otherwise the
    centroids of the annotated shapes, labels or points in the element's intrinsic
    coordinates), and ``uns['stagate_input']`` naming the table, region, region key and
    instance key, so the results can be written back onto the same region.
    """
    path = Path(path)
    sd = _spatialdata(path)
    try:
        sdata = sd.read_zarr(path)
    except Exception as err:  # noqa: BLE001 - zarr and ome-zarr raise many kinds
        fail(path, f"not a readable SpatialData store ({type(err).__name__}: {err}).")
    names = list(sdata.tables.keys())
    if not names:
        fail(path, "the store holds no table (no expression to analyse).")
    if table is None:
        if len(names) > 1:
            fail(path, f"the store holds {len(names)} tables ({names}); pick one with --table.")
        table = names[0]
    if table not in names:
        fail(path, f"no table {table!r}; the store has {names}.")
    adata = sdata.tables[table].copy()
    attrs = dict(adata.uns.get("spatialdata_attrs", {}))
    region = attrs.get("region")
    if isinstance(region, list | tuple | np.ndarray):
        region = list(region)
        if len(region) != 1:
            fail(path, f"table {table!r} annotates several regions ({region}); write one "
                       f"table per region (sdata.tables) and pass it with --table.")
        region = region[0]
    instance_key = attrs.get("instance_key")
    if "spatial" not in adata.obsm:
        if region is None or instance_key is None or region not in sdata:
            fail(path, f"table {table!r} has no obsm['spatial'] and names no region element "
                       f"to take positions from (spatialdata_attrs: {attrs}).")
        centroids = sd.get_centroids(sdata[region])
        centroids = centroids.compute() if hasattr(centroids, "compute") else centroids
        ids = adata.obs[instance_key].to_numpy()
        missing = pd.Index(ids).difference(centroids.index)
        if len(missing):
            fail(path, f"{len(missing)} instances of table {table!r} are not in region "
                       f"{region!r} (e.g. {missing[:3].tolist()}).")
        adata.obsm["spatial"] = centroids.loc[ids, ["x", "y"]].to_numpy(dtype=np.float64)
    adata.uns.pop("spatialdata_attrs", None)
    log.info("SpatialData: table %r (%d x %d) annotating %r", table, adata.n_obs, adata.n_vars,
             region)
    return record_input(adata, fmt="spatialdata", source=path, unit="element coordinates",
                        um_per_unit=None, table=table, region=region or "",
                        region_key=attrs.get("region_key") or "",
                        instance_key=instance_key or "")


def write_spatialdata_results(adata: AnnData, out: Path) -> Path:
    """Write ``out`` (a new ``.zarr``): the input's annotated region element and a table of
    the run's results (domains, support, embedding, UMAP) annotating it."""
    source = adata.uns[INPUT_KEY]
    sd = _spatialdata(Path(source["source"]))
    from spatialdata.models import TableModel

    region, region_key = source.get("region"), source.get("region_key")
    instance_key = source.get("instance_key")
    obs = pd.DataFrame(index=adata.obs_names)
    for col in (_keys.DOMAIN, f"{_keys.DOMAIN}_support", f"{_keys.DOMAIN}_refined"):
        if col in adata.obs:
            obs[col] = adata.obs[col].to_numpy()
    elements = {}
    if region and instance_key and region_key:
        original = sd.read_zarr(source["source"])
        obs[instance_key] = adata.obs[instance_key].to_numpy()
        obs[region_key] = pd.Categorical([region] * adata.n_obs)
        elements[region] = original[region]
    table = AnnData(obs=obs)
    for key in (_keys.EMBEDDING, f"{_keys.EMBEDDING}_umap", "spatial"):
        if key in adata.obsm:
            table.obsm[key] = np.asarray(adata.obsm[key])
    if elements:
        table = TableModel.parse(table, region=region, region_key=region_key,
                                 instance_key=instance_key)
        shapes = {k: v for k, v in elements.items() if k in original.shapes}
        labels = {k: v for k, v in elements.items() if k in original.labels}
        points = {k: v for k, v in elements.items() if k in original.points}
        result = sd.SpatialData(shapes=shapes, labels=labels, points=points,
                                tables={RESULT_TABLE: table})
    else:
        result = sd.SpatialData(tables={RESULT_TABLE: TableModel.parse(table)})
    result.write(out)
    return out
