"""mclust without R against R's mclust 6 references (tests/data/mclust, made by
bench/mclust_reference/: inputs by make_inputs.py, labels by run_mclust.R)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from stagate.cluster import MclustError, fit_mclust, mclust, mclust_bic
from stagate.cluster._hc import hc_vvv, partition, svd_transform
from stagate.cluster._r_random import RStream

REF = Path(__file__).parent / "data" / "mclust"


def reference_cases():
    path = REF / "reference.csv"
    if not path.exists():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("case", reference_cases(),
                         ids=lambda c: f"{c['name']}-{c['model']}-G{c['G']}-seed{c['seed']}")
def test_same_partition_and_likelihood_as_r(case):
    x = np.loadtxt(REF / f"{case['name']}.csv.gz", delimiter=",")
    r_labels = np.loadtxt(REF / f"{case['name']}.{case['model']}.G{case['G']}.seed{case['seed']}"
                                ".labels.txt")
    fit = fit_mclust(x, int(case["G"]), case["model"], random_state=int(case["seed"]))
    ari = adjusted_rand_score(r_labels, fit.labels)
    assert ari >= 0.99, f"ARI vs R {ari:.4f}"
    if ari == 1.0:
        assert fit.loglik == pytest.approx(float(case["loglik"]), rel=1e-6)
        assert fit.bic == pytest.approx(float(case["bic"]), rel=1e-6)


def test_reference_present():
    assert len(reference_cases()) >= 8, "tests/data/mclust/reference.csv is missing"


def test_r_stream_matches_r():
    # values printed by R 4.2: set.seed(2020); sample(seq.int(3639), 10) and set.seed(42); runif(1)
    np.testing.assert_array_equal(RStream(2020).sample(3639, 10) + 1,
                                  [1436, 1260, 2582, 728, 321, 273, 1188, 170, 945, 896])
    assert RStream(42).unif() == pytest.approx(0.914806043496355, abs=1e-12)


def test_svd_transform_whitens_like_mclust(rng):
    x = rng.normal(size=(200, 4)) @ rng.normal(size=(4, 4))
    z = svd_transform(x)
    s = (x - x.mean(0)) / x.std(0, ddof=1)
    d = np.linalg.svd(s, compute_uv=False)
    # columns are uncorrelated with squared norm d_k (= d_k^2 / d_k)
    np.testing.assert_allclose(z.T @ z, np.diag(d), atol=1e-8)


def test_agglomeration_recovers_obvious_groups(rng):
    x = np.vstack([rng.normal(c, 0.1, (30, 2)) for c in ([0, 0], [5, 5], [0, 5])])
    merges = hc_vvv(x)
    labels = partition(merges, 90, 3)
    assert adjusted_rand_score(np.repeat([0, 1, 2], 30), labels) == 1.0


def _brute_force_hc(z, min_clusters):
    """The agglomeration recomputed from scratch at every step: every pair's merged
    scatter matrix and its log-determinant by numpy, no incremental bookkeeping."""
    n, p = z.shape
    alpha = ((z - z.mean(0)) ** 2).sum() / (n * p)

    def term(rows):
        pts = z[rows]
        size = len(rows)
        w = (pts - pts.mean(0)).T @ (pts - pts.mean(0))
        log_reg = np.log((np.trace(w) + alpha) / size)
        if size <= p:
            return size * log_reg
        sign, logdet = np.linalg.slogdet(w)
        return size * np.logaddexp(logdet - p * np.log(size), log_reg)

    clusters = {i: [i] for i in range(n)}
    merges = []
    while len(clusters) > min_clusters:
        keys = sorted(clusters)
        best = None
        for x, a in enumerate(keys):
            for b in keys[x + 1:]:
                rise = (term(clusters[a] + clusters[b]) - term(clusters[a])
                        - term(clusters[b]))
                if best is None or rise < best[0] - 1e-9:
                    best = (rise, a, b)
        _, a, b = best
        clusters[a] += clusters.pop(b)
        merges.append((a, b))
    return np.array(merges)


def test_agglomeration_equals_brute_force(rng):
    # three loose groups in 4-D: clusters grow past p points, so determinants count
    z = np.vstack([rng.normal(c, 1.0, (20, 4)) for c in (0, 2, 4)])
    np.testing.assert_array_equal(hc_vvv(z, min_clusters=2), _brute_force_hc(z, 2))


def test_deterministic_and_labels_in_range(rng):
    x = rng.normal(size=(300, 3))
    a = mclust(x, 4)
    np.testing.assert_array_equal(a, mclust(x, 4))
    assert set(np.unique(a)) == {0, 1, 2, 3}


def test_subset_initialisation_above_threshold(rng):
    x = np.vstack([rng.normal(c, 0.5, (400, 3)) for c in rng.normal(0, 5, (3, 3))])
    fit = fit_mclust(x, 3, subset_size=300, random_state=5)
    assert fit.subset is not None and fit.subset.size == 300
    assert adjusted_rand_score(np.repeat([0, 1, 2], 400), fit.labels) > 0.99


def test_several_starts_keep_the_highest_bic(rng):
    """n_init > 1: R's start (the seed itself) plus starts from other subsets; the best BIC
    wins, so it is never below R's; the starts are the fits of seeds seed, seed + 1, ..."""
    # overlapping groups, so that subsets lead EM to different optima
    x = np.vstack([rng.normal(c, 2.0, (300, 4)) for c in rng.normal(0, 2, (5, 4))])
    one, _ = mclust_bic(x, [5], random_state=7, subset_size=200)
    best, table = mclust_bic(x, [5], random_state=7, subset_size=200, n_init=4)
    starts = [fit_mclust(x, 5, random_state=7 + i, subset_size=200) for i in range(4)]
    np.testing.assert_array_equal(one.labels, starts[0].labels)  # n_init=1 is R's answer
    assert best.bic == max(f.bic for f in starts) >= one.bic
    assert table[("EEE", 5)] == best.bic
    assert len({round(f.bic, 6) for f in starts}) > 1  # the starts did differ here
    # at most subset_size rows there is no subset to vary: one start, the same answer
    small, _ = mclust_bic(x[:150], [3], n_init=4, subset_size=200)
    np.testing.assert_array_equal(small.labels, mclust(x[:150], 3, subset_size=200))
    with pytest.raises(ValueError, match="n_init"):
        mclust_bic(x, [5], n_init=0)


