"""EM for Gaussian mixtures under mclust's covariance models, as mclust's ``me`` runs it.

Models (mclust's names): ``EEE`` one full covariance shared by all components; ``VVV`` a full
covariance each; ``EII`` one spherical variance; ``VII`` a spherical variance each. Each
iteration is an M-step from the responsibilities, then an E-step; EM stops when the relative
change of the log-likelihood ``|l_old - l| / (1 + |l|)`` falls to `tol` (mclust: 1e-5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import logsumexp

MODELS = ("EEE", "VVV", "EII", "VII")
_RTEPS = np.sqrt(np.finfo(float).eps)  # mclust's singularity threshold on Cholesky factors


class MclustError(ValueError):
    """EM could not continue: a singular covariance or an emptied component."""


@dataclass
class MixtureParams:
    weights: np.ndarray  # (G,)
    means: np.ndarray  # (G, d)
    chol: np.ndarray  # (G, d, d) upper Cholesky factors U with U^T U = Sigma_k


def n_parameters(model: str, d: int, g: int) -> int:
    """Free parameters, as mclust's ``nMclustParams``."""
    cov = {"EEE": d * (d + 1) // 2, "VVV": g * d * (d + 1) // 2, "EII": 1, "VII": g}[model]
    return (g - 1) + g * d + cov


def m_step(x: np.ndarray, z: np.ndarray, model: str) -> MixtureParams:
    """Weights, means and covariances from responsibilities `z` (n, G; rows sum to 1)."""
    n, d = x.shape
    nk = z.sum(axis=0)
    if nk.min() <= _RTEPS:
        k = int(np.argmin(nk))
        msg = (f"mixture component {k + 1} has (almost) no data ({nk[k]:.3g} spots); "
               f"ask for fewer components.")
        raise MclustError(msg)
    means = (z.T @ x) / nk[:, None]
    if model in ("EEE", "EII"):  # one covariance shared by all components
        pooled = _pooled_scatter(x, means, nk)
        if model == "EII":
            pooled = np.trace(pooled) / d * np.eye(d)
        sigma = np.broadcast_to(pooled / n, (z.shape[1], d, d))
        return _with_cholesky(sigma, nk / n, means, model)
    scatter = np.empty((z.shape[1], d, d))
    for k in range(z.shape[1]):
        r = (x - means[k]) * np.sqrt(z[:, k])[:, None]
        scatter[k] = r.T @ r
    if model == "VVV":
        sigma = scatter / nk[:, None, None]
    elif model == "VII":
        var = np.trace(scatter, axis1=1, axis2=2) / (nk * d)
        sigma = var[:, None, None] * np.eye(d)
    else:
        msg = f"model == {model!r}, must be one of {MODELS}."
        raise ValueError(msg)
    return _with_cholesky(sigma, nk / n, means, model)


def _pooled_scatter(x: np.ndarray, means: np.ndarray, nk: np.ndarray) -> np.ndarray:
    """``sum_k sum_i z_ik (x_i - mu_k)(x_i - mu_k)^T`` when each row of z sums to 1:
    the total scatter minus the between-component scatter. One (d, n) x (n, d) product
    instead of one per component; both are taken about the overall mean, which keeps the
    subtraction well conditioned."""
    centre = x.mean(axis=0)
    xc = x - centre
    mc = (means - centre) * np.sqrt(nk)[:, None]
    return xc.T @ xc - mc.T @ mc


def _with_cholesky(sigma: np.ndarray, weights: np.ndarray, means: np.ndarray,
                   model: str) -> MixtureParams:
    """Parameters with the upper Cholesky factors of `sigma`; singular ones raise."""
    chol = np.empty(sigma.shape)
    for k in range(sigma.shape[0]):
        try:
            chol[k] = np.linalg.cholesky(sigma[k]).T
        except np.linalg.LinAlgError:
            chol[k] = np.nan
        diag = np.abs(np.diag(chol[k]))
        if not np.isfinite(diag).all() or diag.min() / (1 + diag.max()) <= _RTEPS:
            msg = (f"singular covariance in model {model} (component {k + 1}): the data are "
                   f"(nearly) degenerate; try a simpler model (e.g. 'EII') or fewer components.")
            raise MclustError(msg)
    return MixtureParams(weights, means, chol)


def log_densities(x: np.ndarray, params: MixtureParams) -> np.ndarray:
    """``log pro_k + log N(x_i | mu_k, Sigma_k)``, shape (n, G)."""
    n, d = x.shape
    g = params.means.shape[0]
    out = np.empty((n, g))
    if g > 1 and np.all(params.chol == params.chol[0]):  # shared covariance (EEE, EII)
        u = params.chol[0]
        centre = x.mean(axis=0)  # about the overall mean: a well-conditioned expansion
        w = solve_triangular(u, (x - centre).T, trans="T")  # one solve for every component
        m = solve_triangular(u, (params.means - centre).T, trans="T")
        maha = np.einsum("ij,ij->j", w, w)[:, None] - 2 * (w.T @ m) + np.einsum("ij,ij->j", m, m)
        logdet = np.log(np.abs(np.diag(u))).sum()
        return np.log(params.weights) - 0.5 * d * np.log(2 * np.pi) - logdet - maha / 2
    for k in range(g):
        u = params.chol[k]
        w = solve_triangular(u, (x - params.means[k]).T, trans="T")  # U^T w = x - mu
        maha = np.einsum("ij,ij->j", w, w)
        logdet = np.log(np.abs(np.diag(u))).sum()
        out[:, k] = np.log(params.weights[k]) - 0.5 * d * np.log(2 * np.pi) - logdet - maha / 2
    return out


def e_step(x: np.ndarray, params: MixtureParams) -> tuple[np.ndarray, float]:
    """Responsibilities and the log-likelihood."""
    logp = log_densities(x, params)
    norm = logsumexp(logp, axis=1)
    return np.exp(logp - norm[:, None]), float(norm.sum())


def me(x: np.ndarray, z: np.ndarray, model: str, *, tol: float = 1e-5,
       max_iter: int = 10_000) -> tuple[MixtureParams, np.ndarray, float, int]:
    """EM from responsibilities `z`: M-step, E-step, until the relative change <= tol.

    Returns
    -------
    ``(params, z, loglik, n_iter)``.
    """
    hold = np.inf
    for it in range(1, max_iter + 1):
        params = m_step(x, z, model)
        z, loglik = e_step(x, params)
        if abs(hold - loglik) / (1 + abs(loglik)) <= tol:
            return params, z, loglik, it
        hold = loglik
    return params, z, loglik, max_iter
