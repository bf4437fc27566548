"""Today's instruments: 10x Visium HD and Xenium, Vizgen MERSCOPE, NanoString CosMx.

Each reader takes the folder the instrument's software wrote, as published by the vendor,
and returns raw counts in ``X`` (control probes and blank codewords removed: they measure
background, not genes), ``obsm['spatial']`` and the coordinate unit in
``uns['stagate_input']``. Parquet tables are read with pandas (pyarrow), 10x matrices with
scanpy's readers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .._logging import log
from ._common import (
    check_count_matrix,
    coordinates_from_table,
    counts_from_table,
    fail,
    read_count_matrix,
    read_table,
    record_input,
    require,
    unique_ids,
)
from ._visium import tissue_images

#: names of features that are not genes (10x Xenium, Vizgen, NanoString conventions)
CONTROL_PATTERN = re.compile(
    r"^(NegControl|Negative|NegPrb|BLANK|Blank|UnassignedCodeword|DeprecatedCodeword|"
    r"Intergenic|antisense|SystemControl|FalseCode)", re.IGNORECASE)
#: Visium HD bin sizes Space Ranger writes, in micrometres
VISIUM_HD_BINS = (2, 8, 16)
#: CosMx SMI camera pixel size in micrometres (global coordinates are in these pixels)
COSMX_UM_PER_PX = 0.12028


def drop_controls(adata: AnnData, source: Path) -> AnnData:
    """Remove control probes and blank codewords, logging how many; refuse a matrix of
    controls only."""
    controls = np.array([bool(CONTROL_PATTERN.match(g)) for g in adata.var_names])
    if controls.all():
        fail(source, "every feature is a control probe or blank codeword; no gene to analyse.")
    if controls.any():
        log.info("%s: %d control probes / blank codewords left out (e.g. %s)", source,
                 controls.sum(), adata.var_names[controls][:3].tolist())
        adata = adata[:, ~controls].copy()
        adata.uns.setdefault("stagate_controls_removed", int(controls.sum()))
    return adata


def read_parquet_or_csv(folder: Path, stem: str, what: str) -> tuple[pd.DataFrame, Path]:
    """``stem.parquet``, else ``stem.csv.gz`` / ``stem.csv`` in `folder`."""
    for name in (f"{stem}.parquet", f"{stem}.csv.gz", f"{stem}.csv"):
        path = folder / name
        if path.exists():
            if name.endswith(".parquet"):
                try:
                    return pd.read_parquet(path), path
                except Exception as err:  # noqa: BLE001 - pyarrow raises many kinds
                    fail(path, f"unreadable parquet file ({type(err).__name__}); is it damaged "
                               f"or cut short?")
            return read_table(path), path
    fail(folder, f"missing {what} ({stem}.parquet or {stem}.csv.gz).")
    raise AssertionError  # unreachable


def _match(adata: AnnData, table: pd.DataFrame, id_col: str, table_path: Path,
           matrix_path: Path) -> pd.DataFrame:
    if id_col not in table:
        fail(table_path, f"no {id_col!r} column (has {list(table.columns)[:8]}).")
    table = table.set_index(table[id_col].astype(str))
    unique_ids(table.index, table_path, "cell ids")
    missing = adata.obs_names.difference(table.index)
    if len(missing):
        fail(table_path, f"{len(missing)} of {adata.n_obs} cells of {matrix_path.name} are not "
             f"listed here (e.g. {missing[:3].tolist()}); the two files are from different "
             f"runs.")
    return table.loc[adata.obs_names]


def _xy(table: pd.DataFrame, cols: tuple[str, str], path: Path) -> np.ndarray:
    """The coordinate columns of a table already aligned to the cells, checked (present,
    numeric, finite) by the readers' shared coordinates_from_table."""
    return coordinates_from_table(table, path, list(cols)).to_numpy(dtype=np.float64)


# -- 10x Visium HD ----------------------------------------------------------------------------
def visium_hd_bin_folder(path: Path, bin_size: int) -> Path:
    """The ``square_XXXum`` folder of `bin_size` under a Space Ranger ``outs`` folder (or
    `path` itself when it is one)."""
    if re.fullmatch(r"square_\d{3}um", path.name):
        return path
    binned = path / "binned_outputs" if (path / "binned_outputs").is_dir() else path
    folder = binned / f"square_{bin_size:03d}um"
    if not folder.is_dir():
        there = sorted(p.name for p in binned.glob("square_*um"))
        fail(path, f"no {bin_size} um bins ({folder.name}); this output has "
                   f"{there or 'no square_XXXum folder'}. Pass --bin-size "
                   f"{' or '.join(t[7:10].lstrip('0') for t in there) or '2, 8 or 16'}.")
    return folder


