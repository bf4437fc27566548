"""ARI after k epochs: train once, cluster snapshots (checkpoint/resume makes them exact).

    python bench/epoch_sweep.py DATASET SEED LR 100,200,500,1000 >> results/epoch_sweep_cpu.jsonl

Each snapshot's embedding is clustered with mclust EEE (seed 2020) into 7 domains and scored
against `layer`. Training with checkpoints resumed to k epochs equals uninterrupted training
to k epochs (tests/test_model.py), so one run gives the whole curve. Early stopping is off.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

import stagate as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_worker import load  # noqa: E402


def main() -> None:
    warnings.filterwarnings("ignore")
    ds, seed, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    epochs = [int(e) for e in sys.argv[4].split(",")]
    a = load(ds)
    st.pp.preprocess(a)
    st.pp.spatial_network(a)
    ckpt = Path(tempfile.mkdtemp()) / "ckpt.pt"
    t0 = time.perf_counter()
    known = a.obs["layer"].notna().to_numpy()
    for k in epochs:
        st.tl.stagate(a, n_epochs=k, lr=lr, tol=None, random_state=seed, device="cpu",
                      checkpoint=ckpt, show_progress=False)
        labels = st.cluster.mclust(a.obsm["STAGATE"].astype(np.float64), 7, model="EEE",
                                   random_state=2020)
        ari = adjusted_rand_score(a.obs["layer"][known].astype(str), labels[known])
        print(json.dumps({"ds": ds, "seed": seed, "lr": lr, "epoch": k, "ari": ari,
                          "t": time.perf_counter() - t0}), flush=True)
    os.remove(ckpt)


if __name__ == "__main__":
    main()
