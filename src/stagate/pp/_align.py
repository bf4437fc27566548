"""Rigid alignment of consecutive sections from expression and position.

Each section is aligned onto its (already aligned) predecessor. The correspondence between
the two comes from fused Gromov-Wasserstein optimal transport (POT's
``fused_gromov_wasserstein``, as PASTE does): a plan that matches spots with similar
expression *and* preserves the distances between spots within each section, which is what
recovers a rotation that expression alone cannot see. The rigid transform is then the
weighted least-squares (Kabsch) fit to the plan, polished by rounds of trimmed
nearest-neighbour matching on every spot (ICP), where each spot is matched among its nearest
reference spots to the one most similar in expression, so that domain borders pin the
transform on a lattice.

Why POT: compared with moscot (the same transport problems, but on JAX/ott-jax, several
hundred MB of dependencies) and position-only registration (pycpd, probreg: no expression, so
a round tissue's rotation is a guess), POT needs only numpy and scipy, is the library PASTE is
built on, and on a subsample of ~1,500 spots per section takes seconds on a laptop CPU. The
transform estimated from a subsample applies to every spot, so the cost does not grow with
the section's size beyond the PCA and the ICP rounds (k-d tree queries).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from .. import _keys
from .._docs import DOC_ADATA, DOC_COPY, DOC_RANDOM_STATE, DOC_SPATIAL_KEY, doc_params
from .._logging import log
from .._validation import StagateInputError, check_coordinates
from ._sections import section_categories


@doc_params(adata=DOC_ADATA, copy=DOC_COPY, random_state=DOC_RANDOM_STATE,
            spatial_key=DOC_SPATIAL_KEY)
def align_sections(
    adata: AnnData,
    library_key: str = _keys.SECTION,
    *,
    section_order: Sequence[str] | None = None,
    spatial_key: str = _keys.SPATIAL,
    use_rep: str | None = None,
    n_pcs: int = 30,
    n_points: int = 1500,
    alpha: float = 0.5,
    allow_reflection: bool = False,
    icp_rounds: int = 40,
    random_state: int = 0,
    key_added: str = _keys.ALIGNED,
    copy: bool = False,
) -> AnnData | None:
    """Align each section rigidly onto the previous one (rotation, translation, reflection).

    The first section in `section_order` stays where it is; every following one is moved
    onto its aligned predecessor. ``obsm[spatial_key]`` is never changed: the aligned
    coordinates go to ``obsm[key_added]``. Coordinates are assumed to share one unit across
    sections (no scaling is estimated).

    Parameters
    ----------
    {adata}
    library_key
        Column of ``obs`` naming each spot's section.
    section_order
        Order of the sections (consecutive sections next to each other). Default: the natural
        order of the labels.
    {spatial_key}
    use_rep
        Expression representation in ``obsm`` to match spots by. Default: the first `n_pcs`
        principal components of ``X`` (log-normalised, see :func:`stagate.pp.preprocess`),
        computed jointly over all sections, averaged over each spot's 6 nearest spots in its
        own section to damp single-spot noise.
    n_pcs
        Principal components for the default representation.
    n_points
        Spots per section sampled for the transport problem (its cost grows with the cube).
    alpha
        Weight of the structure term (distances within sections) against the expression term
        in the fused transport (0: expression only; 1: geometry only).
    allow_reflection
        Also consider mirror images (a section mounted upside down).
    icp_rounds
        Rounds of trimmed nearest-neighbour refinement on all spots (0 to skip).
    {random_state}
    key_added
        ``obsm`` key of the aligned coordinates, and ``uns`` key of the transforms.
    {copy}

    Returns
    -------
    ``obsm['{{key_added}}']``
        Aligned coordinates (a third column of `spatial_key`, if any, is kept as it is).
    ``uns['{{key_added}}']``
        ``transforms`` (per section, the 3 x 3 homogeneous matrix mapping its original x-y to
        the aligned frame), ``section_order`` and ``params``.
    """
    try:
        import ot  # noqa: F401
    except ImportError:  # pragma: no cover - a declared dependency
        msg = "align_sections needs POT (pip install pot)."
        raise StagateInputError(msg) from None
    if not 0 <= alpha <= 1:
        msg = f"alpha == {alpha}, must be in [0, 1]."
        raise StagateInputError(msg)
    if n_points < 10:
        msg = f"n_points == {n_points}, must be at least 10."
        raise StagateInputError(msg)
    coords = check_coordinates(adata, spatial_key)
    sections = section_categories(adata, library_key, section_order)
    order = list(sections.categories)
    if len(order) < 2:
        msg = f"adata.obs[{library_key!r}] holds a single section; there is nothing to align."
        raise StagateInputError(msg)
    members = [np.flatnonzero(sections.codes == c) for c in range(len(order))]
    for name, idx in zip(order, members, strict=True):
        if idx.size < 3:
            msg = f"Section {name!r} has {idx.size} spot(s); at least 3 are needed to align it."
            raise StagateInputError(msg)
    features = _features(adata, use_rep, n_pcs, coords, members, random_state)

    rng = np.random.default_rng(random_state)
    aligned = coords.copy()
    transforms = {order[0]: np.eye(3)}
    for k in range(1, len(order)):
        ref, mov = members[k - 1], members[k]
        rot, shift = _fgw_rigid(aligned[ref, :2], features[ref], coords[mov, :2], features[mov],
                                n_points=n_points, alpha=alpha, reflection=allow_reflection,
                                rng=rng)
        rot, shift = _icp(aligned[ref, :2], coords[mov, :2], rot, shift, rounds=icp_rounds,
                          reflection=allow_reflection, ref_f=features[ref], mov_f=features[mov])
        aligned[mov, :2] = coords[mov, :2] @ rot.T + shift
        m = np.eye(3)
        m[:2, :2], m[:2, 2] = rot, shift
        transforms[order[k]] = m
        angle = np.degrees(np.arctan2(rot[1, 0], rot[0, 0]))
        log.info("section %s onto %s: rotation %.1f deg%s, shift (%.4g, %.4g)", order[k],
                 order[k - 1], angle, " (mirrored)" if np.linalg.det(rot) < 0 else "", *shift)

    target = adata.copy() if copy else adata
    target.obsm[key_added] = aligned
    target.uns[key_added] = {
        "transforms": transforms,
        "section_order": np.asarray(order, dtype=object),
        "params": {"library_key": library_key, "spatial_key": spatial_key,
                   "use_rep": use_rep or "X_pca (smoothed)", "n_points": n_points,
                   "alpha": alpha, "allow_reflection": allow_reflection,
                   "icp_rounds": icp_rounds, "random_state": random_state},
    }
    log.info("added obsm[%r] and uns[%r]", key_added, key_added)
    return target if copy else None


def _features(adata: AnnData, use_rep: str | None, n_pcs: int, coords: np.ndarray,
              members: list[np.ndarray], random_state: int) -> np.ndarray:
    """Expression features per spot: `use_rep`, or joint PCA smoothed within each section."""
    if use_rep is not None:
        if use_rep not in adata.obsm:
            msg = f"use_rep {use_rep!r} is not in adata.obsm (has {list(adata.obsm)})."
            raise StagateInputError(msg)
        return np.asarray(adata.obsm[use_rep], dtype=np.float64)
    from sklearn.decomposition import PCA, TruncatedSVD

    x = adata.X
    if x is None or adata.n_vars < 2:
        msg = "align_sections needs expression in adata.X (log-normalised) or use_rep=..."
        raise StagateInputError(msg)
    if "highly_variable" in adata.var and adata.var["highly_variable"].any():
        x = x[:, adata.var["highly_variable"].to_numpy(dtype=bool)]
    n_comps = max(1, min(n_pcs, x.shape[1] - 1, x.shape[0] - 1))
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float32)
        mean = np.asarray(x.mean(axis=0)).ravel()
        # centred PCA without densifying: SVD of X, then subtract the mean's projection
        svd = TruncatedSVD(n_comps, algorithm="arpack", random_state=random_state).fit(x)
        pcs = x @ svd.components_.T - mean @ svd.components_.T
    else:
        pcs = PCA(n_comps, random_state=random_state).fit_transform(np.asarray(x, np.float32))
    pcs = np.asarray(pcs, dtype=np.float64)
    smooth = np.empty_like(pcs)
    for idx in members:
        k = min(7, idx.size)
        _, nn = cKDTree(coords[idx, :2]).query(coords[idx, :2], k=k)  # itself + 6 nearest
        smooth[idx] = pcs[idx][nn].mean(axis=1)
    return smooth


def _fgw_rigid(ref_xy, ref_f, mov_xy, mov_f, *, n_points, alpha, reflection, rng):
    """Rigid transform of `mov` onto `ref` from a fused Gromov-Wasserstein plan on subsamples."""
    import ot

    r = rng.choice(len(ref_xy), min(n_points, len(ref_xy)), replace=False)
    m = rng.choice(len(mov_xy), min(n_points, len(mov_xy)), replace=False)
    scale = _pitch(ref_xy)
    a, b = mov_xy[m] / scale, ref_xy[r] / scale
    c_mov, c_ref = cdist(a, a), cdist(b, b)
    norm = max(c_mov.max(), c_ref.max())
    cost = cdist(mov_f[m], ref_f[r], "sqeuclidean")
    cost /= max(cost.max(), np.finfo(float).tiny)
    p, q = ot.unif(len(m)), ot.unif(len(r))
    plan = ot.gromov.fused_gromov_wasserstein(
        cost, c_mov / norm, c_ref / norm, p, q, loss_fun="square_loss", alpha=alpha,
        G0=ot.emd(p, q, cost), max_iter=200, tol_rel=1e-7)
    rot, shift = _kabsch(a, b, plan, reflection)
    return rot, shift * scale


def _kabsch(src: np.ndarray, dst: np.ndarray, weights: np.ndarray, reflection: bool):
    """Least-squares rotation R and shift t with ``dst_j ~ R src_i + t``, weighted by the
    (n_src, n_dst) plan w_ij."""
    w = weights / weights.sum()
    mu_s = w.sum(axis=1) @ src
    mu_d = w.sum(axis=0) @ dst
    return _rotation((src - mu_s).T @ w @ (dst - mu_d), mu_s, mu_d, reflection)


def _kabsch_pairs(src: np.ndarray, dst: np.ndarray, reflection: bool):
    """As :func:`_kabsch` for matched pairs ``src[i] -> dst[i]`` of equal weight."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    return _rotation((src - mu_s).T @ (dst - mu_d), mu_s, mu_d, reflection)


