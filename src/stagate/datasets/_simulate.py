"""A built-in simulator: Visium-like hexagonal tissue with curved, layered domains."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

#: spot centre-to-centre distance, micrometres (Visium: 100 um)
PITCH = 100.0
#: spots simulated at a time, so a million spots never needs a dense N x G array
_CHUNK = 50_000


def simulate(
    n_spots: int = 3000,
    *,
    n_genes: int = 1000,
    n_domains: int = 6,
    mean_counts: float = 1000.0,
    signal: float = 0.3,
    dispersion: float = 3.0,
    random_state: int = 0,
) -> AnnData:
    """Simulate a Visium-like section with known domains (deterministic for a seed).

    Spots lie on a hexagonal grid (pitch 100 um) inside a roughly round tissue. Domains are
    curved layers of unequal width, like cortical layers bent by a sulcus. Each domain has an
    expression programme; neighbouring layers share most of it (the log fold changes follow a
    random walk across layers), so domains are distinguishable but not trivially. Counts are
    negative binomial (gamma-Poisson) around ``library size x programme``, with over-dispersed
    library sizes, so single spots are noisy and spatial context is needed to find domains.

    Parameters
    ----------
    n_spots
        Number of spots.
    n_genes
        Number of genes.
    n_domains
        Number of layers.
    mean_counts
        Mean UMIs per spot.
    signal
        Scale of the per-layer log fold changes (smaller = harder).
    dispersion
        Negative binomial size parameter (smaller = noisier).
    random_state
        Seed.

    Returns
    -------
    AnnData with raw counts in ``X`` (CSR int32), ``obsm['spatial']`` (um),
    ``obs['domain_truth']`` (categorical "L1".."LK") and ``uns['simulation']`` (parameters).
    """
    if n_spots < n_domains or n_domains < 2:
        msg = f"need n_spots >= n_domains >= 2 (got n_spots={n_spots}, n_domains={n_domains})."
        raise ValueError(msg)
    rng = np.random.default_rng(random_state)
    coords = _hex_tissue(n_spots)
    layer = _curved_layers(coords, n_domains, rng)

    log_base = np.clip(rng.normal(np.log(0.3), 1.3, n_genes), np.log(0.005), np.log(40))
    is_marker = rng.random((n_domains, n_genes)) < 0.25
    steps = rng.normal(0.0, signal, (n_domains, n_genes)) * is_marker
    log_fc = np.cumsum(steps, axis=0)  # random walk across layers: neighbours are similar
    log_fc -= log_fc.mean(axis=0)
    programme = np.exp(log_base + log_fc)
    programme /= programme.sum(axis=1, keepdims=True)

    size = mean_counts * rng.lognormal(-0.5 * 0.4**2, 0.4, n_spots)
    blocks = []
    for start in range(0, n_spots, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n_spots))
        mu = size[sl, None] * programme[layer[sl]]
        lam = rng.gamma(dispersion, mu / dispersion)
        blocks.append(sp.csr_matrix(rng.poisson(lam).astype(np.int32)))
    counts = sp.vstack(blocks, format="csr")

    names = np.array([f"L{k + 1}" for k in range(n_domains)])
    obs = pd.DataFrame(
        {"domain_truth": pd.Categorical(names[layer], categories=names)},
        index=[f"spot_{i}" for i in range(n_spots)],
    )
    var = pd.DataFrame(index=[f"gene_{g}" for g in range(n_genes)])
    adata = AnnData(counts, obs=obs, var=var)
    adata.obsm["spatial"] = coords
    adata.uns["simulation"] = {
        "n_spots": n_spots, "n_genes": n_genes, "n_domains": n_domains,
        "mean_counts": mean_counts, "signal": signal, "dispersion": dispersion,
        "random_state": random_state, "unit": "um", "pitch": PITCH,
    }
    adata.uns["stagate_input"] = {"format": "simulated", "source": "stagate.datasets.simulate",
                                  "unit": "um", "um_per_unit": 1.0}
    return adata


def _hex_tissue(n_spots: int) -> np.ndarray:
    """The `n_spots` hexagonal-grid positions closest to the centre (a round section)."""
    side = int(np.ceil(np.sqrt(n_spots * 1.35))) + 2
    row, col = np.divmod(np.arange(side * side), side)
    x = (col + 0.5 * (row % 2)) * PITCH
    y = row * PITCH * np.sqrt(3) / 2
    xy = np.column_stack([x, y])
    centre = xy.mean(axis=0)
    order = np.argsort(np.linalg.norm(xy - centre, axis=1), kind="stable")[:n_spots]
    return xy[np.sort(order)]


def _curved_layers(coords: np.ndarray, n_domains: int, rng: np.random.Generator) -> np.ndarray:
    """Layer index per spot: bands of a bent depth coordinate, of unequal widths."""
    u = (coords - coords.min(axis=0)) / np.ptp(coords, axis=0).max()
    depth = u[:, 1] + 0.12 * np.sin(2 * np.pi * 1.1 * u[:, 0] + rng.uniform(0, 2 * np.pi)) \
        + 0.35 * (u[:, 0] - 0.5) ** 2
    widths = rng.uniform(0.6, 1.4, n_domains)
    edges = np.quantile(depth, np.cumsum(widths)[:-1] / widths.sum())
    return np.searchsorted(edges, depth)
