"""Readers for what the instruments write: Visium, Visium HD, Xenium, MERSCOPE, CosMx,
Slide-seq, Stereo-seq, imaging tables, h5ad.

:func:`read` detects the format from what the path is; every reader returns raw counts in
``X``, coordinates in ``obsm['spatial']`` and ``uns['stagate_input']`` (format, source,
coordinate unit, micrometres per unit), and fails with one line naming the file and problem.
"""

from __future__ import annotations

from pathlib import Path

from anndata import AnnData

from ._common import INPUT_KEY, fail
from ._h5ad import read_h5ad
from ._platforms import (
    VISIUM_HD_BINS,
    is_cosmx_folder,
    is_merscope_folder,
    is_visium_hd_folder,
    is_xenium_folder,
    read_cosmx,
    read_merscope,
    read_visium_hd,
    read_xenium,
)
from ._sections import concat_sections
from ._spatialdata import is_spatialdata_store, read_spatialdata, write_spatialdata_results
from ._stereoseq import is_gem_file, read_stereoseq_gem
from ._tables import has_bead_locations, read_imaging, read_slideseq
from ._visium import is_visium_folder, read_visium

FORMATS = ("auto", "h5ad", "spatialdata", "visium", "visium_hd", "xenium", "merscope", "cosmx",
           "slideseq", "stereoseq", "imaging")
#: Stereo-seq GEM bins (DNBs) and Visium HD bins (um) when --bin-size is not given
DEFAULT_BIN = {"stereoseq": 50, "visium_hd": 8}


def detect_format(path: str | Path) -> str:
    """The format of `path`, from what it is (file or folder) and what it holds."""
    path = Path(path)
    if not path.exists():
        fail(path, "does not exist.")
    if is_spatialdata_store(path):
        return "spatialdata"
    if path.is_dir():
        if is_visium_hd_folder(path):
            return "visium_hd"
        if is_xenium_folder(path):
            return "xenium"
        if is_merscope_folder(path):
            return "merscope"
        if is_cosmx_folder(path):
            return "cosmx"
        if is_visium_folder(path):
            return "visium"
        if has_bead_locations(path):
            return "slideseq"
        return "imaging"
    name = path.name.lower()
    if name.endswith(".h5ad"):
        return "h5ad"
    if is_gem_file(path):
        return "stereoseq"
    fail(path, "cannot tell the format from the name; pass --format "
               f"({', '.join(FORMATS[1:])}).")
    raise AssertionError  # unreachable


def read(path: str | Path, format: str = "auto", *, coordinates: str | Path | None = None,
         bin_size: int | None = None, x_col: str | None = None, y_col: str | None = None,
         table: str | None = None) -> AnnData:
    """Read spatial data in any supported format (``format="auto"`` detects it).

    Parameters
    ----------
    path
        A file (.h5ad, GEM, count table) or a folder (Space Ranger output for Visium or
        Visium HD, a Xenium bundle, a MERSCOPE or CosMx export, or a folder holding a count
        matrix and a coordinates table).
    format
        One of ``auto``, ``h5ad``, ``visium``, ``visium_hd``, ``xenium``, ``merscope``,
        ``cosmx``, ``slideseq``, ``stereoseq``, ``imaging``.
    coordinates
        Slide-seq / imaging: the coordinates table, when `path` is the count matrix itself.
    bin_size
        Stereo-seq GEM: bin size in DNBs (default 50 = bin50, as in the STAGATE Stereo-seq
        analysis). Visium HD: 2, 8 (default) or 16 um.
    x_col, y_col
        Coordinate columns (h5ad ``obs`` or the coordinates table), when not ``x``/``y``.
    table
        SpatialData store: the table to read (when it holds several).

    Returns
    -------
    AnnData with raw counts in ``X``, ``obsm['spatial']`` and ``uns['stagate_input']``.
    """
    if format not in FORMATS:
        msg = f"format == {format!r}, must be one of {FORMATS}."
        raise ValueError(msg)
    fmt = detect_format(path) if format == "auto" else format
    bin_size = bin_size or DEFAULT_BIN.get(fmt)
    if fmt == "visium_hd":
        if bin_size not in VISIUM_HD_BINS:
            fail(path, f"--bin-size {bin_size} is not a Visium HD bin size; use 2, 8 or 16 "
                       f"(um).")
        return read_visium_hd(path, bin_size=bin_size)
    if fmt == "spatialdata":
        return read_spatialdata(path, table)
    if fmt == "xenium":
        return read_xenium(path)
    if fmt == "merscope":
        return read_merscope(path)
    if fmt == "cosmx":
        return read_cosmx(path)
    if fmt == "h5ad":
        return read_h5ad(path, x_col=x_col, y_col=y_col)
    if fmt == "visium":
        return read_visium(path)
    if fmt == "stereoseq":
        return read_stereoseq_gem(path, bin_size=bin_size)
    if fmt == "slideseq":
        return read_slideseq(path, coordinates)
    return read_imaging(path, coordinates, x=x_col, y=y_col)


__all__ = ["FORMATS", "INPUT_KEY", "concat_sections", "detect_format", "read", "read_cosmx",
           "read_h5ad", "read_imaging", "read_merscope", "read_slideseq", "read_spatialdata",
           "read_stereoseq_gem", "read_visium", "read_visium_hd", "read_xenium",
           "write_spatialdata_results"]
