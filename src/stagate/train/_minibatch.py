"""Exact minibatches: seed spots with their full 2-hop neighbourhood (METHOD.md section 5).

Only the two attention layers pass messages, so a seed's reconstruction needs the embedding
of its neighbours (1 hop), whose encoder rows need theirs (2 hops). A batch holds the seeds,
then the rest of their 1-hop, then of their 2-hop neighbourhood; the rows of the 1-hop nodes
keep *all* their edges, the outer ring keeps only self-loops (its outputs are never used).
So the seeds' loss, summed over the batches of an epoch, is exactly the full-graph loss:
no sampling, no edges lost at batch borders. Inference uses the same construction.

Why by hand: torch_geometric's NeighborLoader needs pyg-lib or torch-sparse (compiled
extensions we do not depend on) and samples per hop; a full 2-hop neighbourhood is two CSR
row slices, done here with scipy.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import reverse_cuthill_mckee
from scipy.spatial import cKDTree

from ..module import NeighbourGraph
from ._batch import Batch, expression_tensors


def neighbourhood_batch(
    seeds: np.ndarray, adj: sp.csr_matrix, x, *, pruned_adj: sp.csr_matrix | None = None,
    hops: int = 2,
) -> tuple[Batch, np.ndarray]:
    """The batch for `seeds` and the global ids of its nodes (seeds first).

    Parameters
    ----------
    seeds
        Global ids of the spots whose loss (or outputs) the batch is for.
    adj
        (N, N) CSR adjacency *with* self-loops; row i lists what i attends to.
    x
        (N, G) expression, scipy sparse or numpy; only the batch's rows are densified.
    pruned_adj
        Pruned graph (cell type-aware module), same convention.
    hops
        2 for training and reconstruction, 1 for the embedding alone.
    """
    seeds = np.asarray(seeds, dtype=np.int64)
    rings = [seeds]
    inner = seeds
    for _ in range(hops):
        reached = np.unique(adj[inner].indices)
        rings.append(np.setdiff1d(reached, np.concatenate(rings), assume_unique=True))
        inner = np.concatenate(rings)
    nodes = np.concatenate(rings)
    n_full_rows = nodes.size - rings[-1].size  # rows whose neighbourhood is complete
    graph = _subgraph(adj, nodes, n_full_rows)
    pruned = {}
    if pruned_adj is not None:
        pg = _subgraph(pruned_adj, nodes, n_full_rows)
        pruned = {"pruned_graph": pg, "pruned_edges": graph.edge_positions(pg)}
    rows = x[nodes]
    xb, xb_t = expression_tensors(rows)  # stays sparse when X is (X W1 then uses it)
    # ||X[seeds]||^2 from the host rows: the seeds are the first rows
    seed_values = (rows.data[: rows.indptr[seeds.size]] if sp.issparse(rows)
                   else np.asarray(rows[: seeds.size]))
    x_sq = torch.as_tensor(np.square(seed_values, dtype=np.float64).sum())
    batch = Batch(xb, graph, rows=slice(0, seeds.size), x_sq=x_sq, pruned=pruned, x_t=xb_t)
    return batch, nodes


def _subgraph(adj: sp.csr_matrix, nodes: np.ndarray, n_full_rows: int) -> NeighbourGraph:
    sub = adj[nodes][:, nodes].tocsr()
    keep = np.zeros(nodes.size, dtype=np.float32)
    keep[:n_full_rows] = 1
    sub = sp.diags(keep) @ sub  # outer ring: no incoming edges (self-loops re-added below)
    return NeighbourGraph.from_scipy(sub)


class MinibatchPlan:
    """Batches of at most `batch_size` seeds covering every spot once per epoch.

    Seeds are grouped into spatially compact chunks, so a batch's 2-hop halo is a thin
    border rather than 2 hops around every seed (random seeds would need ~19 computed spots
    per seed on a Visium grid). With `coordinates`, the chunks are the leaves of a balanced
    k-d tree (scipy's, median splits until a leaf holds at most `batch_size` spots): squarish
    tiles whose halo stays ~8% of the seeds at any tissue size. Without them, spots are
    ordered by reverse Cuthill-McKee on the graph and cut into consecutive chunks; those are
    bands as wide as the tissue, so their halo grows with it (~16% at 100k spots, ~47% at
    1M on a simulated Visium grid with 8192 seeds per batch).

    Iterating gives the next epoch's batches, in an order shuffled by a generator seeded with
    ``(random_state, epoch)``, so a resumed run sees the same batches as an uninterrupted
    one. The expression stays on the host; each batch takes only its rows. With `sections`
    (an integer code per spot), tiles are cut within each section, never across two.
    """

    def __init__(self, adj: sp.csr_matrix, x, *, batch_size: int, random_state: int = 0,
                 pruned_adj: sp.csr_matrix | None = None,
                 coordinates: np.ndarray | None = None,
                 sections: np.ndarray | None = None) -> None:
        self.adj = sp.csr_matrix(adj)
        self.adj.setdiag(1)  # self-loops: each spot attends to itself
        self.adj.sort_indices()
        self.pruned_adj = None
        if pruned_adj is not None:
            self.pruned_adj = sp.csr_matrix(pruned_adj)
            self.pruned_adj.setdiag(1)
        self.x = x
        self.batch_size = int(batch_size)
        if coordinates is not None:
            coordinates = np.asarray(coordinates, dtype=np.float64)
            groups = ([np.arange(self.n_obs)] if sections is None else
                      [np.flatnonzero(sections == c) for c in np.unique(sections)])
            # one k-d tree per section: stacked sections share x-y ranges
            self.chunks = [g[tile] for g in groups
                           for tile in _kd_tree_tiles(coordinates[g], self.batch_size)]
        else:
            order = reverse_cuthill_mckee(self.adj, symmetric_mode=False).astype(np.int64)
            self.chunks = np.array_split(order, -(-self.n_obs // self.batch_size))
        self.random_state = random_state
        self.epoch = 0
        self.rank, self.n_ranks = 0, 1  # torch.distributed: this process's share of seeds

    @property
    def n_obs(self) -> int:
        return self.adj.shape[0]

    def __len__(self) -> int:
        return len(self.chunks)

    def seeds(self, epoch: int) -> list[np.ndarray]:
        """The seed batches of `epoch`: the fixed compact chunks, in a shuffled order."""
        shuffle = np.random.default_rng([self.random_state, epoch]).permutation(len(self))
        return [self.chunks[i] for i in shuffle]

    def __iter__(self) -> Iterator[Batch]:
        seeds = self.seeds(self.epoch)
        self.epoch += 1
        for s in seeds:
            mine = np.sort(s)[self.rank:: self.n_ranks]
            yield neighbourhood_batch(mine, self.adj, self.x, pruned_adj=self.pruned_adj)[0]


def _kd_tree_tiles(coordinates: np.ndarray, max_size: int) -> list[np.ndarray]:
    """The leaves of a balanced k-d tree with at most `max_size` points each, in tree order."""
    tree = cKDTree(coordinates, leafsize=max_size, balanced_tree=True, copy_data=False)
    leaves, stack = [], [tree.tree]
    while stack:  # depth-first, lesser side first: neighbouring tiles stay adjacent
        node = stack.pop()
        if node.split_dim == -1:
            leaves.append(np.sort(node.indices).astype(np.int64))
        else:
            stack += [node.greater, node.lesser]
    return leaves
