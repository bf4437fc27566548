"""Checks at the boundary: each returns the clean object or raises one clear error."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from . import _keys
from ._errors import NotFittedError, StagateInputError

if TYPE_CHECKING:
    import torch
    from anndata import AnnData

__all__ = ["NotFittedError", "StagateInputError"]


def require_key(adata: AnnData, where: str, key: str, hint: str | None = None) -> None:
    """Raise unless ``adata.<where>[key]`` exists (`where`: obs, obsm, obsp, layers, uns);
    the message lists what is there, or gives `hint` (the step that makes the key)."""
    found = getattr(adata, where)
    if key not in found:
        fix = hint or f"{where} has {list(found.keys())}"
        msg = f"adata.{where}[{key!r}] not found. {fix}."
        raise StagateInputError(msg)


def check_coordinates(adata: AnnData, spatial_key: str = _keys.SPATIAL) -> np.ndarray:
    """Return the coordinates as float64 (n, 2|3): present, finite, no duplicated spots."""
    if spatial_key not in adata.obsm:
        msg = (
            f"No spot coordinates: adata.obsm[{spatial_key!r}] is missing "
            f"(obsm has {list(adata.obsm.keys())}). Put an (n_spots, 2) array of x, y there, "
            f"or pass the right key with `spatial_key=` (command line: --x-col/--y-col for "
            f"coordinates kept in obs columns)."
        )
        raise StagateInputError(msg)
    coords = np.asarray(adata.obsm[spatial_key])
    try:
        coords = coords.astype(np.float64)
    except (TypeError, ValueError):
        msg = f"adata.obsm[{spatial_key!r}] is not numeric (dtype {coords.dtype})."
        raise StagateInputError(msg) from None
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        msg = (
            f"adata.obsm[{spatial_key!r}] has shape {coords.shape}; "
            f"expected (n_spots, 2) or (n_spots, 3) coordinates."
        )
        raise StagateInputError(msg)
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        names = ", ".join(map(str, adata.obs_names[bad][:5]))
        msg = (
            f"{bad.sum()} spot(s) have NaN or infinite coordinates in adata.obsm[{spatial_key!r}] "
            f"(e.g. {names}). Remove them (adata = adata[np.isfinite(adata.obsm"
            f"[{spatial_key!r}]).all(1)]) or fix the coordinates."
        )
        raise StagateInputError(msg)
    return coords


def check_unique_spots(coords: np.ndarray, obs_names, groups: np.ndarray | None = None,
                       expression=None) -> int:
    """Raise if a spot is listed twice; return how many spots share a position with another.

    The same spot twice is a repeated name, or (with `expression`) the same position in the
    same section *and* the same expression, as a table concatenated twice gives. Different
    cells whose centroids coincide (imaging platforms round segmented centroids) are not an
    error: they are counted and returned, and become neighbours at distance 0.
    """
    if not obs_names.is_unique:
        dup = obs_names[obs_names.duplicated()][:5].tolist()
        msg = f"Duplicated spot names {dup}. Make them unique with adata.obs_names_make_unique()."
        raise StagateInputError(msg)
    key = coords if groups is None else np.column_stack([coords, groups])
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    shared = np.flatnonzero(counts[inverse] > 1)
    if shared.size == 0 or expression is None:
        return int(shared.size)
    first_of: dict[tuple, int] = {}  # (position, expression digest) -> first spot
    repeats: list[tuple[int, int]] = []
    for i in shared:  # only spots that share a position are hashed: few, so a loop is cheap
        signature = (int(inverse[i]), _row_digest(expression, i))
        if signature in first_of:
            repeats.append((first_of[signature], i))
        else:
            first_of[signature] = i
    if repeats:
        first, again = repeats[0]
        msg = (
            f"{len(repeats)} spot(s) repeat another spot exactly: the same position and the "
            f"same expression (e.g. {obs_names[first]!r} and {obs_names[again]!r}), as a "
            f"table concatenated twice gives. Drop the repeats (keep one row per spot), or "
            f"pass `library_key` if the object holds several sections."
        )
        raise StagateInputError(msg)
    return int(shared.size)


def _row_digest(x, i: int) -> bytes:
    import hashlib

    if sp.issparse(x):
        row = sp.csr_matrix(x[i])
        row.sum_duplicates()
        nz = row.data != 0
        payload = row.indices[nz].astype(np.int64).tobytes() + \
            row.data[nz].astype(np.float64).tobytes()
    else:
        payload = np.asarray(x[i], dtype=np.float64).tobytes()
    return hashlib.blake2b(payload, digest_size=16).digest()


def check_counts(x, *, what: str = "adata.X") -> None:
    """Raise unless `x` holds raw counts: finite, non-negative integers (checked in chunks,
    so a million-spot matrix needs no second copy in memory)."""
    data = x.data if sp.issparse(x) else np.asarray(x).ravel()
    if data.size == 0:
        msg = f"{what} is empty; there is no expression to model."
        raise StagateInputError(msg)
    for start in range(0, data.size, 10_000_000):
        chunk = np.asarray(data[start:start + 10_000_000])
        if not np.isfinite(chunk).all():
            msg = f"{what} contains NaN or infinite values; raw counts are required."
            raise StagateInputError(msg)
        if (chunk < 0).any():
            msg = (
                f"{what} contains negative values, so it is not raw counts (scaled data?). "
                f"Pass the raw UMI counts (e.g. layer='counts' or adata.raw)."
            )
            raise StagateInputError(msg)
        if not np.array_equal(chunk, np.round(chunk)):
            msg = (
                f"{what} holds non-integer values, so it looks normalised or log-transformed, "
                f"but raw counts are required here. Pass the raw UMI counts (e.g. "
                f"layer='counts'); data already log-normalised can be used as they are "
                f"(`stagate run --log-normalised`, or skip stagate.pp.preprocess)."
            )
            raise StagateInputError(msg)


def check_finite_expression(x, *, what: str = "expression") -> None:
    """Raise if the expression matrix has NaN or infinite values."""
    data = x.data if sp.issparse(x) else np.asarray(x)
    if not np.isfinite(data).all():
        msg = f"The {what} matrix contains NaN or infinite values; fix or remove those spots/genes."
        raise StagateInputError(msg)


def finite_or_none(value) -> float | None:
    """`value` as a float when it is a finite number, else None (NaN, None, text)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def check_n_domains(n_domains: int, n_obs: int) -> int:
    """Raise unless 2 <= n_domains <= n_obs."""
    if int(n_domains) != n_domains or n_domains < 2:
        msg = (f"n_domains == {n_domains}, must be an integer of at least 2 (one domain is the "
               f"whole tissue: nothing to find).")
        raise StagateInputError(msg)
    if n_domains > n_obs:
        msg = f"n_domains == {n_domains}, must be <= the number of spots ({n_obs})."
        raise StagateInputError(msg)
    return int(n_domains)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        msg = "device='cuda' was requested but no CUDA GPU is visible; use device='cpu' or 'auto'."
        raise StagateInputError(msg)
    return device
