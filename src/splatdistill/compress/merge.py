"""Removing Gaussians without training: moment-matched pairwise merges where they beat pruning.

Pruning a Gaussian deletes its contribution to every image; merging it into an overlapping
neighbour of the same colour keeps almost all of it. This is the idea of NanoGS and of
PlayCanvas splat-transform's ``-F`` filter (pairwise merges instead of deletions); the maths here
is the standard moment matching of a two-component Gaussian mixture:

* mass of Gaussian i (the integral of its density ``alpha_i exp(-x^T Sigma_i^-1 x / 2)``):
  ``m_i = alpha_i (2 pi)^(3/2) sqrt(det Sigma_i) = alpha_i (2 pi)^(3/2) s_x s_y s_z``;
* merged weight fractions ``w_i = m_i / (m_i + m_j)``;
* merged mean ``mu = w_i mu_i + w_j mu_j`` (first moment of the mixture);
* merged covariance ``Sigma = sum_k w_k (Sigma_k + (mu_k - mu)(mu_k - mu)^T)`` (second moment);
* merged opacity from mass preservation ``alpha = (m_i + m_j) / ((2 pi)^(3/2) sqrt(det Sigma))``,
  clipped to [1e-4, 0.999] (the only place mass can be lost);
* merged colour: the mass-weighted mean of the SH coefficients of every band.

Which Gaussians to remove (``plan_reduction``): every Gaussian can be pruned at cost
``importance_i`` (its accumulated blending weight in the views, or any score); a pair (i, j) of
nearest neighbours can be merged at cost ``(importance_i + importance_j) * d_ij`` with the
dissimilarity ``d_ij = 1 - BC_ij * exp(-|rgb_i - rgb_j|^2 / (2 sigma_c^2))``, ``BC`` the
Bhattacharyya coefficient of the two (unit-mass) Gaussians: two coincident Gaussians of one colour
merge for free, two far apart cost as much as deleting both. The cheapest operations are taken
greedily (each Gaussian in at most one; a merged Gaussian may be pruned afterwards at its marginal
cost, see ``_greedy``) until exactly ``R`` Gaussians are gone. Nearest neighbours
come from a k-d tree (scipy ``cKDTree``): O(N log N) time, O(N) memory.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_MASS_CONST = (2.0 * math.pi) ** 1.5
ALPHA_MIN, ALPHA_MAX = 1e-4, 0.999


# ---- rotations ------------------------------------------------------------------------------------------
def quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    """(N, 4) quaternions (w, x, y, z; normalised here) -> (N, 3, 3) rotation matrices (gsplat's)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    r = np.empty(q.shape[:-1] + (3, 3))
    r[..., 0, 0] = 1 - 2 * (y * y + z * z)
    r[..., 0, 1] = 2 * (x * y - w * z)
    r[..., 0, 2] = 2 * (x * z + w * y)
    r[..., 1, 0] = 2 * (x * y + w * z)
    r[..., 1, 1] = 1 - 2 * (x * x + z * z)
    r[..., 1, 2] = 2 * (y * z - w * x)
    r[..., 2, 0] = 2 * (x * z - w * y)
    r[..., 2, 1] = 2 * (y * z + w * x)
    r[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return r


def rotmat_to_quat(r: np.ndarray) -> np.ndarray:
    """(N, 3, 3) proper rotations -> (N, 4) unit quaternions (w, x, y, z), w >= 0 (Shepperd's method:
    the largest of w, x, y, z is recovered from the diagonal first, the rest from off-diagonals)."""
    r = np.asarray(r, dtype=np.float64)
    t = np.stack(
        [
            1 + r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2],
            1 + r[:, 0, 0] - r[:, 1, 1] - r[:, 2, 2],
            1 - r[:, 0, 0] + r[:, 1, 1] - r[:, 2, 2],
            1 - r[:, 0, 0] - r[:, 1, 1] + r[:, 2, 2],
        ],
        axis=1,
    )
    k = t.argmax(axis=1)
    s = np.sqrt(np.maximum(t[np.arange(len(k)), k], 1e-300)) * 2  # = 4 * |largest component|
    q = np.empty((len(k), 4))
    a = k == 0
    q[a] = np.stack(
        [
            s[a] / 4,
            (r[a, 2, 1] - r[a, 1, 2]) / s[a],
            (r[a, 0, 2] - r[a, 2, 0]) / s[a],
            (r[a, 1, 0] - r[a, 0, 1]) / s[a],
        ],
        axis=1,
    )
    a = k == 1
    q[a] = np.stack(
        [
            (r[a, 2, 1] - r[a, 1, 2]) / s[a],
            s[a] / 4,
            (r[a, 0, 1] + r[a, 1, 0]) / s[a],
            (r[a, 0, 2] + r[a, 2, 0]) / s[a],
        ],
        axis=1,
    )
    a = k == 2
    q[a] = np.stack(
        [
            (r[a, 0, 2] - r[a, 2, 0]) / s[a],
            (r[a, 0, 1] + r[a, 1, 0]) / s[a],
            s[a] / 4,
            (r[a, 1, 2] + r[a, 2, 1]) / s[a],
        ],
        axis=1,
    )
    a = k == 3
    q[a] = np.stack(
        [
            (r[a, 1, 0] - r[a, 0, 1]) / s[a],
            (r[a, 0, 2] + r[a, 2, 0]) / s[a],
            (r[a, 1, 2] + r[a, 2, 1]) / s[a],
            s[a] / 4,
        ],
        axis=1,
    )
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    return q


def covariances(quats: np.ndarray, log_scales: np.ndarray) -> np.ndarray:
    """(N, 3, 3) ``R diag(exp(2 s)) R^T``."""
    r = quat_to_rotmat(quats)
    s2 = np.exp(2.0 * np.asarray(log_scales, dtype=np.float64))
    return np.einsum("nij,nj,nkj->nik", r, s2, r)


def cov_to_scale_quat(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric positive-definite (N, 3, 3) -> (log-scales (N, 3), quaternions (N, 4))."""
    ev, vec = np.linalg.eigh(cov)
    flip = np.linalg.det(vec) < 0
    vec[flip, :, 0] *= -1  # a proper rotation (det +1); the eigenvector's sign is free
    return 0.5 * np.log(np.maximum(ev, 1e-30)), rotmat_to_quat(vec)


# ---- the merge ------------------------------------------------------------------------------------------
def masses(log_scales: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Integral of each Gaussian's (opacity-scaled) density: ``alpha (2 pi)^(3/2) prod(scales)``."""
    return np.asarray(alpha, np.float64) * _MASS_CONST * np.exp(np.asarray(log_scales, np.float64).sum(axis=1))


def merge_pairs(p: dict, i: np.ndarray, j: np.ndarray) -> dict:
    """Moment-matched merges of the pairs ``(i[k], j[k])`` of the raw parameters ``p`` (numpy
    arrays named as ``GaussianScene``'s: means, quats, scales (log), opacities (logit), sh0, shN).
    Returns the merged Gaussians' raw parameters (one per pair), float32."""
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    a_i = 1.0 / (1.0 + np.exp(-p["opacities"][i].astype(np.float64)))
    a_j = 1.0 / (1.0 + np.exp(-p["opacities"][j].astype(np.float64)))
    m_i, m_j = masses(p["scales"][i], a_i), masses(p["scales"][j], a_j)
    tot = np.maximum(m_i + m_j, 1e-300)
    w_i, w_j = m_i / tot, m_j / tot
    mu_i, mu_j = p["means"][i].astype(np.float64), p["means"][j].astype(np.float64)
    mu = w_i[:, None] * mu_i + w_j[:, None] * mu_j
    d_i, d_j = mu_i - mu, mu_j - mu
    cov = w_i[:, None, None] * (covariances(p["quats"][i], p["scales"][i]) + d_i[:, :, None] * d_i[:, None, :]) + w_j[
        :, None, None
    ] * (covariances(p["quats"][j], p["scales"][j]) + d_j[:, :, None] * d_j[:, None, :])
    log_s, q = cov_to_scale_quat(cov)
    alpha = np.clip(tot / (_MASS_CONST * np.exp(log_s.sum(axis=1))), ALPHA_MIN, ALPHA_MAX)
    out = {"means": mu, "quats": q, "scales": log_s, "opacities": np.log(alpha / (1 - alpha))}
    for k in ("sh0", "shN"):
        shape = (-1,) + (1,) * (p[k].ndim - 1)
        out[k] = w_i.reshape(shape) * p[k][i] + w_j.reshape(shape) * p[k][j]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def bhattacharyya_coefficient(mu_i, cov_i, mu_j, cov_j) -> np.ndarray:
    """``exp(-D_B)`` of two batches of 3-D Gaussians, ``D_B = 1/8 d^T S^-1 d + 1/2 ln(det S /
    sqrt(det S_i det S_j))``, ``S = (S_i + S_j) / 2``: 1 for identical ones, -> 0 apart."""
    s = 0.5 * (cov_i + cov_j)
    d = mu_i - mu_j
    sol = np.linalg.solve(s, d[..., None])[..., 0]
    maha = np.einsum("ni,ni->n", d, sol)
    _, ld = np.linalg.slogdet(s)
    _, ldi = np.linalg.slogdet(cov_i)
    _, ldj = np.linalg.slogdet(cov_j)
    return np.exp(-(maha / 8.0 + 0.5 * (ld - 0.5 * (ldi + ldj))))


@njit(cache=True, inline="always")
def _cov(q, s, out):
    w, x, y, z = q[0], q[1], q[2], q[3]
    nr = max(np.sqrt(w * w + x * x + y * y + z * z), 1e-12)
    w, x, y, z = w / nr, x / nr, y / nr, z / nr
    r = np.empty((3, 3))
    r[0, 0], r[0, 1], r[0, 2] = 1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)
    r[1, 0], r[1, 1], r[1, 2] = 2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)
    r[2, 0], r[2, 1], r[2, 2] = 2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)
    for i in range(3):
        for j in range(3):
            acc = 0.0
            for k in range(3):
                acc += r[i, k] * np.exp(2.0 * s[k]) * r[j, k]
            out[i, j] = acc