def test_bic_picks_the_true_number(rng):
    x = np.vstack([rng.normal(c, 0.3, (150, 2)) for c in ([0, 0], [4, 0], [0, 4])])
    best, table = mclust_bic(x, range(1, 6), ("EEE", "VVV"))
    assert best.n_components == 3
    assert set(table) == {(m, g) for m in ("EEE", "VVV") for g in range(1, 6)}


def test_degenerate_data_fail_clearly():
    x = np.zeros((50, 3))
    x[:, 0] = np.arange(50)
    with pytest.raises(MclustError, match="singular covariance"):
        mclust(x, 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="model"):
        mclust(np.ones((10, 2)), 2, model="XYZ")
    with pytest.raises(ValueError, match="n_components"):
        mclust(np.random.default_rng(0).normal(size=(10, 2)), 11)
    with pytest.raises(ValueError, match="NaN"):
        mclust(np.full((10, 2), np.nan), 2)


def test_shared_covariance_shortcuts_equal_the_per_component_sums(rng):
    # EEE/EII: pooled scatter in one product and one triangular solve for all components
    from stagate.cluster._em import MixtureParams, _pooled_scatter, log_densities

    x = rng.normal(3.0, 1.0, (500, 4))
    z = rng.dirichlet(np.ones(3), size=500)  # soft responsibilities, rows sum to 1
    nk = z.sum(0)
    means = (z.T @ x) / nk[:, None]
    direct = sum(((x - means[k]) * z[:, [k]]).T @ (x - means[k]) for k in range(3))
    np.testing.assert_allclose(_pooled_scatter(x, means, nk), direct, rtol=1e-10)

    u = np.linalg.cholesky(direct / 500).T
    shared = MixtureParams(nk / 500, means, np.stack([u] * 3))
    perturbed = MixtureParams(nk / 500, means, np.stack([u, u, u * (1 + 1e-12)]))
    # the second takes the general per-component path
    np.testing.assert_allclose(log_densities(x, shared), log_densities(x, perturbed),
                               rtol=1e-9)
