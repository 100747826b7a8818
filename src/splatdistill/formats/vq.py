"""Vector quantisation: significance-weighted k-means and residual VQ.

* ``weighted_kmeans`` builds a codebook for LightGaussian's colour VQ (Fan et al., ECCV 2024;
  METHODS.md §2): the colour vector (SH DC + rest) of the least significant Gaussians is replaced
  by one of K codewords (8192 in the paper, a 13-bit index), the codebook being fitted by k-means
  weighted by each Gaussian's global significance. (LightGaussian's code uses an EMA k-means with
  decay 0.8; we run plain weighted Lloyd iterations, optionally mini-batch updates, which
  minimise the same significance-weighted squared error.)
* ``residual_vq`` / ``rvq_decode``: R-VQ as in Compact-3DGS (Lee et al., CVPR 2024; METHODS.md
  §4), used there for scale and rotation with 6 stages x 64 codewords: every stage quantises the
  residual left by the previous stages, and the decoded vector is the sum of the chosen codewords.

Distances are computed by chunks of points against the whole codebook (``||c||^2 - 2 x.c`` by
one matrix product per chunk), so memory is O(chunk * k), never O(N * k). The arithmetic is
numpy (its OpenBLAS), not torch: faster for these shapes on a CPU, and free of the stalls of
torch's multi-threaded small ops when the cores are shared (see docs/benchmarks.md, "Measurements
behind design choices"). Torch tensors are accepted as input (moved to the CPU).
Everything is deterministic for a given ``seed`` (``numpy.random.default_rng(seed)``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

# Elements of one (chunk x k) distance block: 2**22 floats = 16 MiB.
_BLOCK_ELEMS = 1 << 22
# Batched k-means++ picks the k initial centres in at most this many rounds (one distance
# update against the round's new centres each); with k <= this it is exactly k-means++.
_INIT_ROUNDS = 32
# k-means++ seeding runs on a uniform random sample of at most max(16 k, 65536) points.
_INIT_SAMPLE_PER_K = 16
_INIT_SAMPLE_MIN = 1 << 16
# batch="auto": full Lloyd up to 2 x max(8 k, 32768) points, mini-batches of that size above.
_AUTO_BATCH_PER_K = 8
_AUTO_BATCH_MIN = 1 << 15


def _as_array_2d(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if a.ndim != 2:
        raise ValueError(f"x must have shape (N, D), got {a.shape}")
    if a.size and not np.isfinite(a).all():
        raise ValueError("x contains NaN or Inf")
    return a


def _as_weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().to("cpu", torch.float64).numpy()
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != n:
        raise ValueError(f"weights has {w.shape[0]} entries for {n} points")
    if n and (not np.isfinite(w).all() or (w < 0).any()):
        raise ValueError("weights must be finite and >= 0")
    if n and float(w.sum()) <= 0:  # all zero: fall back to uniform weights
        return np.ones(n)
    return w


def _chunk_rows(k: int, chunk: int | None) -> int:
    return max(1, int(chunk) if chunk else _BLOCK_ELEMS // max(k, 1))


def assign_nearest(x, codebook, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest codeword (squared Euclidean) of each row of ``x``, and that squared distance.

    Args:
        x: [N, D] vectors (numpy or torch).
        codebook: [K, D] codewords.
        chunk: Rows per distance block; default ``2**22 / K``.

    Returns:
        ``(assign, d2)``: [N] int64 and [N] float32.
    """
    xa = _as_array_2d(x)
    ca = _as_array_2d(codebook)
    if xa.shape[0] and ca.shape[1] != xa.shape[1]:
        raise ValueError(f"codebook has dimension {ca.shape[1]}, x has {xa.shape[1]}")
    return _assign(xa, ca, _chunk_rows(ca.shape[0], chunk))