@njit(cache=True, inline="always")
def _det3(m):
    return (
        m[0, 0] * (m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1])
        - m[0, 1] * (m[1, 0] * m[2, 2] - m[1, 2] * m[2, 0])
        + m[0, 2] * (m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0])
    )


@njit(cache=True, parallel=True)
def pair_dissimilarity(means, quats, log_scales, rgb, pa, pb, color_sigma, out):
    """``1 - BC * exp(-|rgb_a - rgb_b|^2 / (2 sigma^2))`` per pair (``bhattacharyya_coefficient``
    with the 3x3 algebra written out; det S_i = exp(2 sum s_i)).

    Args:
        means: [N, 3] float64 positions.
        quats: [N, 4] float64 quaternions (w, x, y, z).
        log_scales: [N, 3] float64 log-scales.
        rgb: [N, 3] float64 base colours.
        pa, pb: [P] int64 indices of the two Gaussians of each pair.
        color_sigma: the colour distance at which the colour term falls to exp(-1/2).
        out: [P] float64, written with the dissimilarity of each pair (1 for a degenerate pair).
    """
    for t in prange(pa.shape[0]):
        a, b = pa[t], pb[t]
        ca, cb = np.empty((3, 3)), np.empty((3, 3))
        _cov(quats[a], log_scales[a], ca)
        _cov(quats[b], log_scales[b], cb)
        m = 0.5 * (ca + cb)
        det = _det3(m)
        d0, d1, d2 = means[a, 0] - means[b, 0], means[a, 1] - means[b, 1], means[a, 2] - means[b, 2]
        if not det > 0.0:
            out[t] = 1.0
            continue
        # d^T adj(m) d / det
        i00 = m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1]
        i01 = m[0, 2] * m[2, 1] - m[0, 1] * m[2, 2]
        i02 = m[0, 1] * m[1, 2] - m[0, 2] * m[1, 1]
        i11 = m[0, 0] * m[2, 2] - m[0, 2] * m[2, 0]
        i12 = m[0, 2] * m[1, 0] - m[0, 0] * m[1, 2]
        i22 = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
        maha = (
            d0 * d0 * i00 + d1 * d1 * i11 + d2 * d2 * i22 + 2 * (d0 * d1 * i01 + d0 * d2 * i02 + d1 * d2 * i12)
        ) / det
        lda = 2.0 * (log_scales[a, 0] + log_scales[a, 1] + log_scales[a, 2])
        ldb = 2.0 * (log_scales[b, 0] + log_scales[b, 1] + log_scales[b, 2])
        db = maha / 8.0 + 0.5 * (np.log(det) - 0.5 * (lda + ldb))
        dc = (rgb[a, 0] - rgb[b, 0]) ** 2 + (rgb[a, 1] - rgb[b, 1]) ** 2 + (rgb[a, 2] - rgb[b, 2]) ** 2
        out[t] = 1.0 - np.exp(-db) * np.exp(-dc / (2.0 * color_sigma * color_sigma))


