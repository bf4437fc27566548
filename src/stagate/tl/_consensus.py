"""tl.consensus_domains: several short training runs, each clustered, then a majority vote."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from anndata import AnnData

from .. import _keys
from .._defaults import DEFAULT_RECIPE, recipe
from .._docs import DOC_ADATA, DOC_COPY, doc_params
from .._logging import log
from .._validation import StagateInputError, check_n_domains, resolve_device
from ..cluster._consensus import consensus_vote, match_labels
from ..model import STAGATE
from ..train._workers import can_fork, cpu_cores, map_in_workers
from ._domains import cluster_embedding, set_labels
from ._stagate import write_results


@dataclass
class _Run:
    """One voting run: its model (embedding kept, reconstruction dropped), its clustering,
    and the seconds each took."""

    model: STAGATE
    labels: np.ndarray
    cluster_params: dict
    train_seconds: float
    cluster_seconds: float


def _train_and_cluster_runs(adata: AnnData, seeds: list[int], stagate_kwds: dict,
                            fit_kwds: dict, cluster_kwds: dict, checkpoint,
                            n_jobs: int | None) -> tuple[list[_Run], int, str]:
    """Train and cluster one run per seed; return the runs, the worker processes used and
    what they did side by side (``"runs"``, ``"clustering"`` or ``"nothing"``).

    On CPU, with full-batch training, the runs go side by side to forked worker processes,
    one thread each (:mod:`stagate.train._workers`; DLPFC slice: two runs in 15 s instead of
    21 s one after another on 2 cores). Whole rounds go to the workers; the runs of a last,
    partial round would leave cores idle on one thread each, so they run here afterwards on
    every core. Otherwise (GPU, minibatches, torchrun, ``n_jobs=1``, no fork) every run
    trains here, one after another; their clusterings (CPU, one core each) then go side by
    side to worker processes where they can (not under torchrun, nor with ``n_jobs=1``).
    """
    workers = _n_workers(adata, len(seeds), stagate_kwds, n_jobs)

    def train(item: tuple[int, int], in_worker: bool = False) -> tuple[STAGATE, float]:
        run, seed = item
        if not in_worker:
            log.info("consensus run %d of %d (seed %d)", run + 1, len(seeds), seed)
        t = time.perf_counter()
        model = STAGATE(random_state=seed, **stagate_kwds | (
            {"show_progress": False} if in_worker else {}))
        # only the embedding: the reference run's reconstruction and attention are computed
        # at the end
        model.fit(adata, checkpoint=run_checkpoint(checkpoint, run), keep_outputs=False,
                  **fit_kwds)
        return model, time.perf_counter() - t

    def cluster(embedding: np.ndarray) -> tuple[np.ndarray, dict, float]:
        t = time.perf_counter()
        labels, params = cluster_embedding(embedding.astype(np.float64), **cluster_kwds)
        return labels, params, time.perf_counter() - t

    def one_run(item: tuple[int, int], in_worker: bool = False) -> _Run:
        model, train_s = train(item, in_worker)
        labels, params, cluster_s = cluster(model.embedding_)
        return _Run(model, labels, params, train_s, cluster_s)

    def done(index: int, result: _Run) -> None:
        log.info("run %d of %d (seed %d): %d epochs in %.1f s, final loss %.5f", index + 1,
                 len(seeds), seeds[index], len(result.model.history_), result.train_seconds,
                 result.model.history_[-1] if result.model.history_ else float("nan"))

    items = list(enumerate(seeds))
    runs: list[_Run] = []
    if workers > 1:
        n_pool = len(items) // workers * workers
        log.info("training %d runs side by side in %d worker processes, one thread each "
                 "(n_jobs=1 / --jobs 1: one after another in this process)", n_pool, workers)
        runs = map_in_workers(partial(one_run, in_worker=True), items[:n_pool], workers,
                              on_result=done)
        items = items[n_pool:]
    cluster_workers = _n_cluster_workers(len(items), n_jobs) if workers == 1 else 1
    if cluster_workers > 1:
        # training stays here (GPU, minibatches): the runs train one after another, then
        # their clusterings (mclust, one CPU core each) go side by side to worker processes
        trained = [train(item) for item in items]
        log.info("clustering %d runs side by side in %d worker processes", len(items),
                 cluster_workers)
        clustered = map_in_workers(cluster, [m.embedding_ for m, _ in trained],
                                   cluster_workers)
        runs += [_Run(m, labels, params, train_s, cluster_s) for (m, train_s), (
            labels, params, cluster_s) in zip(trained, clustered, strict=True)]
        for i, run in enumerate(runs[-len(items):]):
            done(items[i][0], run)
        return runs, cluster_workers, "clustering"
    runs += [one_run(item) for item in items]
    return runs, workers, "runs" if workers > 1 else "nothing"


def _n_workers(adata: AnnData, n_runs: int, stagate_kwds: dict, n_jobs: int | None) -> int:
    """Worker processes that train `n_runs` runs: as :func:`_n_cluster_workers`, and 1
    unless the runs train on CPU on the full batch (else they stay in this process)."""
    from ..model._stagate import resolve_batch_size

    if n_jobs is not None and (int(n_jobs) != n_jobs or n_jobs < 1):
        msg = f"n_jobs == {n_jobs!r}, must be a positive integer or None (one per core)."
        raise StagateInputError(msg)
    full_batch = resolve_batch_size(stagate_kwds.get("batch_size", "auto"), adata.n_obs) is None
    on_cpu = resolve_device(stagate_kwds.get("device", "auto")).type == "cpu"
    return _n_cluster_workers(n_runs, n_jobs) if on_cpu and full_batch else 1


def _n_cluster_workers(n_runs: int, n_jobs: int | None) -> int:
    """Worker processes for `n_runs` tasks: ``n_jobs`` (None: one per core), at most one
    per task; 1 where they cannot be forked or under torchrun."""
    from ..train._distributed import world

    wanted = min(n_runs, cpu_cores() if n_jobs is None else int(n_jobs))
    return wanted if wanted > 1 and can_fork() and world()[1] == 1 else 1


def run_seeds(random_state: int, n_runs: int) -> list[int]:
    """The seeds of `n_runs` runs made from one seed (numpy's SeedSequence): runs of
    different base seeds share no seed, so their results are independent."""
    state = np.random.SeedSequence(int(random_state)).generate_state(n_runs, dtype=np.uint32)
    return [int(s) % (2**31 - 1) for s in state]


def checkpoint_beside(checkpoint: str | os.PathLike | None, tag: str) -> Path | None:
    """A checkpoint file of its own beside `checkpoint`, for one part of a run (a section,
    a voting run): ``ckpt.pt`` -> ``ckpt.{tag}.pt``; None stays None."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}.{tag}{path.suffix}")


