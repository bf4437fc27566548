"""Spatial refinement of domain labels: each spot takes its neighbourhood's majority label."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def majority_vote(labels: np.ndarray, adjacency: sp.spmatrix, n_rounds: int = 1) -> np.ndarray:
    """Relabel every spot with the most frequent label among itself and its neighbours.

    A spot keeps its own label on a tie with it, so isolated spots and clean borders stay
    as they are; what changes are lone spots inside another domain. One round is a single
    sparse product with the one-hot labels.

    Parameters
    ----------
    labels
        (N,) labels of any type.
    adjacency
        (N, N) spatial graph; non-zeros mark neighbours (weights are ignored).
    n_rounds
        How many times to repeat the vote.

    Returns
    -------
    (N,) array of refined labels, of the input's values.
    """
    labels = np.asarray(labels)
    values, codes = np.unique(labels, return_inverse=True)
    n = labels.shape[0]
    adj = sp.csr_matrix(adjacency, dtype=np.float32, copy=True)
    adj.data[:] = 1.0
    adj.setdiag(0)
    adj.eliminate_zeros()
    for _ in range(n_rounds):
        onehot = sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), codes)),
                               shape=(n, values.size))
        votes = np.asarray((adj @ onehot).todense()) + np.asarray(onehot.todense())
        own = votes[np.arange(n), codes]
        best = votes.argmax(axis=1)
        codes = np.where(votes[np.arange(n), best] > own, best, codes)
    return values[codes]