def _assign(x: np.ndarray, c: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest codeword of each row of ``x`` and its squared distance, by blocks of ``rows`` rows.

    ``||x - c||^2 = ||x||^2 + (||c||^2 - 2 x.c)``: one BLAS matrix product per block gives the
    bracket, whose argmin is the nearest codeword. Memory: one (rows, k) float32 block.
    """
    n = x.shape[0]
    idx = np.empty(n, dtype=np.int64)
    d2 = np.empty(n, dtype=np.float32)
    if n == 0:
        return idx, d2
    ct2 = np.ascontiguousarray(-2.0 * c.T, dtype=np.float32)  # (D, k)
    cn = np.einsum("ij,ij->i", c, c).astype(np.float32)  # (k,)
    for s in range(0, n, rows):
        xb = x[s : s + rows]
        d = xb @ ct2
        d += cn
        i = d.argmin(axis=1)
        idx[s : s + rows] = i
        d2[s : s + rows] = d[np.arange(len(i)), i] + np.einsum("ij,ij->i", xb, xb)
    np.maximum(d2, 0.0, out=d2)
    return idx, d2


def _weighted_sample(p: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` distinct indices drawn with probability proportional to ``p`` (>= 0, at least ``m``
    positive), without replacement: the ``m`` smallest keys ``E_i / p_i``, E_i ~ Exp(1)
    (Efraimidis & Spirakis 2006), in O(N)."""
    with np.errstate(divide="ignore"):
        keys = rng.standard_exponential(p.shape[0]) / p
    if m >= p.shape[0]:
        return np.argsort(keys, kind="stable")
    part = np.argpartition(keys, m - 1)[:m]
    return part[np.argsort(keys[part], kind="stable")]


def _init_kmeanspp(x: np.ndarray, w: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) with significance weights: each new centre
    is a data point drawn with probability proportional to ``w * D^2`` (D = distance to the nearest
    centre so far). To stay fast for large k the centres are drawn in at most ``_INIT_ROUNDS``
    rounds of ``ceil((k-1) / rounds)`` points each (drawn without replacement from the same
    distribution), updating D^2 once per round with one chunked matrix product."""
    n, dim = x.shape
    centres = np.empty((k, dim), dtype=np.float32)
    first = int(rng.choice(n, p=w / w.sum()))
    centres[0] = x[first]
    d2 = _sqdist_to(x, centres[:1]).astype(np.float64)
    filled = 1
    per_round = max(1, math.ceil((k - 1) / _INIT_ROUNDS))
    while filled < k:
        m = min(per_round, k - filled)
        p = w * d2
        nz = int(np.count_nonzero(p))
        if nz == 0:  # every point coincides with a centre: fill with random points (duplicates)
            pick = rng.choice(n, size=m, p=w / w.sum())
        else:
            pick = _weighted_sample(p, min(m, nz), rng)
            if len(pick) < m:
                pick = np.concatenate([pick, rng.choice(n, size=m - len(pick), p=w / w.sum())])
        centres[filled : filled + m] = x[pick]
        np.minimum(d2, _sqdist_to(x, centres[filled : filled + m]), out=d2)
        filled += m
    return centres


def _sqdist_to(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return _assign(x, c, _chunk_rows(c.shape[0], None))[1]


def _cluster_sums(idx: np.ndarray, xw: np.ndarray, w: np.ndarray, k: int):
    """Per-cluster total weight (k,) and weighted sum (k, D), float64 (bincount per column)."""
    wsum = np.bincount(idx, weights=w, minlength=k)
    sums = np.empty((k, xw.shape[1]), dtype=np.float64)
    for j in range(xw.shape[1]):
        sums[:, j] = np.bincount(idx, weights=xw[:, j], minlength=k)
    return wsum, sums


def _update(
    x: np.ndarray, xw: np.ndarray, w: np.ndarray, idx: np.ndarray, d2: np.ndarray, centres: np.ndarray
) -> np.ndarray:
    """Weighted means of the clusters; empty clusters re-seeded to the worst-fit points."""
    k = centres.shape[0]
    wsum, sums = _cluster_sums(idx, xw, w, k)
    count = np.bincount(idx, minlength=k)
    new = centres.copy()
    has_w = wsum > 0
    new[has_w] = (sums[has_w] / wsum[has_w, None]).astype(np.float32)
    zero_w = (count > 0) & ~has_w  # members all have weight 0: plain mean
    if zero_w.any():
        _, psum = _cluster_sums(idx, x.astype(np.float64), np.ones_like(w), k)
        new[zero_w] = (psum[zero_w] / count[zero_w, None]).astype(np.float32)
    empty = np.flatnonzero(count == 0)
    if empty.size:
        # Worst-fit points: the largest significance-weighted squared error (distance alone
        # breaks ties among zero-weight points).
        score = d2.astype(np.float64) * (w / w.mean() + 1e-6)
        m = min(empty.size, score.size)
        worst = np.argsort(-score, kind="stable")[:m]
        new[empty[:m]] = x[worst]
    return new


def auto_batch(n: int, k: int) -> int | None:
    """The mini-batch size ``batch="auto"`` uses.

    Args:
        n: Number of points.
        k: Number of codewords.

    Returns:
        ``max(8 k, 32768)`` once ``n`` is more than twice that, else None (full Lloyd).
    """
    b = max(_AUTO_BATCH_PER_K * k, _AUTO_BATCH_MIN)
    return b if n > 2 * b else None


def weighted_kmeans(
    x,
    weights=None,
    k: int = 256,
    iters: int = 10,
    seed: int = 0,
    batch: int | str | None = "auto",
    init: str = "kmeans++",
    chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Significance-weighted k-means: minimise ``sum_i w_i ||x_i - c_{a_i}||^2``.

    Args:
        x: [N, D] float32 vectors (numpy or torch).
        weights: [N] weights >= 0 (None: uniform; all zero: uniform).
        k: Codewords.
        iters: Lloyd iterations or mini-batch updates.
        seed: Seed (deterministic for a given seed).
        batch: ``None`` runs full Lloyd iterations (``iters`` of them, stopping early when the
            assignment no longer changes); an integer < N runs ``iters`` mini-batch updates instead
            (Sculley 2010, "Web-scale k-means": per-centre learning rate = point weight / accumulated
            centre weight), each on ``batch`` points drawn at random; ``"auto"`` (default) picks
            ``auto_batch(N, k)``: full Lloyd for small problems, mini-batches of ``max(8 k, 32768)``
            points for large ones: several times faster for a slightly higher weighted squared error
            (see docs/benchmarks.md, "Measurements behind design choices").
        init: ``"kmeans++"`` (weighted, batched k-means++ seeding, see ``_init_kmeanspp``, on a random
            sample of at most ``max(16 k, 65536)`` points) or ``"random"`` (k distinct points drawn
            with probability proportional to weight).
        chunk: Rows per distance block (default: 2**22 / k, i.e. 16 MiB blocks).

    Returns:
        ``(codebook, assign)``: [k, D] float32 and [N] int64, ``assign`` the nearest codeword of each
        point in the returned codebook. With N <= k the codebook is the points themselves (padded by
        repeating them) and ``assign = arange(N)``. Clusters that end up empty are re-seeded to the
        worst-fit points.
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if init not in ("kmeans++", "random"):
        raise ValueError(f"init must be 'kmeans++' or 'random', got {init!r}")
    xa = _as_array_2d(x)
    n, dim = xa.shape
    w = _as_weights(weights, n)
    if n == 0:
        return np.zeros((k, dim), dtype=np.float32), np.zeros(0, dtype=np.int64)
    if n <= k:
        return xa[np.arange(k) % n].copy(), np.arange(n, dtype=np.int64)
    if batch == "auto":
        batch = auto_batch(n, k)
    elif batch is not None and (isinstance(batch, bool) or int(batch) < 1):
        raise ValueError(f"batch must be a positive integer, None or 'auto', got {batch!r}")

    rng = np.random.default_rng(int(seed))
    rows = _chunk_rows(k, chunk)
    if init == "kmeans++":
        m = max(_INIT_SAMPLE_PER_K * k, _INIT_SAMPLE_MIN)
        if n > m:
            sub = np.sort(rng.choice(n, size=m, replace=False))
            centres = _init_kmeanspp(xa[sub], w[sub] if w[sub].sum() > 0 else np.ones(m), k, rng)
        else:
            centres = _init_kmeanspp(xa, w, k, rng)
    else:
        nzw = int(np.count_nonzero(w))
        if nzw >= k:
            pick = _weighted_sample(w, k, rng)
        else:  # all positive-weight points, then random zero-weight ones
            zero = rng.permutation(np.flatnonzero(w == 0))[: k - nzw]
            pick = np.concatenate([np.flatnonzero(w > 0), zero])
        centres = xa[pick].copy()

    if batch is not None and int(batch) < n:
        centres = _minibatch(xa, w, centres, iters, int(batch), rng, rows)
    else:
        xw = xa * w[:, None]
        prev = None
        for _ in range(int(iters)):
            idx, d2 = _assign(xa, centres, rows)
            if prev is not None and np.array_equal(idx, prev):
                break
            centres = _update(xa, xw, w, idx, d2, centres)
            prev = idx
    idx, _ = _assign(xa, centres, rows)
    return centres, idx


def _minibatch(x, w, centres, iters, batch, rng, rows) -> np.ndarray:
    k = centres.shape[0]
    acc = np.zeros(k)  # accumulated weight per centre
    c = centres.astype(np.float64)
    for _ in range(int(iters)):
        pick = rng.integers(0, x.shape[0], batch)
        xb, wb = x[pick], w[pick]
        idx, _ = _assign(xb, c.astype(np.float32), rows)
        bw, bs = _cluster_sums(idx, xb * wb[:, None], wb, k)
        # Sculley's per-point update c += (w / acc) (x - c), applied for all the batch's points
        # of a centre at once: c <- (acc c + sum w x) / (acc + sum w).
        hit = bw > 0
        acc_new = acc + bw
        c[hit] = (acc[hit, None] * c[hit] + bs[hit]) / acc_new[hit, None]
        acc = acc_new
    return c.astype(np.float32)


# ---- residual VQ --------------------------------------------------------------------------------------
def residual_vq(
    x,
    stages: int = 6,
    k: int = 64,
    iters: int = 20,
    seed: int = 0,
    weights=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Residual vector quantisation (Compact-3DGS: 6 stages x 64 codewords for scale and rotation).

    Stage ``s`` runs ``weighted_kmeans`` (seed ``seed + s``) on the residual ``x - sum of the codewords
    chosen by stages < s``; ``rvq_decode`` sums the chosen codewords. The (weighted) squared error
    does not increase from one stage to the next (each stage ends with an update to cluster means and
    a nearest-codeword assignment, and a cluster mean does at least as well as 0).

    Args:
        x: [N, D] vectors (numpy or torch).
        stages: Number of stages S.
        k: Codewords per stage K.
        iters: k-means iterations per stage.
        seed: Seed of the first stage.
        weights: [N] weights >= 0, or None for uniform.

    Returns:
        ``(codebooks, indices)``: [S, K, D] float32 and [N, S] int64.
    """
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    residual = _as_array_2d(x).copy()
    n, dim = residual.shape
    books = np.zeros((stages, k, dim), dtype=np.float32)
    indices = np.zeros((n, stages), dtype=np.int64)
    for s in range(stages):
        cb, a = weighted_kmeans(residual, weights, k, iters=iters, seed=seed + s)
        books[s] = cb
        indices[:, s] = a
        residual -= cb[a]
    return books, indices


def rvq_decode(codebooks: np.ndarray, indices: np.ndarray, stages: int | None = None) -> np.ndarray:
    """Sum of the chosen codewords of the first ``stages`` stages.

    Args:
        codebooks: [S, K, D] codebooks.
        indices: [N, S] indices.
        stages: Stages to sum; all when None.

    Returns:
        [N, D] float32.
    """
    codebooks = np.asarray(codebooks, dtype=np.float32)
    indices = np.asarray(indices)
    s_total = codebooks.shape[0]
    stages = s_total if stages is None else int(stages)
    if not 0 <= stages <= s_total:
        raise ValueError(f"stages must be in 0..{s_total}, got {stages}")
    out = np.zeros((indices.shape[0], codebooks.shape[2]), dtype=np.float32)
    for s in range(stages):
        out += codebooks[s][indices[:, s]]
    return out