def run_checkpoint(checkpoint: str | os.PathLike | None, run: int) -> Path | None:
    """Run `run`'s own checkpoint file beside `checkpoint` (``ckpt.pt`` -> ``ckpt.run2.pt``)."""
    return checkpoint_beside(checkpoint, f"run{run}")


@doc_params(adata=DOC_ADATA, copy=DOC_COPY)
def consensus_domains(
    adata: AnnData,
    n_domains: int,
    *,
    n_runs: int = 5,
    random_state: int = 0,
    method: str = "mclust",
    cluster_model: str = "EEE",
    cluster_random_state: int | None = None,
    cluster_inits: int | None = None,
    layer: str | None = None,
    graph_key: str = _keys.GRAPH,
    pruned_key: str = "spatial_pruned",
    checkpoint: str | os.PathLike | None = None,
    key_added: str = _keys.DOMAIN,
    embedding_key: str = _keys.EMBEDDING,
    n_jobs: int | None = None,
    copy: bool = False,
    **stagate_kwds,
) -> AnnData | None:
    """Train STAGATE `n_runs` times, cluster each run, and let the runs vote on the domains.

    One training run's domains depend on its random start; the vote of several runs does much
    less. Each run has its own seed (derived from `random_state`), is trained as
    :func:`stagate.tl.stagate` trains and clustered as :func:`stagate.tl.domains` clusters.
    The partitions are matched to the run that agrees most with all others (highest mean
    ARI, the *reference* run) by the Hungarian algorithm, and each spot takes the label most
    runs gave it (ties: the reference run's). The embedding, denoised expression and attention
    stored are the reference run's, so the UMAP and attention maps show one coherent model.

    Parameters
    ----------
    {adata}
    n_domains
        Number of domains.
    n_runs
        Training runs that vote.
    random_state
        Base seed; the same base seed gives bit-identical results on CPU.
    method, cluster_model, cluster_random_state, cluster_inits
        Clustering of each run, as `method`, `model`, `random_state` and `n_init` of
        :func:`stagate.tl.domains`. `cluster_inits` None: the recipe's (default recipe: 5
        mclust starts, keeping the highest BIC; they matter above 2000 spots).
    layer, graph_key, pruned_key
        As in :func:`stagate.tl.stagate`.
    checkpoint
        Each run saves and resumes its own file beside this path (``NAME.runK.pt``), so an
        interrupted consensus resumes where it stopped.
    key_added
        obs column of the consensus domains.
    embedding_key
        Key of the reference run's outputs (as `key_added` of :func:`stagate.tl.stagate`).
    n_jobs
        Worker processes that train and cluster runs side by side on CPU (None: one per
        core, at most one per run; 1: one run after another in this process, each on every
        core). Each worker runs on one thread. A run computes the same thing wherever it
        trains; on DLPFC 151673 the embeddings and domains were bit-identical with and
        without workers, though torch does not promise that for every operation and thread
        count. Runs on a GPU, with minibatches or under torchrun always train one after
        another in this process; then (not under torchrun) their clusterings go side by
        side to up to `n_jobs` worker processes.
    {copy}
    **stagate_kwds
        Training settings of :class:`stagate.model.STAGATE` (`hidden_dim`, `n_epochs`, `lr`,
        `lr_schedule`, `device`, `batch_size`, ...).

    Returns
    -------
    ``obs['{{key_added}}']``
        Consensus domains ("1".."K").
    ``obs['{{key_added}}_support']``
        Per spot, the fraction of runs that gave it its consensus domain.
    ``obsm['{{key_added}}_runs']``
        Each run's labels (spots x runs), matched to the consensus numbering.
    ``uns['{{key_added}}']``
        ``params`` and ``consensus``: run seeds, reference run, pairwise ARI between runs and
        its mean (how stable the answer is), the seconds the runs spent training and
        clustering (summed over runs), the wall-clock seconds of all runs, the number of
        worker processes used and what they did side by side (``side_by_side``: ``"runs"``,
        ``"clustering"`` or ``"nothing"``).
    The reference run's outputs under `embedding_key`, as :func:`stagate.tl.stagate` writes
    them, plus ``uns['{{embedding_key}}']['runs']`` (seed, final loss, seconds per run).
    """
    n_domains = check_n_domains(n_domains, adata.n_obs)
    if int(n_runs) != n_runs or n_runs < 1:
        msg = f"n_runs == {n_runs!r}, must be a positive integer."
        raise StagateInputError(msg)
    seeds = run_seeds(random_state, int(n_runs))
    fit_kwds = {"layer": layer, "graph_key": graph_key,
                "pruned_key": pruned_key if stagate_kwds.get("alpha", 0) > 0 else None}
    if cluster_inits is None:
        cluster_inits = recipe(stagate_kwds.get("recipe", DEFAULT_RECIPE)).cluster_inits
    cluster_kwds = {"n_domains": n_domains, "method": method, "model": cluster_model,
                    "random_state": cluster_random_state, "n_init": cluster_inits}
    t = time.perf_counter()
    runs, workers, side_by_side = _train_and_cluster_runs(
        adata, seeds, stagate_kwds, fit_kwds, cluster_kwds, checkpoint, n_jobs)
    runs_s = time.perf_counter() - t
    models = [r.model for r in runs]
    partitions = [r.labels for r in runs]
    cluster_params = [r.cluster_params for r in runs]
    # with workers, these are the runs' own seconds, summed over runs running side by side
    train_s = float(sum(r.train_seconds for r in runs))
    cluster_s = float(sum(r.cluster_seconds for r in runs))
    labels, info = consensus_vote(np.stack(partitions))
    ref = info["reference"]
    log.info("consensus of %d runs: mean pairwise ARI %.3f, reference run %d; %.1f%% of spots "
             "had every run's vote", len(seeds), info["mean_agreement"], ref + 1,
             100 * float((info["support"] == 1).mean()))
    reference = models[ref].infer(adata, **fit_kwds)
    target = adata.copy() if copy else adata
    write_results(target, reference, key_added=embedding_key)
    target.uns[embedding_key]["runs"] = {
        "seeds": np.asarray(seeds), "reference": ref,
        "final_loss": np.asarray([m.history_[-1] for m in models]),
        "train_seconds": np.asarray([m.train_seconds_ for m in models]),
    }
    set_labels(target, labels, key_added)
    target.obs[f"{key_added}_support"] = info["support"].astype(np.float32)
    target.obsm[f"{key_added}_runs"] = np.stack(
        [match_labels(p, labels) for p in partitions], axis=1).astype(np.int32) + 1
    target.uns[key_added] = {
        "params": {"method": method, "use_rep": embedding_key, "n_domains": int(labels.max() + 1),
                   "consensus": "majority vote"} | cluster_params[ref],
        "consensus": {"n_runs": len(seeds), "seeds": np.asarray(seeds), "reference": ref,
                      "agreement": info["agreement"],
                      "mean_agreement": info["mean_agreement"],
                      "mean_support": float(info["support"].mean()),
                      "train_seconds": train_s, "cluster_seconds": cluster_s,
                      "runs_seconds": runs_s, "workers": workers,
                      "side_by_side": side_by_side},
    }
    return target if copy else None