def is_visium_hd_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "binned_outputs").is_dir()
                              or bool(re.fullmatch(r"square_\d{3}um", path.name)))


def read_visium_hd(path: str | Path, *, bin_size: int = 8) -> AnnData:
    """Read a 10x Visium HD Space Ranger output at one bin size.

    Parameters
    ----------
    path
        The ``outs`` folder (holding ``binned_outputs/square_002um`` ...) or one
        ``square_XXXum`` folder.
    bin_size
        2, 8 (default) or 16 micrometres.

    Returns
    -------
    AnnData of the in-tissue bins: raw counts in ``X``; ``obsm['spatial']`` in micrometres
    (full-resolution pixels x ``microns_per_pixel`` of the scale factors); ``obs``
    ``array_row``, ``array_col``; ``uns['stagate_input']`` (unit um, bin size).
    """
    path = Path(path)
    folder = visium_hd_bin_folder(path, bin_size)
    counts = folder / "filtered_feature_bc_matrix.h5"
    if not counts.exists():
        counts = require(folder / "filtered_feature_bc_matrix", "the count matrix "
                                                                "(filtered_feature_bc_matrix.h5)")
    adata = read_count_matrix(counts)
    check_count_matrix(adata, counts)
    unique_ids(adata.obs_names, counts, "barcodes")
    spatial = folder / "spatial"
    positions, positions_path = read_parquet_or_csv(spatial, "tissue_positions",
                                                    "bin positions (spatial/tissue_positions)")
    positions = _match(adata, positions, "barcode", positions_path, counts)
    scale_file = require(spatial / "scalefactors_json.json", "scale factors")
    try:
        scalefactors = json.loads(scale_file.read_text())
        um_per_px = float(scalefactors["microns_per_pixel"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        fail(scale_file, f"no usable microns_per_pixel ({type(err).__name__}: {err}).")
    xy_px = _xy(positions, ("pxl_col_in_fullres", "pxl_row_in_fullres"), positions_path)
    if "in_tissue" in positions:
        keep = positions["in_tissue"].to_numpy() == 1
        if not keep.any():
            fail(positions_path, "no bin is marked in_tissue = 1.")
    else:
        keep = np.ones(adata.n_obs, dtype=bool)
    for col in ("array_row", "array_col"):
        if col in positions:
            adata.obs[col] = positions[col].to_numpy()
    adata.obsm["spatial"] = xy_px * um_per_px
    if not keep.all():
        adata = adata[keep].copy()
    size = int(re.search(r"(\d+)um", folder.name).group(1))
    # images as for Visium; their scale factors map micrometres (our coordinates) to image
    # pixels, so plots draw the domains over the H&E in place
    library_id = path.name if folder is not path else folder.parent.parent.name or folder.name
    scaled = {k: (v / um_per_px if k.startswith("tissue_") and k.endswith("_scalef") else v)
              for k, v in scalefactors.items()}
    adata.uns["spatial"] = {library_id: {
        "images": tissue_images(spatial, folder), "scalefactors": scaled,
        "metadata": {"source": str(folder), "coordinates": "um",
                     "scalefactors_fullres_px": scalefactors}}}
    log.info("Visium HD: %d bins of %d um", adata.n_obs, size)
    return record_input(adata, fmt="visium_hd", source=folder, unit="um", um_per_unit=1.0,
                        bin_size_um=size, microns_per_pixel=um_per_px)


# -- 10x Xenium -------------------------------------------------------------------------------
def is_xenium_folder(path: Path) -> bool:
    return path.is_dir() and any((path / n).exists() for n in (
        "cell_feature_matrix.h5", "cell_feature_matrix")) and any(
        (path / n).exists() for n in ("cells.parquet", "cells.csv.gz", "cells.csv",
                                      "experiment.xenium"))


def read_xenium(path: str | Path) -> AnnData:
    """Read a 10x Xenium output bundle.

    ``cell_feature_matrix.h5`` (or the ``cell_feature_matrix/`` mtx folder) and
    ``cells.parquet`` (or ``cells.csv.gz``) with the cell centroids ``x_centroid``,
    ``y_centroid`` in micrometres. Negative-control probes and codewords, unassigned and
    blank codewords are left out of the genes.
    """
    path = Path(path)
    if not path.is_dir():
        fail(path, "a Xenium input must be the output bundle folder.")
    counts = path / "cell_feature_matrix.h5"
    if not counts.exists():
        counts = require(path / "cell_feature_matrix", "the cell-feature matrix "
                                                       "(cell_feature_matrix.h5)")
    adata = read_count_matrix(counts)
    check_count_matrix(adata, counts)
    adata = drop_controls(adata, counts)
    cells, cells_path = read_parquet_or_csv(path, "cells", "the cells table (cells.parquet)")
    cells = _match(adata, cells, "cell_id", cells_path, counts)
    adata.obsm["spatial"] = _xy(cells, ("x_centroid", "y_centroid"), cells_path)
    for col in ("transcript_counts", "cell_area", "nucleus_area"):
        if col in cells:
            adata.obs[col] = cells[col].to_numpy()
    return record_input(adata, fmt="xenium", source=path, unit="um", um_per_unit=1.0)


# -- Vizgen MERSCOPE --------------------------------------------------------------------------
def is_merscope_folder(path: Path) -> bool:
    return path.is_dir() and bool(list(path.glob("*cell_by_gene*.csv*"))) and bool(
        list(path.glob("*cell_metadata*.csv*")))


def _one(path: Path, pattern: str, what: str) -> Path:
    found = sorted(path.glob(pattern))
    if not found:
        fail(path, f"missing {what} ({pattern}).")
    if len(found) > 1:
        fail(path, f"several {what} files ({[f.name for f in found]}); pass the folder of "
                   f"one run.")
    return found[0]


def read_merscope(path: str | Path) -> AnnData:
    """Read a Vizgen MERSCOPE output folder: ``cell_by_gene.csv`` (cells x genes, first
    column the cell id) and ``cell_metadata.csv`` (``center_x``, ``center_y`` in
    micrometres). Blank barcodes (``Blank-*``) are left out of the genes."""
    path = Path(path)
    counts_path = _one(path, "*cell_by_gene*.csv*", "the cell-by-gene table")
    meta_path = _one(path, "*cell_metadata*.csv*", "the cell metadata table")
    adata = counts_from_table(read_table(counts_path, index_col=0), counts_path, "cell ids")
    check_count_matrix(adata, counts_path)
    adata = drop_controls(adata, counts_path)
    meta = read_table(meta_path)
    id_col = meta.columns[0] if "EntityID" not in meta else "EntityID"
    meta = _match(adata, meta, id_col, meta_path, counts_path)
    adata.obsm["spatial"] = _xy(meta, ("center_x", "center_y"), meta_path)
    for col in ("fov", "volume"):
        if col in meta:
            adata.obs[col] = meta[col].to_numpy()
    return record_input(adata, fmt="merscope", source=path, unit="um", um_per_unit=1.0)


# -- NanoString CosMx -------------------------------------------------------------------------
def is_cosmx_folder(path: Path) -> bool:
    return path.is_dir() and bool(list(path.glob("*exprMat_file.csv*"))) and bool(
        list(path.glob("*metadata_file.csv*")))


def read_cosmx(path: str | Path) -> AnnData:
    """Read a NanoString CosMx flat-file export: ``*exprMat_file.csv`` (``fov``, ``cell_ID``,
    one column per probe) and ``*metadata_file.csv`` (``CenterX_global_px``,
    ``CenterY_global_px``). Cells are named ``{fov}_{cell_ID}``; cell_ID 0 (transcripts
    outside any cell) and negative / system-control probes are left out. Coordinates stay in
    global pixels (unit recorded, 0.12028 um per pixel)."""
    path = Path(path)
    expr_path = _one(path, "*exprMat_file.csv*", "the expression matrix")
    meta_path = _one(path, "*metadata_file.csv*", "the cell metadata")
    expr = read_table(expr_path)
    for col in ("fov", "cell_ID"):
        if col not in expr:
            fail(expr_path, f"no {col!r} column (has {list(expr.columns)[:6]}).")
    expr = expr[expr["cell_ID"] != 0]
    expr.index = expr["fov"].astype(str) + "_" + expr["cell_ID"].astype(str)
    adata = counts_from_table(expr.drop(columns=["fov", "cell_ID"]), expr_path,
                              "cells (fov, cell_ID)")
    check_count_matrix(adata, expr_path)
    adata = drop_controls(adata, expr_path)
    meta = read_table(meta_path)
    for col in ("fov", "cell_ID"):
        if col not in meta:
            fail(meta_path, f"no {col!r} column (has {list(meta.columns)[:6]}).")
    meta["cell_id"] = meta["fov"].astype(str) + "_" + meta["cell_ID"].astype(str)
    meta = _match(adata, meta, "cell_id", meta_path, expr_path)
    adata.obsm["spatial"] = _xy(meta, ("CenterX_global_px", "CenterY_global_px"), meta_path)
    adata.obs["fov"] = meta["fov"].to_numpy()
    return record_input(adata, fmt="cosmx", source=path, unit="px (CosMx global)",
                        um_per_unit=COSMX_UM_PER_PX)
