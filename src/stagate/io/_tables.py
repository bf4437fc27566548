"""Slide-seq and imaging platforms: a count matrix plus a table of coordinates."""

from __future__ import annotations

from pathlib import Path

from anndata import AnnData

from ._common import (
    attach_coordinates,
    check_count_matrix,
    coordinates_from_table,
    fail,
    read_count_matrix,
    read_table,
    record_input,
)

_BEAD_FILE_PATTERNS = ("bead_locations", "beadlocations", "bead_location")
_COORD_FILE_PATTERNS = ("coord", "location", "position", "centroid", "cell_metadata", "spatial")
_COUNT_FILE_PATTERNS = ("count", "expression", "cell_by_gene", "dge", "matrix", "digital")
_TABLE_ENDINGS = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz", ".h5ad", ".h5")


def read_coordinates_table(path: Path, *, x: str | None = None, y: str | None = None,
                           z: str | None = None):
    """Coordinates indexed by id, from a CSV/TSV whose first column is the barcode / cell id."""
    df = read_table(path)
    id_col = df.columns[0]
    cols = list(df.columns[1:])
    if x is None or y is None:
        lower = {c.lower(): c for c in cols}
        for xc, yc in (("x", "y"), ("xcoord", "ycoord"), ("x_centroid", "y_centroid"),
                       ("center_x", "center_y"), ("x_um", "y_um")):
            if xc in lower and yc in lower:
                x, y = lower[xc], lower[yc]
                break
        else:
            fail(path, f"cannot tell which columns are x and y (found {cols}); name them x "
                 f"and y, or pass the column names.")
    columns = [x, y] + ([z] if z else [])
    return coordinates_from_table(df, path, columns, id_col)


def read_slideseq(counts: str | Path, bead_locations: str | Path | None = None) -> AnnData:
    """Slide-seq / Slide-seqV2: a count matrix (mtx folder, .h5ad, .h5, CSV/TSV or a
    digital-expression table with genes as rows) and a bead-locations CSV (barcode, x, y, in
    micrometres). `counts` may be a folder holding both (the bead file's name contains
    ``bead_locations``)."""
    counts, bead_locations = _pair(Path(counts), bead_locations, _BEAD_FILE_PATTERNS,
                                   "bead-locations CSV (name containing 'bead_locations')")
    adata = read_count_matrix(counts)
    check_count_matrix(adata, counts)
    coords = read_coordinates_table(bead_locations)
    attach_coordinates(adata, coords, counts, bead_locations)
    return record_input(adata, fmt="slideseq", source=counts, unit="um", um_per_unit=1.0)


def read_imaging(counts: str | Path, coordinates: str | Path | None = None, *,
                 x: str | None = None, y: str | None = None, z: str | None = None,
                 um_per_unit: float = 1.0) -> AnnData:
    """Imaging platforms (STARmap, MERFISH, osmFISH, Xenium-like tables): a cell-by-gene
    table and a cell-coordinates table (cell id, x, y[, z]); `counts` may be a folder holding
    both. With `z`, ``obsm['spatial']`` is 3-D."""
    counts, coordinates = _pair(Path(counts), coordinates, _COORD_FILE_PATTERNS,
                                "cell-coordinates table (name containing 'coord', 'location', "
                                "'position' or 'centroid')")
    adata = read_count_matrix(counts)
    check_count_matrix(adata, counts)
    coords = read_coordinates_table(coordinates, x=x, y=y, z=z)
    attach_coordinates(adata, coords, counts, coordinates)
    return record_input(adata, fmt="imaging", source=counts, unit="um",
                        um_per_unit=float(um_per_unit))


def _pair(counts: Path, coords: str | Path | None, patterns: tuple, what: str) -> tuple:
    """Resolve (count matrix, coordinates file) from explicit paths or one folder."""
    if not counts.exists():
        fail(counts, "does not exist.")
    if coords is not None:
        coords = Path(coords)
        if not coords.exists():
            fail(coords, "does not exist.")
        return counts, coords
    if not counts.is_dir():
        fail(counts, f"needs a {what}: pass it too, or give a folder holding both files.")
    files = sorted(p for p in counts.iterdir()
                   if p.name.lower().endswith(_TABLE_ENDINGS) or _is_mtx_folder(p))
    coord_files = [p for p in files if any(s in p.name.lower() for s in patterns)]
    if len(coord_files) != 1:
        fail(counts, f"expected exactly one {what} in the folder, found "
             f"{[p.name for p in coord_files] or 'none'}.")
    rest = [p for p in files if p != coord_files[0]]
    matrix = [p for p in rest if any(s in p.name.lower() for s in _COUNT_FILE_PATTERNS)] or rest
    if _is_mtx_folder(counts):
        matrix = [counts]
    if len(matrix) != 1:
        fail(counts, f"expected exactly one count matrix in the folder, found "
             f"{[p.name for p in matrix] or 'none'}.")
    return matrix[0], coord_files[0]


def _is_mtx_folder(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("matrix.mtx.gz", "matrix.mtx"))


def has_bead_locations(path: Path) -> bool:
    return path.is_dir() and any(any(s in p.name.lower() for s in _BEAD_FILE_PATTERNS)
                                 for p in path.iterdir())
