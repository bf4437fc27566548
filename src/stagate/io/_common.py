"""Shared pieces of the readers: tables, count matrices, coordinates, units, clear errors."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from .._validation import StagateInputError, check_counts

#: key of ``uns`` describing where the data came from and the coordinate unit
INPUT_KEY = "stagate_input"


def fail(path: Path | str, problem: str) -> None:
    """Raise the one-line error every reader uses: the file, then the problem and the fix."""
    msg = f"{path}: {problem}"
    raise StagateInputError(msg)


def require(path: Path, what: str) -> Path:
    if not path.exists():
        fail(path.parent, f"missing {what} ({path.name}).")
    return path


def read_table(path: Path, **kwds) -> pd.DataFrame:
    """A CSV/TSV table (gzip allowed), with clear errors for empty or truncated files."""
    sep = "\t" if any(s in path.name.lower() for s in (".tsv", ".txt", ".gem")) else ","
    try:
        df = pd.read_csv(path, sep=sep, **kwds)
    except (EOFError, zlib.error, gzip.BadGzipFile):
        fail(path, "the gzip file is truncated or corrupt; download or copy it again.")
    except pd.errors.EmptyDataError:
        fail(path, "the file is empty.")
    except UnicodeDecodeError:
        fail(path, "not a text table (is it compressed with something other than gzip?).")
    except pd.errors.ParserError as err:  # rows with more fields than the header, etc.
        fail(path, f"malformed table ({str(err).strip()}); is the file damaged or cut short?")
    if df.shape[0] == 0:
        fail(path, "the table has a header but no rows.")
    return df


def read_count_matrix(path: Path) -> AnnData:
    """Counts, spots x genes, from .h5ad, 10x .h5, a 10x mtx folder or a CSV/TSV table.

    A table has one row per spot/cell (first column: its id) and one column per gene, unless
    its first column is named ``GENE`` (Drop-seq/Slide-seq digital expression: genes as rows).
    """
    name = path.name.lower()
    try:
        if path.is_dir():
            adata = sc.read_10x_mtx(path)
        elif name.endswith(".h5ad"):
            from ._h5ad import read_h5ad

            adata = read_h5ad(path)
        elif name.endswith(".h5"):
            adata = sc.read_10x_h5(path)
        else:
            df = read_table(path, index_col=0)
            if str(df.index.name).upper() == "GENE":
                df = df.T
            adata = counts_from_table(df, path)
    except StagateInputError:
        raise
    except (OSError, KeyError, ValueError) as err:
        fail(path, f"could not read a count matrix: {type(err).__name__}: {err}")
    return adata


def counts_from_table(df: pd.DataFrame, path: Path, what: str = "spot/cell ids") -> AnnData:
    """A cells x genes table (index: the ids, columns: genes) as sparse counts; refuses
    duplicated ids, rows with missing values (a truncated file) and non-numeric counts."""
    unique_ids(pd.Index(df.index.astype(str)), path, what)
    missing = df.isna().any(axis=1)
    if missing.any():
        fail(path, f"{int(missing.sum())} row(s) have missing values (e.g. "
             f"{str(df.index[missing.to_numpy()][0])!r}): is the file truncated? "
             f"Fill empty counts with 0 or remove those rows.")
    return AnnData(sp.csr_matrix(_numeric_counts(df, path)),
                   obs=pd.DataFrame(index=df.index.astype(str)),
                   var=pd.DataFrame(index=df.columns.astype(str)))


def _numeric_counts(df: pd.DataFrame, path: Path) -> np.ndarray:
    values = df.apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & df.notna()
    if bad.to_numpy().any():
        col = values.columns[bad.any(axis=0)][0]
        fail(path, f"non-numeric count values (e.g. in column {col!r}).")
    return values.fillna(0).to_numpy(dtype=np.float64)


def check_count_matrix(adata: AnnData, path: Path) -> None:
    """Empty, negative, non-integer or non-finite counts: one clear error naming the file."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        fail(path, f"the count matrix is empty ({adata.n_obs} spots x {adata.n_vars} genes).")
    try:
        check_counts(adata.X, what="the count matrix")
    except StagateInputError as err:
        fail(path, str(err))


def unique_ids(ids: pd.Index, path: Path, what: str) -> None:
    if not ids.is_unique:
        dup = ids[ids.duplicated()].unique()[:3].tolist()
        fail(path, f"duplicated {what} {dup}; each {what[:-1]} must appear once.")


def coordinates_from_table(
    df: pd.DataFrame, path: Path, columns: list[str], id_column: str | None = None
) -> pd.DataFrame:
    """Numeric, finite coordinates indexed by barcode / cell id."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        fail(path, f"missing column(s) {missing}; found {list(df.columns)}.")
    ids = df[id_column] if id_column is not None else df.index
    ids = pd.Index(np.asarray(ids).astype(str))
    unique_ids(ids, path, "barcodes")
    out = df[columns].apply(pd.to_numeric, errors="coerce")
    out.index = ids
    non_numeric = out.isna() & df[columns].set_axis(ids).notna()
    if non_numeric.to_numpy().any():
        row = out.index[non_numeric.any(axis=1)][0]
        fail(path, f"non-numeric coordinates (e.g. for {row!r}).")
    if not np.isfinite(out.to_numpy()).all():
        row = out.index[~np.isfinite(out.to_numpy()).all(axis=1)][0]
        fail(path, f"missing (NaN) or infinite coordinates (e.g. for {row!r}).")
    return out


def attach_coordinates(adata: AnnData, coords: pd.DataFrame, matrix_path: Path,
                       coords_path: Path) -> AnnData:
    """Put `coords` (indexed by id) into ``obsm['spatial']`` in the matrix's spot order."""
    unique_ids(adata.obs_names, matrix_path, "barcodes")
    missing = adata.obs_names.difference(coords.index)
    if len(missing):
        fail(coords_path, f"{len(missing)} of {adata.n_obs} barcodes of {matrix_path.name} have "
             f"no coordinates here (e.g. {missing[:3].tolist()}); the two files do not match.")
    adata.obsm["spatial"] = coords.loc[adata.obs_names].to_numpy(dtype=np.float64)
    return adata


def record_input(adata: AnnData, *, fmt: str, source: Path, unit: str,
                 um_per_unit: float | None, **extra) -> AnnData:
    """Note the format, the source and the coordinate unit in ``uns['stagate_input']``."""
    adata.uns[INPUT_KEY] = {"format": fmt, "source": str(source), "unit": unit,
                            "um_per_unit": float("nan") if um_per_unit is None else um_per_unit,
                            **extra}
    return adata
