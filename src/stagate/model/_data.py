"""AnnData -> tensors: which expression, which genes, which graph. Validated once, here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData

from .. import _keys
from .._validation import StagateInputError, check_finite_expression
from ..module import NeighbourGraph
from ..pp._sections import section_categories
from ..train._batch import Batch, expression_tensors
from ..train._minibatch import MinibatchPlan


@dataclass
class ModelInput:
    x: torch.Tensor  # (N, G) float32, dense or sparse CSR
    genes: np.ndarray  # names of the G model genes
    graph: NeighbourGraph
    pruned: dict
    x_t: torch.Tensor | None = None  # CSR transpose of a sparse x (for X^T dH), else None

    def batch(self) -> Batch:
        """The full-batch training/inference step over every spot."""
        return Batch(self.x, self.graph, pruned=self.pruned, x_t=self.x_t)


def model_genes(adata: AnnData, use_hvg: bool) -> np.ndarray:
    """Boolean mask of the genes the model uses: the HVGs when marked, else all."""
    if use_hvg and "highly_variable" in adata.var:
        mask = adata.var["highly_variable"].to_numpy(dtype=bool)
        if not mask.any():
            msg = "adata.var['highly_variable'] marks no gene; rerun stagate.pp.preprocess."
            raise StagateInputError(msg)
        return mask
    return np.ones(adata.n_vars, dtype=bool)


def expression_matrix(adata: AnnData, genes: np.ndarray, layer: str | None):
    """The log-normalised expression of `genes` (scipy sparse or numpy), validated."""
    x = adata.X if layer is None else adata.layers[layer]
    if x is None:
        msg = "adata.X is empty; pass the log-normalised expression (run stagate.pp.preprocess)."
        raise StagateInputError(msg)
    x = x[:, genes] if not genes.all() else x
    check_finite_expression(x)
    return x


def spatial_graph(adata: AnnData, graph_key: str) -> sp.csr_matrix:
    """The connectivities of the graph `graph_key`, found through its ``uns`` record."""
    return sp.csr_matrix(adata.obsp[_keys.graph_keys(adata, graph_key)[0]])


def model_input(
    adata: AnnData, *, layer: str | None, use_hvg: bool, graph_key: str, pruned_key: str | None
) -> ModelInput:
    genes = model_genes(adata, use_hvg)
    graph = NeighbourGraph.from_scipy(spatial_graph(adata, graph_key))
    pruned: dict = {}
    if pruned_key is not None:
        pg = NeighbourGraph.from_scipy(spatial_graph(adata, pruned_key))
        pruned = {"pruned_graph": pg, "pruned_edges": graph.edge_positions(pg)}
    # float32, sparse CSR with its transpose when sparse enough (transposed once, by scipy)
    x, x_t = expression_tensors(expression_matrix(adata, genes, layer))
    return ModelInput(x=x, genes=adata.var_names[genes].to_numpy(), graph=graph, pruned=pruned,
                      x_t=x_t)


def minibatch_plan(
    adata: AnnData, *, layer: str | None, use_hvg: bool, graph_key: str,
    pruned_key: str | None, batch_size: int, random_state: int,
) -> MinibatchPlan:
    """Exact 2-hop minibatches over `adata`; the expression stays on the host."""
    genes = model_genes(adata, use_hvg)
    x = expression_matrix(adata, genes, layer)
    x = sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else np.asarray(x, np.float32)
    pruned = spatial_graph(adata, pruned_key) if pruned_key is not None else None
    # tiles follow the coordinates and the sections the graph was built with: sections that
    # share x-y ranges are never mixed into one tile
    library_key = _keys.graph_keys(adata, graph_key)[2].get("params", {}).get("library_key")
    coordinates = adata.obsm.get(_keys.graph_coordinates(adata, graph_key))
    sections = (None if library_key is None or library_key not in adata.obs
                else section_categories(adata, library_key).codes)
    plan = MinibatchPlan(spatial_graph(adata, graph_key), x, batch_size=batch_size,
                         random_state=random_state, pruned_adj=pruned, coordinates=coordinates,
                         sections=sections)
    plan.genes = adata.var_names[genes].to_numpy()
    return plan