@njit(cache=True)
def _greedy(order, cost, op_a, op_b, importance, n, n_remove):
    """Walk the operations cheapest first; op k removes ``op_a[k]`` (a prune when ``op_b[k] < 0``)
    or merges ``op_a[k]`` with ``op_b[k]``. Each input Gaussian takes part in at most one operation,
    but a merged Gaussian can itself be pruned later, at its marginal cost ``importance_a +
    importance_b - cost(merge)`` (so a merge followed by its prune costs what pruning both costs).
    Without that, cheap merges of unimportant pairs use their Gaussians up while removing only one
    per pair, and a large reduction runs out of them and deletes the important Gaussians instead.
    Returns (chosen ops, merges whose result was pruned afterwards)."""
    m = order.shape[0]
    used = np.zeros(n, dtype=np.bool_)
    chosen = np.zeros(m, dtype=np.bool_)
    merged_pruned = np.zeros(m, dtype=np.bool_)
    # a binary min-heap of the merged Gaussians' prune ops: (marginal cost, merge op index)
    hc = np.empty(n, dtype=np.float64)
    hk = np.empty(n, dtype=np.int64)
    size = 0
    removed = 0
    t = 0
    while removed < n_remove:
        if size > 0 and (t >= m or hc[0] < cost[order[t]]):
            merged_pruned[hk[0]] = True
            removed += 1
            size -= 1
            c, k = hc[size], hk[size]  # sift the last element down from the root
            i = 0
            while True:
                l = 2 * i + 1
                if l >= size:
                    break
                r = l + 1
                s = r if r < size and hc[r] < hc[l] else l
                if hc[s] >= c:
                    break
                hc[i], hk[i] = hc[s], hk[s]
                i = s
            if size > 0:
                hc[i], hk[i] = c, k
            continue
        if t >= m:
            break
        k = order[t]
        t += 1
        a, b = op_a[k], op_b[k]
        if used[a] or (b >= 0 and used[b]):
            continue
        used[a] = True
        chosen[k] = True
        removed += 1
        if b >= 0:
            used[b] = True
            c = max(importance[a] + importance[b] - cost[k], 0.0)
            i = size  # sift up
            size += 1
            while i > 0:
                par = (i - 1) // 2
                if hc[par] <= c:
                    break
                hc[i], hk[i] = hc[par], hk[par]
                i = par
            hc[i], hk[i] = c, k
    return chosen, merged_pruned


