"""torch.distributed with gloo on 2 CPU processes: the same loss trajectory as one process."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import stagate as sg

KW = {"n_epochs": 4, "hidden_dim": 32, "latent_dim": 6, "device": "cpu",
      "show_progress": False, "batch_size": 150, "random_state": 2}


def section():
    a = sg.datasets.simulate(400, n_genes=200, n_domains=4, random_state=1)
    sg.pp.preprocess(a)
    sg.pp.spatial_network(a)
    return a


def _worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        m = sg.STAGATE(**KW).fit(section())
        if rank == 0:
            np.savez(out, history=np.asarray(m.history_), embedding=m.embedding_)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_two_gloo_processes_match_one(tmp_path):
    out = str(tmp_path / "ddp.npz")
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'pg'}", out), nprocs=2, join=True)
    ddp = np.load(out)
    single = sg.STAGATE(**KW).fit(section())
    np.testing.assert_allclose(ddp["history"], single.history_, rtol=1e-5)
    np.testing.assert_allclose(ddp["embedding"], single.embedding_, rtol=1e-3, atol=1e-4)
