"""Training-recipe variants on the labelled shared data: ARI and train seconds per seed.

    python bench/recipe_sweep.py --variants paper h128_e300_cos --seeds 0 1 2 3 4 \
        --out bench/results/recipe_sweep_cpu.jsonl

Per dataset the data are preprocessed and the graph built once (our defaults), then each
(variant, seed) is trained in this process and its embedding clustered with mclust EEE
(seed 2020) into the known number of domains. Each embedding is kept under --keep (default
/tmp/recipe_sweep) so that consensus rules can be compared on the same runs
(bench/consensus_ablation.py) without training again.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

import stagate as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_worker import DATASETS, MCLUST_SEED, load  # noqa: E402

#: name -> (hidden width, epochs, learning rate, schedule)
VARIANTS = {
    "paper": (512, 1000, 1e-3, "constant"),
    "h512_e300_cos2": (512, 300, 2e-3, "cosine"),
    "h512_e200_cos2": (512, 200, 2e-3, "cosine"),
    "h256_e300_cos2": (256, 300, 2e-3, "cosine"),
    "h128_e300_cos2": (128, 300, 2e-3, "cosine"),
    "h128_e300_cos5": (128, 300, 5e-3, "cosine"),
    "h128_e500_cos2": (128, 500, 2e-3, "cosine"),
    "h128_e1000_const": (128, 1000, 1e-3, "constant"),
    "h64_e300_cos5": (64, 300, 5e-3, "cosine"),
    "h128_e150_cos5": (128, 150, 5e-3, "cosine"),
}

#: where the runs are kept (--keep), and the variant the default recipe ships
KEEP = "/tmp/recipe_sweep"
CHOSEN = "h128_e300_cos2"


def kept_file(keep: Path, dataset: str, variant: str, seed: int, *, mclust: bool = False
              ) -> Path:
    """The kept embedding of one run (or, with `mclust`, its mclust labels)."""
    return Path(keep) / f"{dataset}_{variant}_{seed}{'_mclust' if mclust else ''}.npy"


def kept_truth(keep: Path, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The kept annotation of a dataset (as text) and the mask of annotated spots."""
    truth = np.load(Path(keep) / f"{dataset}_truth.npy", allow_pickle=True)
    return truth, truth != "nan"


def add_kept_run_arguments(ap: argparse.ArgumentParser) -> None:
    """--datasets, --variant and --keep of the scripts that read kept runs."""
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--variant", default=CHOSEN)
    ap.add_argument("--keep", default=KEEP)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--variants", nargs="+", default=["paper"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--keep", default=KEEP)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    keep = Path(args.keep)
    keep.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": platform.processor() or platform.machine(),
               "threads": torch.get_num_threads()}
    for ds in args.datasets:
        a = load(ds)
        st.pp.preprocess(a)
        st.pp.spatial_network(a)
        labels_true = a.obs[DATASETS[ds]["label_key"]]
        known = labels_true.notna().to_numpy()
        np.save(keep / f"{ds}_truth.npy", labels_true.astype(str).to_numpy())
        for name in args.variants:
            hidden, epochs, lr, schedule = VARIANTS[name]
            for seed in args.seeds:
                t = time.perf_counter()
                st.tl.stagate(a, hidden_dim=hidden, n_epochs=epochs, lr=lr, lr_schedule=schedule,
                              random_state=seed, device="cpu", show_progress=False)
                train_s = time.perf_counter() - t
                z = a.obsm["STAGATE"].astype(np.float64)
                np.save(kept_file(keep, ds, name, seed), z)
                t = time.perf_counter()
                pred = st.cluster.mclust(z, DATASETS[ds]["n_domains"], model="EEE",
                                         random_state=MCLUST_SEED)
                mclust_s = time.perf_counter() - t
                np.save(kept_file(keep, ds, name, seed, mclust=True), pred)
                ari = adjusted_rand_score(labels_true[known].astype(str), pred[known])
                row = {"dataset": ds, "variant": name, "hidden": hidden, "epochs": epochs,
                       "lr": lr, "schedule": schedule, "seed": seed, "ari": round(ari, 4),
                       "train_s": round(train_s, 2), "mclust_s": round(mclust_s, 2),
                       "final_loss": float(a.uns["STAGATE"]["loss"][-1]), "machine": machine}
                print(json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
