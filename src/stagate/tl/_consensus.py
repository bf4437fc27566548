"""tl.consensus_domains: several short training runs, each clustered, then a majority vote."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from anndata import AnnData

from .. import _keys
from .._docs import DOC_ADATA, DOC_COPY, doc_params
from .._logging import log
from .._validation import check_n_domains
from ..cluster._consensus import consensus_vote, match_labels
from ..model import STAGATE
from ._domains import cluster_embedding, set_labels
from ._stagate import write_results


def _train_runs(adata: AnnData, seeds: list[int], stagate_kwds: dict, fit_kwds: dict,
                checkpoint) -> list[STAGATE]:
    """Fit one model per seed, one after another (each uses every core).

    Training two runs side by side on one thread each was measured and dropped: on STARmap
    (1,207 cells, 2 cores) 4.9 s for two runs against 5.5 s one after another
    (bench/README.md), not worth threads sharing the process's torch settings."""
    models = []
    for run, seed in enumerate(seeds):
        log.info("consensus run %d of %d (seed %d)", run + 1, len(seeds), seed)
        model = STAGATE(random_state=seed, **stagate_kwds)
        models.append(model.fit(adata, checkpoint=run_checkpoint(checkpoint, run), **fit_kwds))
    return models


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
    layer: str | None = None,
    graph_key: str = _keys.GRAPH,
    pruned_key: str = "spatial_pruned",
    checkpoint: str | os.PathLike | None = None,
    key_added: str = _keys.DOMAIN,
    embedding_key: str = _keys.EMBEDDING,
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
    method, cluster_model, cluster_random_state
        Clustering of each run, as `method`, `model` and `random_state` of
        :func:`stagate.tl.domains`.
    layer, graph_key, pruned_key
        As in :func:`stagate.tl.stagate`.
    checkpoint
        Each run saves and resumes its own file beside this path (``NAME.runK.pt``), so an
        interrupted consensus resumes where it stopped.
    key_added
        obs column of the consensus domains.
    embedding_key
        Key of the reference run's outputs (as `key_added` of :func:`stagate.tl.stagate`).
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
        its mean (how stable the answer is), seconds spent training and clustering.
    The reference run's outputs under `embedding_key`, as :func:`stagate.tl.stagate` writes
    them, plus ``uns['{{embedding_key}}']['runs']`` (seed, final loss, seconds per run).
    """
    n_domains = check_n_domains(n_domains, adata.n_obs)
    if int(n_runs) != n_runs or n_runs < 1:
        from .._validation import StagateInputError

        msg = f"n_runs == {n_runs!r}, must be a positive integer."
        raise StagateInputError(msg)
    seeds = run_seeds(random_state, int(n_runs))
    fit_kwds = {"layer": layer, "graph_key": graph_key,
                "pruned_key": pruned_key if stagate_kwds.get("alpha", 0) > 0 else None}
    t = time.perf_counter()
    models = _train_runs(adata, seeds, stagate_kwds, fit_kwds, checkpoint)
    train_s = time.perf_counter() - t
    partitions, cluster_params = [], []
    cluster_s = 0.0
    for model in models:
        t = time.perf_counter()
        labels, params = cluster_embedding(
            model.embedding_.astype(np.float64), n_domains, method=method,
            model=cluster_model, random_state=cluster_random_state)
        cluster_s += time.perf_counter() - t
        partitions.append(labels)
        cluster_params.append(params)
        model.drop_outputs()  # the reference run's outputs are recomputed below
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
                      "train_seconds": train_s, "cluster_seconds": cluster_s},
    }
    return target if copy else None

