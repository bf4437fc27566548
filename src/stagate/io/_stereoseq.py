"""Stereo-seq GEM text files (gene, x, y, MIDCount; gzip allowed), binned into spots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._logging import log
from ._common import fail, read_table, record_input

#: Stereo-seq DNB pitch: coordinates count 500 nm steps
UM_PER_DNB = 0.5
_COUNT_COLUMNS = ("MIDCount", "MIDCounts", "UMICount", "UMICounts")


def read_stereoseq_gem(path: str | Path, *, bin_size: int = 50) -> AnnData:
    """Read a GEM file and sum counts into square bins of `bin_size` DNBs (bin50 = 25 um).

    Columns: ``geneID``, ``x``, ``y`` and ``MIDCount`` (``MIDCounts``/``UMICount`` accepted);
    ``#`` lines are the header comments that Stereo-seq tools write.

    Returns
    -------
    AnnData, one spot per non-empty bin: counts in ``X`` (CSR), ``obsm['spatial']`` the bin
    centres in DNB units, ``obs`` ``bin_x``/``bin_y``; ``uns['stagate_input']`` with the unit.
    """
    path = Path(path)
    if int(bin_size) != bin_size or bin_size < 1:
        msg = f"bin_size == {bin_size}, must be a positive integer (50 = bin50)."
        raise ValueError(msg)
    gem = read_table(path, comment="#", dtype={"geneID": str})
    count_col = next((c for c in _COUNT_COLUMNS if c in gem.columns), None)
    missing = [c for c in ("geneID", "x", "y") if c not in gem.columns]
    if count_col is None:
        missing.append("MIDCount")
    if missing:
        fail(path, f"not a GEM file: missing column(s) {missing}; found {list(gem.columns)}.")
    xy = gem[["x", "y"]].apply(pd.to_numeric, errors="coerce").to_numpy()
    counts = pd.to_numeric(gem[count_col], errors="coerce").to_numpy()
    if not np.isfinite(xy).all():
        fail(path, "non-numeric or missing x/y coordinates.")
    if not np.isfinite(counts).all():
        fail(path, f"non-numeric or missing values in {count_col}.")
    if (counts < 0).any() or not np.allclose(counts, np.round(counts)):
        fail(path, f"{count_col} must hold non-negative integer counts.")
    bins = np.floor(xy / bin_size).astype(np.int64)
    bin_keys, spot = np.unique(bins, axis=0, return_inverse=True)
    gene, genes = pd.factorize(gem["geneID"].astype(str), sort=True)
    x = sp.csr_matrix((counts.astype(np.float32), (spot.ravel(), gene)),
                      shape=(len(bin_keys), len(genes)))
    x.sum_duplicates()
    names = [f"bin{bin_size}_{bx}_{by}" for bx, by in bin_keys]
    adata = AnnData(x, obs=pd.DataFrame({"bin_x": bin_keys[:, 0], "bin_y": bin_keys[:, 1]},
                                        index=names),
                    var=pd.DataFrame(index=pd.Index(genes, name="geneID")))
    adata.obsm["spatial"] = (bin_keys + 0.5) * bin_size
    log.info("%s: %d records binned into %d bin%d spots x %d genes", path.name, len(gem),
             adata.n_obs, bin_size, adata.n_vars)
    return record_input(adata, fmt="stereoseq-gem", source=path, unit="DNB",
                        um_per_unit=UM_PER_DNB, bin_size=int(bin_size))


def is_gem_file(path: Path) -> bool:
    """A GEM file: name ends in .gem(.gz) or its first data line has geneID/x/y columns."""
    name = path.name.lower()
    if name.endswith((".gem", ".gem.gz")):
        return True
    if not path.is_file() or not name.endswith((".txt", ".txt.gz", ".tsv", ".tsv.gz")):
        return False
    import gzip

    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rt") as fh:
            for line in fh:
                if not line.startswith("#"):
                    return {"geneID", "x", "y"} <= set(line.strip().split("\t"))
    except (OSError, EOFError, UnicodeDecodeError):
        return False
    return False
