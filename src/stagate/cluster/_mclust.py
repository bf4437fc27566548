"""mclust without R: hierarchical initialisation + EM, as R's ``Mclust(data, G, modelNames)``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from .._logging import log
from ._em import MODELS, MclustError, MixtureParams, e_step, m_step, me, n_parameters
from ._hc import hc_eii, hc_vvv, partition, svd_transform
from ._r_random import RStream

#: mclust's ``mclust.options("subset")``: above this many rows the agglomeration runs on a
#: random subset of this size (it is quadratic in the rows), drawn as R draws it
SUBSET_SIZE = 2000


@dataclass
class MclustResult:
    """A fitted mixture: labels (0-based), responsibilities, parameters, fit statistics."""

    labels: np.ndarray
    z: np.ndarray
    params: MixtureParams
    model: str
    n_components: int
    loglik: float
    bic: float
    n_iter: int
    subset: np.ndarray | None


def mclust(
    data: np.ndarray, n_components: int, model: str = "EEE", *, random_state: int = 2020,
    subset_size: int = SUBSET_SIZE,
) -> np.ndarray:
    """Cluster the rows of `data` as R's ``set.seed(random_state); Mclust(data, G, model)``.

    Parameters
    ----------
    data
        (n, d) float array.
    n_components
        Number of mixture components (domains).
    model
        Covariance model: ``"EEE"`` (default, STAGATE's), ``"VVV"``, ``"EII"`` or ``"VII"``.
    random_state
        Seed of the subset drawn when n > `subset_size` (R's stream for the same seed; the
        original STAGATE uses 2020). Below that size the result does not depend on it.
    subset_size
        Largest number of rows the hierarchical initialisation runs on.

    Returns
    -------
    Integer labels 0..n_components-1 (the most probable component of each row).
    """
    return fit_mclust(data, n_components, model, random_state=random_state,
                      subset_size=subset_size).labels


def fit_mclust(
    data: np.ndarray, n_components: int, model: str = "EEE", *, random_state: int = 2020,
    subset_size: int = SUBSET_SIZE, tol: float = 1e-5,
) -> MclustResult:
    """Like :func:`mclust` but return the whole fit (parameters, log-likelihood, BIC)."""
    x = _check_data(data, n_components, model)
    with threadpool_limits(1, user_api="blas"):  # see mclust_bic
        hc, subset = _initial_tree(x, random_state=random_state, subset_size=subset_size)
        return _fit_from_tree(x, n_components, model, hc, subset, tol=tol)


def mclust_bic(
    data: np.ndarray, n_components: range | list[int] = range(2, 11), models=("EEE",), *,
    random_state: int = 2020, subset_size: int = SUBSET_SIZE, tol: float = 1e-5,
    n_init: int = 1,
) -> tuple[MclustResult, dict]:
    """Fit every (model, G) and pick the highest BIC (R's ``mclustBIC`` + ``Mclust``).

    Fits that fail (singular covariance, emptied component) get BIC NaN, as in R.

    With more than `subset_size` rows, R starts EM from a hierarchical clustering of one
    random subset, and that draw alone moves the result (DLPFC 151676, one embedding: ARI
    0.27-0.43 over five subsets). ``n_init > 1`` repeats the whole fit from the subsets of
    seeds ``random_state, random_state + 1, ...`` and keeps the highest BIC, i.e. the
    highest likelihood (EM restarts, as scikit-learn's ``n_init``). ``n_init=1`` is R's
    answer; at most `subset_size` rows there is no subset and one start is used.

    Returns
    -------
    ``(best fit, {(model, G): bic})`` (each BIC the best over the starts).
    """
    g_values = sorted(set(int(g) for g in n_components))
    x = _check_data(data, max(g_values), models[0])
    for m in models:
        _check_data(x, g_values[0], m)
    if int(n_init) != n_init or n_init < 1:
        msg = f"n_init == {n_init!r}, must be a positive integer."
        raise ValueError(msg)
    starts = int(n_init) if x.shape[0] > subset_size else 1
    table: dict = {}
    best: MclustResult | None = None
    # one BLAS thread: the products here are small (d x d, n x d), and threads only add
    # overhead (DLPFC slice, 5 starts: 5.9 s with 2 OpenBLAS threads, 3.5 s with one)
    with threadpool_limits(1, user_api="blas"):
        for start in range(starts):
            best = _start(x, g_values, models, random_state + start, subset_size, tol, table,
                          best)
    if best is None:
        msg = "every mclust fit failed (singular covariances); check the input embedding."
        raise MclustError(msg)
    log.info("mclust BIC picks %s with %d components (BIC %.1f%s)", best.model,
             best.n_components, best.bic, f", best of {starts} starts" if starts > 1 else "")
    return best, table


def _start(x, g_values, models, seed, subset_size, tol, table, best):
    """One start: the tree of the subset drawn with `seed`, then EM for every (model, G);
    updates `table` with better BICs and returns the best fit so far."""
    hc, subset = _initial_tree(x, random_state=seed, subset_size=subset_size,
                               min_clusters=g_values[0])
    for model in models:
        for g in g_values:
            try:
                fit = _fit_from_tree(x, g, model, hc, subset, tol=tol)
            except MclustError as err:
                log.warning("mclust %s with G=%d failed: %s", model, g, err)
                table.setdefault((model, g), float("nan"))
                continue
            if not fit.bic <= table.get((model, g), -np.inf):  # NaN is replaced too
                table[(model, g)] = fit.bic
            if best is None or fit.bic > best.bic:
                best = fit
    return best


def _check_data(data, n_components: int, model: str) -> np.ndarray:
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2:
        msg = f"data must be a 2-D (n, d) array, got shape {x.shape}."
        raise ValueError(msg)
    if not np.isfinite(x).all():
        msg = "data contain NaN or infinite values."
        raise ValueError(msg)
    if model not in MODELS:
        msg = f"model == {model!r}, must be one of {MODELS}."
        raise ValueError(msg)
    if int(n_components) != n_components or not 1 <= n_components <= x.shape[0]:
        msg = f"n_components == {n_components}, must be between 1 and the rows ({x.shape[0]})."
        raise ValueError(msg)
    return x


def _initial_tree(x: np.ndarray, *, random_state: int, subset_size: int,
                  min_clusters: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """The agglomeration on (a subset of) the SVD-transformed rows."""
    n, d = x.shape
    subset = None
    if n > subset_size:
        subset = RStream(random_state).sample(n, subset_size)  # R's order, as R draws it
        log.info("mclust: hierarchical initialisation on a random subset of %d of %d rows "
                 "(seed %d)", subset_size, n, random_state)
    rows = x if subset is None else x[subset]
    z = svd_transform(rows)
    tree = hc_vvv(z, min_clusters=min_clusters) if rows.shape[0] > d else hc_eii(z)
    return tree, subset


def _fit_from_tree(x: np.ndarray, g: int, model: str, tree: np.ndarray,
                   subset: np.ndarray | None, *, tol: float) -> MclustResult:
    n_init = x.shape[0] if subset is None else subset.size
    labels0 = partition(tree, n_init, g)
    z0 = np.eye(g)[labels0]
    if subset is not None:  # M-step on the subset, E-step on everything, then EM
        params0 = m_step(x[subset], z0, model)
        z0, _ = e_step(x, params0)
    params, z, loglik, n_iter = me(x, z0, model, tol=tol)
    n, d = x.shape
    bic = 2 * loglik - n_parameters(model, d, g) * np.log(n)
    labels = z.argmax(axis=1)
    return MclustResult(labels=labels, z=z, params=params, model=model, n_components=g,
                        loglik=loglik, bic=float(bic), n_iter=n_iter, subset=subset)
