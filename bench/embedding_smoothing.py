"""Tried and not shipped: average each spot's embedding over its spatial neighbours before
clustering, then cluster each run and vote (on the runs bench/recipe_sweep.py kept).

    python bench/embedding_smoothing.py 1.0 25          # lambda, runs (groups of 5)
    python bench/embedding_smoothing.py 1.0 25 --self   # neighbourhood mean incl. the spot

z' = (1 - lambda) z + lambda * mean of the neighbours' z (spatial graph, unweighted); with
--self the mean includes the spot itself. Prints single-run and 5-run-vote ARI per dataset.
"""

import statistics as S
import sys
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score as ari

import stagate as st
from stagate.cluster import consensus_vote

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_worker import load  # noqa: E402
from recipe_sweep import CHOSEN, KEEP, kept_file, kept_truth  # noqa: E402

warnings.filterwarnings("ignore")
keep = Path(KEEP)
lams = [float(x) for x in sys.argv[1].split(",")]
n_runs = int(sys.argv[2])
with_self = "--self" in sys.argv
for ds in ["dlpfc_151673", "dlpfc_151676", "starmap_visual_cortex"]:
    a = load(ds)
    st.pp.preprocess(a)
    st.pp.spatial_network(a)
    adj = (sp.csr_matrix(a.obsp["spatial_connectivities"]) > 0).astype(float)
    if with_self:
        adj = adj + sp.identity(adj.shape[0])
    deg = np.asarray(adj.sum(1)).ravel()
    deg[deg == 0] = 1
    mean = sp.diags(1 / deg) @ adj
    truth, known = kept_truth(keep, ds)
    for lam in lams:
        single, parts = [], []
        for s in range(n_runs):
            z = np.load(kept_file(keep, ds, CHOSEN, s))
            lab = st.cluster.mclust((1 - lam) * z + lam * (mean @ z), 7, model="EEE",
                                    random_state=2020)
            parts.append(lab)
            single.append(ari(truth[known], lab[known]))
        votes = [ari(truth[known], consensus_vote(np.stack(parts[g * 5:(g + 1) * 5]))[0][known])
                 for g in range(n_runs // 5)]
        print(ds, lam, "self" if with_self else "", "single", round(S.mean(single), 3),
              round(S.stdev(single), 3), "vote", round(S.mean(votes), 3),
              round(S.stdev(votes), 3) if len(votes) > 1 else "", flush=True)