def plan_reduction(
    p: dict, importance: np.ndarray, n_target: int, merge: bool = True, color_sigma: float = 0.1, workers: int = -1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Choose prunes and merges that take the scene from N to ``n_target`` Gaussians at the least
    cost (see the module docstring). Returns (kept indices (untouched Gaussians), merge pairs i, j,
    info). ``merge=False``: pruning only (the ``N - n_target`` least important)."""
    n = len(importance)
    n_remove = max(0, n - int(n_target))
    imp = np.asarray(importance, np.float64)
    info = {"input": n, "target": int(n_target), "merged": 0, "pruned": 0}
    if n_remove == 0:
        return np.arange(n), np.zeros(0, np.int64), np.zeros(0, np.int64), info
    if not merge or n < 2:
        order = np.argsort(imp, kind="stable")
        info["pruned"] = n_remove
        return np.sort(order[n_remove:]), np.zeros(0, np.int64), np.zeros(0, np.int64), info
    from scipy.spatial import cKDTree

    means = p["means"].astype(np.float64)
    _, nn = cKDTree(means).query(means, k=2, workers=workers)
    a = np.arange(n)
    b = nn[:, 1].astype(np.int64)
    b = np.where(b >= n, a, b)
    uniq = a < b  # each unordered pair once; (b, a) may also appear as its own pair: keep one
    rev = (b < a) & (nn[b, 1] != a)
    pa = np.concatenate([a[uniq], b[rev]])
    pb = np.concatenate([b[uniq], a[rev]])
    from splatdistill.scene.sh import C0

    rgb = np.ascontiguousarray(p["sh0"][:, 0, :], dtype=np.float64) * C0
    dissim = np.empty(len(pa))
    pair_dissimilarity(
        means,
        np.ascontiguousarray(p["quats"], np.float64),
        np.ascontiguousarray(p["scales"], np.float64),
        rgb,
        pa,
        pb,
        float(color_sigma),
        dissim,
    )
    merge_cost = (imp[pa] + imp[pb]) * dissim
    cost = np.concatenate([imp, merge_cost])
    op_a = np.concatenate([a, pa]).astype(np.int64)
    op_b = np.concatenate([np.full(n, -1, np.int64), pb]).astype(np.int64)
    # ties (e.g. many zero costs): prunes first (listed first, stable sort)
    chosen, merged_pruned = _greedy(np.argsort(cost, kind="stable"), cost, op_a, op_b, imp, n, n_remove)
    gone = np.zeros(n, bool)
    gone[op_a[chosen]] = True
    gone[op_b[chosen & (op_b >= 0)]] = True
    is_merge = chosen & (op_b >= 0) & ~merged_pruned
    info["merged"] = int(is_merge.sum())
    # input Gaussians deleted outright (both of a merged pair that was pruned afterwards)
    info["pruned"] = int((chosen & (op_b < 0)).sum() + 2 * merged_pruned.sum())
    return np.flatnonzero(~gone), op_a[is_merge], op_b[is_merge], info


def reduce_gaussians(
    p: dict, importance: np.ndarray, n_target: int, merge: bool = True, color_sigma: float = 0.1
) -> tuple[dict, np.ndarray, dict]:
    """Apply ``plan_reduction``: the kept Gaussians followed by the merged ones, exactly
    ``min(N, n_target)`` of them. Returns (raw parameters, their importance (a merged Gaussian gets
    the sum of its parts'), info)."""
    keep, i, j, info = plan_reduction(p, importance, n_target, merge, color_sigma)
    imp = np.asarray(importance, np.float64)
    if len(i) == 0:
        return {k: v[keep] for k, v in p.items()}, imp[keep], info
    merged = merge_pairs(p, i, j)
    out = {k: np.concatenate([v[keep], merged[k]]) for k, v in p.items()}
    return out, np.concatenate([imp[keep], imp[i] + imp[j]]), info
