"""10x Visium: a Space Ranger output folder, in the scverse layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from anndata import AnnData
from matplotlib.image import imread

from .._logging import log
from ._common import (
    check_count_matrix,
    coordinates_from_table,
    fail,
    read_count_matrix,
    read_table,
    record_input,
    require,
    unique_ids,
)

_POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres",
                     "pxl_col_in_fullres"]
#: Space Ranger's spot_diameter_fullres is the pixel span of a 65 um circle
_SPOT_DIAMETER_UM = 65.0


def read_visium(path: str | Path, *, count_file: str | None = None, in_tissue_only: bool = True,
                load_images: bool = True, library_id: str | None = None) -> AnnData:
    """Read a Space Ranger output folder.

    Reads ``filtered_feature_bc_matrix.h5`` (or the ``filtered_feature_bc_matrix/`` mtx
    folder) with scanpy's 10x readers, ``spatial/tissue_positions.csv`` (Space Ranger 2+,
    with header) or ``spatial/tissue_positions_list.csv`` (older, no header),
    ``spatial/scalefactors_json.json`` and the tissue images.

    Returns
    -------
    AnnData with raw counts in ``X``; ``obsm['spatial']`` (x, y) in full-resolution pixels;
    ``obs`` ``in_tissue``, ``array_row``, ``array_col``; ``uns['spatial'][library_id]`` with
    ``images`` (``hires``, ``lowres``), ``scalefactors`` and ``metadata`` (scverse layout);
    ``uns['stagate_input']`` with the unit (px) and micrometres per pixel.
    """
    path = Path(path)
    if not path.is_dir():
        fail(path, "a Visium input must be a Space Ranger output folder.")
    counts = _count_file(path, count_file)
    adata = read_count_matrix(counts)
    check_count_matrix(adata, counts)
    unique_ids(adata.obs_names, counts, "barcodes")

    spatial = path / "spatial"
    positions_file = spatial / "tissue_positions.csv"
    if not positions_file.exists():
        positions_file = spatial / "tissue_positions_list.csv"
    require(positions_file, "spot positions (spatial/tissue_positions.csv or "
                            "tissue_positions_list.csv)")
    has_header = positions_file.name == "tissue_positions.csv"
    positions = read_table(positions_file, header=0 if has_header else None)
    if not has_header:
        if positions.shape[1] != len(_POSITION_COLUMNS):
            fail(positions_file, f"expected {len(_POSITION_COLUMNS)} columns, found "
                 f"{positions.shape[1]}.")
        positions.columns = _POSITION_COLUMNS
    coords = coordinates_from_table(positions, positions_file,
                                    ["pxl_col_in_fullres", "pxl_row_in_fullres"], "barcode")
    positions.index = coords.index
    missing = adata.obs_names.difference(positions.index)
    if len(missing):
        fail(positions_file, f"{len(missing)} of {adata.n_obs} barcodes of {counts.name} are "
             f"not listed (e.g. {missing[:3].tolist()}); the matrix and the positions are from "
             f"different runs.")
    positions = positions.loc[adata.obs_names]
    for col in ("in_tissue", "array_row", "array_col"):
        adata.obs[col] = positions[col].to_numpy()
    adata.obsm["spatial"] = coords.loc[adata.obs_names].to_numpy(dtype=np.float64)
    if in_tissue_only:
        keep = adata.obs["in_tissue"].to_numpy() == 1
        if not keep.any():
            fail(positions_file, "no spot is marked in_tissue = 1.")
        if (~keep).any():
            log.info("keeping %d in-tissue spots of %d", keep.sum(), keep.size)
            adata = adata[keep].copy()

    scale_file = require(spatial / "scalefactors_json.json", "scale factors "
                                                            "(spatial/scalefactors_json.json)")
    try:
        scalefactors = json.loads(scale_file.read_text())
        diameter = float(scalefactors["spot_diameter_fullres"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        fail(scale_file, f"unreadable scale factors ({type(err).__name__}: {err}).")
    library_id = library_id or path.name
    images = tissue_images(spatial, path) if load_images else {}
    adata.uns["spatial"] = {library_id: {
        "images": images, "scalefactors": scalefactors,
        "metadata": {"source": str(path), "count_file": counts.name}}}
    return record_input(adata, fmt="visium", source=path, unit="px (full resolution)",
                        um_per_unit=_SPOT_DIAMETER_UM / diameter, library_id=library_id)


def tissue_images(spatial: Path, path: Path) -> dict:
    """The hires and lowres tissue images of a Space Ranger ``spatial/`` folder (those
    present and readable; a missing or damaged one is logged, plots then lack it)."""
    images = {}
    for res in ("hires", "lowres"):
        img = spatial / f"tissue_{res}_image.png"
        if img.exists():
            try:
                images[res] = imread(str(img))
            except (OSError, ValueError, SyntaxError) as err:  # damaged or not a PNG
                log.warning("%s: the %s image %s cannot be read (%s); plots will lack it",
                            path, res, img.name, err)
        else:
            log.warning("%s: no %s image (%s); plots will lack it", path, res, img.name)
    return images


def _count_file(path: Path, count_file: str | None) -> Path:
    if count_file is not None:
        return require(path / count_file, "count matrix")
    for candidate in ("filtered_feature_bc_matrix.h5", "filtered_feature_bc_matrix"):
        if (path / candidate).exists():
            return path / candidate
    fail(path, "missing the count matrix: expected filtered_feature_bc_matrix.h5 or the "
               "filtered_feature_bc_matrix/ folder (Space Ranger output).")
    raise AssertionError  # unreachable


def is_visium_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "spatial").is_dir() or any(
        (path / c).exists() for c in ("filtered_feature_bc_matrix.h5",
                                      "filtered_feature_bc_matrix")))

