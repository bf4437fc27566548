"""Consensus of several partitions of the same spots: label matching and a majority vote.

Why: STAGATE's weights start at random, and one training run's domains can differ from the
next run's by 0.1-0.2 ARI. Training a few short runs and letting them vote gives an answer
that depends much less on the seed. The vote here (match every partition's labels to a
reference partition by the Hungarian algorithm on their contingency table, then take each
spot's most frequent label) is the "voting" consensus of cluster-ensemble work (e.g. Dudoit &
Fridlyand 2003, Bioinformatics 19:1090). Unlike the co-association (evidence accumulation)
consensus it needs no N x N matrix, so it costs O(N x runs) at any size; both were measured
on the shared data (bench/README.md). scipy's ``linear_sum_assignment`` solves the matching.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score


def _contingency(a: np.ndarray, b: np.ndarray, n_a: int, n_b: int) -> np.ndarray:
    return np.bincount(a * n_b + b, minlength=n_a * n_b).reshape(n_a, n_b)


def match_labels(labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Rename `labels` (0-based ints) to the `reference` labels they overlap most.

    The renaming maximises the number of spots whose label equals the reference's (a
    one-to-one matching). Labels left without a partner (more clusters than the reference)
    get new numbers after the reference's.
    """
    labels, reference = np.asarray(labels), np.asarray(reference)
    n_l, n_r = int(labels.max()) + 1, int(reference.max()) + 1
    overlap = _contingency(labels, reference, n_l, n_r)
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    mapping = np.full(n_l, -1, dtype=np.int64)
    mapping[rows] = cols
    spare = np.flatnonzero(mapping < 0)
    mapping[spare] = n_r + np.arange(spare.size)
    return mapping[labels]


def pairwise_agreement(partitions: np.ndarray) -> np.ndarray:
    """ARI between every two rows of `partitions` (runs x spots); 1 on the diagonal."""
    k = len(partitions)
    out = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            out[i, j] = out[j, i] = adjusted_rand_score(partitions[i], partitions[j])
    return out


def consensus_vote(partitions: np.ndarray) -> tuple[np.ndarray, dict]:
    """Majority vote of several partitions of the same spots.

    Parameters
    ----------
    partitions
        (runs, spots) integer labels, 0-based; runs may use different label numbers.

    Returns
    -------
    labels
        Consensus labels (0-based, numbered as the reference run's).
    info
        ``reference``: the run the others were matched to, the one that agrees most with all
        others (highest mean ARI); ``agreement``: the runs' pairwise ARI matrix;
        ``mean_agreement``: its mean off the diagonal; ``support``: per spot, the fraction of
        runs that voted for its consensus label.
    """
    partitions = np.asarray(partitions, dtype=np.int64)
    if partitions.ndim != 2 or len(partitions) < 1:
        msg = f"partitions must be (runs, spots), got shape {partitions.shape}."
        raise ValueError(msg)
    k, n = partitions.shape
    agreement = pairwise_agreement(partitions)
    mean_each = (agreement.sum(1) - 1) / max(1, k - 1)
    ref = int(np.argmax(mean_each))  # ties: the first run
    matched = np.stack([match_labels(p, partitions[ref]) for p in partitions])
    n_labels = int(matched.max()) + 1
    votes = np.zeros((n, n_labels), dtype=np.int64)
    for row in matched:
        votes[np.arange(n), row] += 1
    # a tie goes to the reference run's label: it is the best-supported run overall
    votes *= 2
    votes[np.arange(n), matched[ref]] += 1
    labels = votes.argmax(1)
    support = (matched == labels).mean(0)
    # renumber densely in case a label lost every vote
    _, labels = np.unique(labels, return_inverse=True)
    off = agreement[~np.eye(k, dtype=bool)]
    info = {"reference": ref, "agreement": agreement,
            "mean_agreement": float(off.mean()) if off.size else 1.0, "support": support}
    return labels.astype(np.int64), info
