"""Generic AnnData files: counts in X or layers['counts'], coordinates in obsm or obs."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
from anndata import AnnData

from .._logging import log
from .._validation import StagateInputError, finite_or_none

#: obs column pairs recognised as coordinates when obsm['spatial'] is absent
_COORD_COLUMNS = (("x", "y"), ("X", "Y"), ("x_centroid", "y_centroid"), ("center_x", "center_y"),
                  ("imagecol", "imagerow"), ("xcoord", "ycoord"))


def read_h5ad(path: str | Path, *, x_col: str | None = None, y_col: str | None = None,
              unit: str | None = None) -> AnnData:
    """Read a `.h5ad`, with coordinates taken from ``obs`` columns when ``obsm`` lacks them.

    Stereo-seq files exported by stereopy (``uns['bin_size']`` present) are recognised and
    their coordinates recorded in DNB units (0.5 um).
    """
    from ._common import INPUT_KEY, fail, record_input

    path = Path(path)
    if path.is_dir():
        fail(path, "is a folder, not an .h5ad file (use --format to read a platform folder).")
    if not h5py.is_hdf5(path):
        fail(path, "is not an HDF5/.h5ad file (AnnData format); convert it with anndata first.")
    try:
        adata = ad.read_h5ad(path)
    except Exception as err:  # anndata raises many types for malformed files
        msg = f"{path}: could not be read as AnnData: {type(err).__name__}: {err}"
        raise StagateInputError(msg) from None
    if x_col is not None or y_col is not None or "spatial" not in adata.obsm:
        pairs = [(x_col, y_col)] if x_col or y_col else _COORD_COLUMNS
        for xc, yc in pairs:
            if xc in adata.obs and yc in adata.obs:
                adata.obsm["spatial"] = adata.obs[[xc, yc]].to_numpy(dtype=np.float64)
                log.info("%s: coordinates from obs[%r] and obs[%r]", path.name, xc, yc)
                break
        else:
            if x_col or y_col:
                fail(path, f"obs has no columns {x_col!r} and {y_col!r} "
                     f"(has {list(adata.obs.columns)}).")
    if "bin_size" in adata.uns:  # stereopy's export
        return record_input(adata, fmt="stereoseq-h5ad", source=path, unit=unit or "DNB",
                            um_per_unit=0.5, bin_size=int(np.asarray(adata.uns["bin_size"])))
    # a unit the file already records (our own outputs, or set by the user) is kept, so that
    # sections in different units are told apart when several files are stacked
    known = adata.uns.get(INPUT_KEY, {})
    known = known if isinstance(known, dict) else {}
    return record_input(adata, fmt="h5ad", source=path,
                        unit=unit or str(known.get("unit") or "unknown"),
                        um_per_unit=finite_or_none(known.get("um_per_unit")))
