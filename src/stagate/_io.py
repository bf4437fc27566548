"""Reading the input. Today: .h5ad (raw counts, coordinates in obsm['spatial'])."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
from anndata import AnnData

from ._validation import StagateInputError


def read_input(path: str | Path) -> AnnData:
    """Read an AnnData `.h5ad` file, with one clear error when it is not one."""
    path = Path(path)
    if path.is_dir():
        msg = f"{path} is a folder; `stagate run` reads an .h5ad file."
        raise StagateInputError(msg)
    if not h5py.is_hdf5(path):
        msg = f"{path} is not an HDF5/.h5ad file (AnnData format); convert it with anndata first."
        raise StagateInputError(msg)
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # anndata raises many types for malformed files
        msg = f"{path} could not be read as AnnData: {type(err).__name__}: {err}"
        raise StagateInputError(msg) from None
