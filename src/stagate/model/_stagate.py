"""The STAGATE estimator: fit on AnnData, then read the embedding, reconstruction, attention."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData

from .. import _keys
from .._defaults import DEFAULT_RECIPE, resolve_training
from .._logging import log
from .._validation import NotFittedError, resolve_device
from ..module import STAGATEModule
from ..train import Batch, train_loop
from ..train._distributed import init_from_env
from ..train._loop import CONVERGENCE_TOL
from ..train._minibatch import MinibatchPlan, neighbourhood_batch
from ._data import (
    ModelInput,
    expression_matrix,
    minibatch_plan,
    model_genes,
    model_input,
    spatial_graph,
)


def _arrays(m) -> list[np.ndarray]:
    """The arrays that define a dense or scipy sparse matrix, for hashing."""
    if sp.issparse(m):
        m = sp.csr_matrix(m)
        return [np.asarray(m.shape), m.indptr, m.indices, m.data]
    return [np.asarray(np.shape(m)), np.asarray(m)]


#: above this many spots, ``batch_size="auto"`` trains on exact minibatches
FULL_BATCH_MAX_SPOTS = 100_000


def resolve_batch_size(batch_size: int | str | None, n_obs: int) -> int | None:
    """Seeds per minibatch for `n_obs` spots, or None for full-batch training
    (``"auto"``: full batch up to :data:`FULL_BATCH_MAX_SPOTS`, else 8192)."""
    if batch_size == "auto":
        return None if n_obs <= FULL_BATCH_MAX_SPOTS else 8192
    if batch_size is None:
        return None
    if int(batch_size) != batch_size or batch_size < 1:
        msg = f"batch_size == {batch_size!r}, must be 'auto', None or a positive integer."
        raise ValueError(msg)
    return int(batch_size)


class STAGATE:
    """Graph attention auto-encoder for spatial domains (scikit-learn-style estimator).

    Parameters
    ----------
    recipe
        Named training settings (:data:`stagate.RECIPES`): ``"default"`` (a 128-wide
        attention layer, 300 epochs on a cosine schedule) or ``"paper"`` (the original's:
        512 wide, 1000 epochs at a constant 1e-3). Each setting below that is not None
        overrides the recipe's. (A recipe's number of voting runs is used by
        :func:`stagate.tl.consensus_domains`; this estimator is one run.)
    hidden_dim, latent_dim
        Widths of the attention layer and the embedding ([512, 30] in the paper).
    alpha
        Weight of the cell type-aware attention (0 disables; the original tutorial uses 0.5).
        Needs a pruned graph, see :func:`stagate.pp.prune_network`.
    n_epochs, lr, weight_decay, gradient_clip
        Adam settings (the paper recipe's are the PyG original's: 1000, 1e-3, 1e-4, 5). With
        `tol`, `n_epochs` is the most epochs trained.
    lr_schedule
        ``"constant"`` (the original) or ``"cosine"`` (5% linear warm-up, then a half-cosine
        decay to 1% of `lr`).
    tol
        Early stopping: training ends once the loss fell by less than this fraction over the
        last 50 epochs. None or 0 (default) trains exactly `n_epochs` epochs, as the original.
    random_state
        Seed of the weight initialisation. Training has no other randomness, so the same
        seed gives bit-identical results on CPU. On CUDA, sparse products use atomics and
        results may differ in the last bits between runs.
    device
        ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``. On CUDA, full-batch
        training without a checkpoint records its step once as a CUDA graph and replays it
        every epoch (~6x faster per epoch on small slices; ``STAGATE_CUDA_GRAPHS=0`` in the
        environment turns it off).
    batch_size
        ``"auto"``: the whole graph at once up to :data:`FULL_BATCH_MAX_SPOTS` spots, else
        minibatches of 8192 seed spots. An integer forces minibatches of that many seeds,
        each with its full 2-hop neighbourhood (exact, see :mod:`stagate.train`); None
        forces full-batch training.
    step_every
        Minibatches: ``"epoch"`` (default) accumulates the batches' gradients into one Adam
        step per epoch, so minibatch training equals full-batch training (up to summation
        order); ``"batch"`` steps after every batch.
    show_progress
        Show a tqdm bar while training.
    """

    def __init__(
        self, *, recipe: str = DEFAULT_RECIPE, hidden_dim: int | None = None,
        latent_dim: int | None = None, alpha: float = 0.0, n_epochs: int | None = None,
        lr: float | None = None, weight_decay: float | None = None,
        gradient_clip: float | None = None, random_state: int = 0, device: str = "auto",
        batch_size: int | str | None = "auto", step_every: str = "epoch",
        tol: float | None = CONVERGENCE_TOL, show_progress: bool = True,
        lr_schedule: str | None = None,
    ) -> None:
        settings = resolve_training(
            recipe, hidden_dim=hidden_dim, latent_dim=latent_dim, n_epochs=n_epochs, lr=lr,
            weight_decay=weight_decay, gradient_clip=gradient_clip, lr_schedule=lr_schedule)
        self.recipe = recipe
        self.hidden_dim, self.latent_dim = settings["hidden_dim"], settings["latent_dim"]
        self.n_epochs, self.lr = settings["n_epochs"], settings["lr"]
        self.weight_decay, self.gradient_clip = settings["weight_decay"], settings["gradient_clip"]
        self.lr_schedule = settings["lr_schedule"]
        self.alpha, self.random_state, self.device = alpha, random_state, device
        self.show_progress, self.batch_size = show_progress, batch_size
        self.step_every = step_every
        self.tol = tol or None
        self.is_trained_ = False

    def __getstate__(self) -> dict:
        """Pickle the weights as numpy arrays (a model trained in a worker process travels
        back by value, without torch's shared-memory machinery)."""
        state = self.__dict__.copy()
        module = state.pop("module_", None)
        if module is not None:
            state["module_weights_"] = {k: v.detach().cpu().numpy()
                                        for k, v in module.state_dict().items()}
        return state

    def __setstate__(self, state: dict) -> None:
        weights = state.pop("module_weights_", None)
        self.__dict__.update(state)
        if weights is not None:
            self.module_ = STAGATEModule(len(self.genes_), self.hidden_dim, self.latent_dim,
                                         self.alpha)
            self.module_.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
            self.module_.to(self.device_).eval()

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in (
            "recipe", "hidden_dim", "latent_dim", "alpha", "n_epochs", "lr", "weight_decay",
            "gradient_clip", "random_state", "device", "batch_size", "step_every", "tol",
            "lr_schedule")}

    def fit(
        self, adata: AnnData, *, layer: str | None = None, use_hvg: bool = True,
        graph_key: str = _keys.GRAPH, pruned_key: str | None = None,
        checkpoint: str | os.PathLike | None = None, keep_outputs: bool = True,
    ) -> STAGATE:
        """Train on `adata` (log-normalised expression in `layer` or X; graph in obsp).

        With ``keep_outputs=False`` only the embedding is computed after training: the
        reconstruction (spots x genes) and the attention are left out, as after
        :meth:`drop_outputs` (:meth:`infer` computes them later). The voting runs of
        :func:`stagate.tl.consensus_domains` need only their embeddings.
        """
        # the pruned graph matters only to the cell type-aware module
        pruned_key = (pruned_key or "spatial_pruned") if self.alpha > 0 else None
        self.device_ = resolve_device(self.device)
        rank, n_ranks = init_from_env(self.device_)
        if n_ranks > 1 and self.device_.type == "cuda":
            self.device_ = torch.device("cuda", torch.cuda.current_device())
        batch_size = self._resolve_batch_size(adata.n_obs)
        if n_ranks > 1 and batch_size is None:  # full batch = one batch of every spot
            batch_size = adata.n_obs
        self.batch_size_ = batch_size  # None: full batch
        generator = torch.Generator().manual_seed(int(self.random_state))
        inputs = self._inputs(adata, layer=layer, use_hvg=use_hvg, graph_key=graph_key,
                              pruned_key=pruned_key, batch_size=batch_size, rank=rank,
                              n_ranks=n_ranks)
        if batch_size is None:
            genes, n_obs, n_edges = inputs.genes, inputs.x.shape[0], inputs.graph.n_edges
            batches = [inputs.batch().to(self.device_)]
        else:
            genes, n_obs, batches, n_edges = inputs.genes, inputs.n_obs, inputs, inputs.adj.nnz
        self.genes_ = genes
        log.info("training STAGATE on %d spots x %d genes, %d edges (with self-loops), on %s, %s",
                 n_obs, len(genes), n_edges, self.device_,
                 "full batch" if batch_size is None else f"minibatches of {batch_size} spots")
        self.module_ = STAGATEModule(len(genes), self.hidden_dim, self.latent_dim, self.alpha)
        self.module_.reset_parameters(generator)
        self.module_.to(self.device_)
        t0 = time.perf_counter()
        self.history_ = train_loop(
            self.module_, batches, n_values=n_obs * len(genes), n_epochs=self.n_epochs,
            lr=self.lr, weight_decay=self.weight_decay, gradient_clip=self.gradient_clip,
            checkpoint=checkpoint, show_progress=self.show_progress, step_every=self.step_every,
            tol=self.tol, lr_schedule=self.lr_schedule,
            fingerprint=None if checkpoint is None else self._fingerprint(
                adata, layer=layer, use_hvg=use_hvg, graph_key=graph_key, pruned_key=pruned_key,
                batch_size=batch_size),
        )
        self.train_seconds_ = time.perf_counter() - t0
        self._infer_outputs(inputs, batches[0] if batch_size is None else None,
                            embedding_only=not keep_outputs)
        self.is_trained_ = True
        return self

    def _inputs(self, adata: AnnData, *, layer, use_hvg, graph_key, pruned_key, batch_size,
                rank: int = 0, n_ranks: int = 1) -> ModelInput | MinibatchPlan:
        """The model's view of `adata`: the whole graph, or the plan of minibatches."""
        if batch_size is None:
            return model_input(adata, layer=layer, use_hvg=use_hvg, graph_key=graph_key,
                               pruned_key=pruned_key)
        plan = minibatch_plan(adata, layer=layer, use_hvg=use_hvg, graph_key=graph_key,
                              pruned_key=pruned_key, batch_size=batch_size,
                              random_state=self.random_state)
        plan.rank, plan.n_ranks = rank, n_ranks
        return plan

    def _infer_outputs(self, inputs: ModelInput | MinibatchPlan, batch: Batch | None, *,
                       embedding_only: bool = False) -> None:
        if isinstance(inputs, MinibatchPlan):
            self._infer_batched(inputs, embedding_only=embedding_only)
        else:
            self._infer(batch if batch is not None else inputs.batch().to(self.device_), inputs,
                        embedding_only=embedding_only)

    def infer(self, adata: AnnData, *, layer: str | None = None, use_hvg: bool = True,
              graph_key: str = _keys.GRAPH, pruned_key: str | None = None) -> STAGATE:
        """Recompute the embedding, reconstruction and attention of the data it was fitted
        on (after :meth:`drop_outputs`), the same way :meth:`fit` does at its end."""
        self._check_fitted()
        pruned_key = (pruned_key or "spatial_pruned") if self.alpha > 0 else None
        inputs = self._inputs(adata, layer=layer, use_hvg=use_hvg, graph_key=graph_key,
                              pruned_key=pruned_key, batch_size=self.batch_size_)
        self.module_.to(self.device_)
        self._infer_outputs(inputs, None)
        return self

    def drop_outputs(self) -> None:
        """Free the reconstruction and attention (large) and keep the weights and embedding;
        :meth:`infer` brings them back."""
        self.reconstruction_ = self.attention_ = None

    def _fingerprint(self, adata: AnnData, *, layer, use_hvg, graph_key, pruned_key,
                     batch_size) -> dict:
        """What a checkpoint belongs to: the data (shape, genes, a hash of the expression and
        of the graph), every training setting but the epoch budget (a resumed run may train
        on), the seed and the version."""
        from .. import __version__

        genes = model_genes(adata, use_hvg)
        x = expression_matrix(adata, genes, layer)
        digest = hashlib.blake2b(digest_size=16)
        for part in _arrays(x) + _arrays(spatial_graph(adata, graph_key)) + (
                _arrays(spatial_graph(adata, pruned_key)) if pruned_key else []):
            digest.update(np.ascontiguousarray(part).view(np.uint8).data)
        digest.update("\x00".join(adata.var_names[genes]).encode())
        # the epoch budget may grow on resume; the device does not change the result on CPU;
        # the batch size counts as resolved ("auto" -> full batch or a number)
        # (a decaying learning rate depends on the budget, so then the budget counts too)
        budget_free = ("n_epochs",) if self.lr_schedule == "constant" else ()
        settings = {k: v for k, v in self.get_params().items()
                    if k not in (*budget_free, "recipe", "tol", "device", "batch_size")}
        return settings | {"n_spots": int(adata.n_obs), "n_genes": int(genes.sum()),
                           "data_hash": digest.hexdigest(), "batch_size": batch_size,
                           "version": __version__}

    def _resolve_batch_size(self, n_obs: int) -> int | None:
        return resolve_batch_size(self.batch_size, n_obs)

    @torch.no_grad()
    def _infer_batched(self, plan: MinibatchPlan, *, embedding_only: bool = False) -> None:
        """Embedding, reconstruction and attention, batch by batch (2 hops each)."""
        n = plan.n_obs
        z = np.empty((n, self.latent_dim), dtype=np.float32)
        x_hat = None if embedding_only else np.empty((n, len(self.genes_)), dtype=np.float32)
        rows, cols, vals = [], [], []
        for seeds in plan.chunks:  # compact tiles: thin halos
            batch, nodes = neighbourhood_batch(seeds, plan.adj, plan.x,
                                               pruned_adj=plan.pruned_adj)
            batch = batch.to(self.device_)
            enc = self.module_.encode(batch.x, batch.graph, **batch.inputs)
            z[seeds] = enc.z[: seeds.size].cpu().numpy()
            if embedding_only:
                continue
            h3 = self.module_.decode_hidden(enc, batch.graph)
            x_hat[seeds] = self.module_.reconstruct(h3[: seeds.size]).clamp_min_(0).cpu().numpy()
            dst, src = batch.graph.dst.cpu().numpy(), batch.graph.src.cpu().numpy()
            mine = dst < seeds.size  # the seeds' rows are complete
            rows.append(nodes[dst[mine]])
            cols.append(nodes[src[mine]])
            vals.append(enc.alpha[torch.as_tensor(mine, device=enc.alpha.device)].float()
                        .cpu().numpy())
        self.embedding_, self.reconstruction_ = z, x_hat
        if embedding_only:
            self.attention_ = None
            return
        att = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(n, n))
        att.sort_indices()
        self.attention_ = att

    @torch.no_grad()
    def _infer(self, batch: Batch, data: ModelInput, *, embedding_only: bool = False) -> None:
        enc = self.module_.encode(batch.x, batch.graph, **batch.inputs)
        self.embedding_ = enc.z.cpu().numpy()
        if embedding_only:
            self.reconstruction_ = self.attention_ = None
            return
        x_hat = self.module_.reconstruct(self.module_.decode_hidden(enc, batch.graph))
        self.reconstruction_ = x_hat.clamp_min_(0).cpu().numpy()  # denoised: negatives -> 0
        self.attention_ = data.graph.to_scipy(enc.alpha.float())

    def _check_fitted(self) -> None:
        if not self.is_trained_:
            msg = "This STAGATE model is not fitted yet. Call fit(adata) first."
            raise NotFittedError(msg)

    def save(self, dir_path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Save parameters and weights to `dir_path/model.pt`."""
        self._check_fitted()
        path = Path(dir_path)
        path.mkdir(parents=True, exist_ok=True)
        target = path / "model.pt"
        if target.exists() and not overwrite:
            msg = f"{target} exists; pass overwrite=True to replace it."
            raise FileExistsError(msg)
        tmp = target.with_name(target.name + ".tmp")
        torch.save({"params": self.get_params(), "genes": list(self.genes_),
                    "state": self.module_.state_dict(), "history": self.history_}, tmp)
        os.replace(tmp, target)

    @classmethod
    def load(cls, dir_path: str | os.PathLike) -> STAGATE:
        """Rebuild a model saved with :meth:`save` (for inference on new data via `transform`)."""
        state = torch.load(Path(dir_path) / "model.pt", weights_only=False)
        # models saved before recipes existed trained at a constant learning rate
        model = cls(**({"lr_schedule": "constant"} | state["params"]))
        model.genes_ = np.asarray(state["genes"])
        model.module_ = STAGATEModule(len(model.genes_), model.hidden_dim, model.latent_dim,
                                      model.alpha)
        model.module_.load_state_dict(state["state"])
        model.module_.eval()
        model.history_ = state["history"]
        model.device_ = torch.device("cpu")
        model.is_trained_ = True
        return model

    @torch.no_grad()
    def transform(self, adata: AnnData, *, layer: str | None = None,
                  graph_key: str = _keys.GRAPH, pruned_key: str = "spatial_pruned") -> np.ndarray:
        """Embed `adata` (same genes as in training) with the trained weights.

        `adata` needs the spatial network (and, for a cell type-aware model, the pruned one).
        """
        self._check_fitted()
        missing = np.setdiff1d(self.genes_, adata.var_names)
        if missing.size:
            msg = (f"{missing.size} model genes are missing from adata "
                   f"(e.g. {missing[:3].tolist()}).")
            raise ValueError(msg)
        sub = adata[:, self.genes_]
        data = model_input(sub, layer=layer, use_hvg=False, graph_key=graph_key,
                           pruned_key=pruned_key if self.alpha > 0 else None)
        batch = data.batch().to(self.device_)
        self.module_.to(self.device_)
        return self.module_.encode(batch.x, batch.graph, **batch.inputs).z.cpu().numpy()