def _rotation(cov: np.ndarray, mu_s: np.ndarray, mu_d: np.ndarray, reflection: bool):
    u, _, vt = np.linalg.svd(cov)  # cov: 2 x 2 cross-covariance
    rot = vt.T @ u.T
    if np.linalg.det(rot) < 0 and not reflection:
        vt[-1] *= -1
        rot = vt.T @ u.T
    return rot, mu_d - rot @ mu_s


def _icp(ref_xy, mov_xy, rot, shift, *, rounds: int, reflection: bool,
         ref_f=None, mov_f=None, k: int = 7):
    """Refine a rigid transform: match each moved spot to a reference spot, keep the closer
    half of the matches (sections rarely cover the same area), refit; repeat.

    With expression features, a spot is matched among its `k` nearest reference spots to the
    one that is near *and* similar (squared distance in pitches plus squared feature distance
    over its median), so domain borders pin the transform where position alone would snap to
    a neighbouring lattice site."""
    tree = cKDTree(ref_xy)
    pitch = _pitch(ref_xy)
    use_f = ref_f is not None and mov_f is not None and len(ref_xy) > k
    for _ in range(rounds):
        moved = mov_xy @ rot.T + shift
        if use_f:
            d, j = tree.query(moved, k=k)
            fd = ((mov_f[:, None, :] - ref_f[j]) ** 2).sum(axis=2)
            cost = (d / pitch) ** 2 + fd / max(np.median(fd), np.finfo(float).tiny)
            best = np.argmin(cost, axis=1)
            rows = np.arange(len(moved))
            d, j = d[rows, best], j[rows, best]
        else:
            d, j = tree.query(moved, k=1)
        keep = d <= max(np.median(d), 0.5 * pitch)
        if keep.sum() < 3:
            break
        new_rot, new_shift = _kabsch_pairs(mov_xy[keep], ref_xy[j[keep]], reflection)
        done = np.abs(new_rot - rot).max() < 1e-6 and np.abs(new_shift - shift).max() < 1e-3 * pitch
        rot, shift = new_rot, new_shift
        if done:
            break
    return rot, shift


def _pitch(xy: np.ndarray) -> float:
    """Median distance to the nearest other spot: the unit the alignment works in."""
    d = cKDTree(xy).query(xy, k=2)[0][:, 1]
    d = d[d > 0]
    return float(np.median(d)) if d.size else 1.0
