"""Fast k-means for codebooks of millions of vectors on a CPU: fit on a sample, assign once.

The cost of k-means is the distance computation, N x K x D multiply-adds per Lloyd iteration. For
1M SH-3 rest vectors (D = 45) and K = 4096 that is 0.2 TFLOP per iteration: several seconds on two
cores. So the codebook is fitted on a random sample (``sample`` points, drawn with probability
proportional to the weights when given, so important Gaussians shape the codebook — the same
objective as significance-weighted k-means, estimated by importance sampling), with weighted
k-means++ seeding and a few full Lloyd iterations on the sample; then every point is assigned to its
nearest codeword once. Distances are ``|c|^2 - 2 x.c`` by one BLAS matrix product per block
(``vq._assign``, numpy / OpenBLAS), so memory is O(block x K), never O(N x K).

Library choice (measured, ``docs/design.md``): faiss-cpu's ``Kmeans`` does the same (it also
subsamples, 256 points per centroid by default) with comparable BLAS kernels; scikit-learn's
``MiniBatchKMeans`` was slower for these K. Our own implementation needs no extra dependency and
matches their quality at equal work.
"""

from __future__ import annotations

import math

import numpy as np

from splatdistill.formats.vq import _assign, _chunk_rows, _init_kmeanspp

SAMPLE_PER_K = 32  # sample size: this many points per codeword ...
SAMPLE_MIN = 1 << 15  # ... but at least this many (when there are)


def fit_codebook(
    x: np.ndarray,
    k: int,
    weights: np.ndarray | None = None,
    iters: int = 8,
    sample: int | None = None,
    seed: int = 0,
    init: str = "kmeans++",
) -> np.ndarray:
    """A k-means codebook for the rows of ``x``, fitted on a (weighted) sample.

    Args:
        x: [N, D] vectors (converted to float32).
        k: Codewords; capped at N.
        weights: [N] importance of each row (non-finite or negative counts as 0), or None for uniform.
        iters: Lloyd iterations on the sample.
        sample: Sample size; default ``max(SAMPLE_MIN, SAMPLE_PER_K * k)``.
        seed: Seed (deterministic).
        init: ``"kmeans++"`` (weighted k-means++ seeding) or ``"random"`` (k distinct sample points:
            cheaper, but more distortion than k-means++ inside the two-level cells, so not the
            default; see docs/benchmarks.md, "Measurements behind design choices").

    Returns:
        [k, D] float32 codebook.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    k = max(1, min(int(k), n))
    rng = np.random.default_rng(seed)
    m = int(sample) if sample else max(SAMPLE_MIN, SAMPLE_PER_K * k)
    if weights is not None:
        w = np.asarray(weights, np.float64).reshape(-1)
        w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
        if w.sum() <= 0:
            w = None
    else:
        w = None
    if m < n:
        if w is not None:
            # half the sample by importance, half uniform: rarely-seen Gaussians still get codewords
            p = 0.5 * w / w.sum() + 0.5 / n
            idx = rng.choice(n, size=m, replace=False, p=p)
        else:
            idx = rng.choice(n, size=m, replace=False)
        xs, ws = x[idx], np.ones(m)
    else:
        xs, ws = x, (w if w is not None else np.ones(n)) + 1e-12
    k = min(k, xs.shape[0])
    if init == "random":
        cb = xs[rng.choice(xs.shape[0], size=k, replace=False)].copy()
    else:
        cb = _init_kmeanspp(xs, ws, k, rng)
    rows = _chunk_rows(k, None)
    prev = None
    for _ in range(iters):
        a, _ = _assign(xs, cb, rows)
        if prev is not None and np.array_equal(a, prev):
            break
        prev = a
        cnt = np.bincount(a, weights=ws, minlength=k)
        sums = np.zeros((k, x.shape[1]))
        _scatter_sum(sums, a, xs, ws)
        live = cnt > 0
        cb[live] = (sums[live] / cnt[live, None]).astype(np.float32)
    return cb


def _scatter_sum(out: np.ndarray, idx: np.ndarray, x: np.ndarray, w: np.ndarray) -> None:
    """``out[idx[i]] += w[i] x[i]`` by sorting (faster than ``np.add.at`` for many rows)."""
    order = np.argsort(idx, kind="stable")
    xs = x[order].astype(np.float64) * w[order, None]
    bounds = np.flatnonzero(np.diff(idx[order])) + 1
    starts = np.concatenate([[0], bounds])
    out[idx[order][starts]] += np.add.reduceat(xs, starts, axis=0)


def assign(x: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Nearest codeword of every row of ``x``.

    Args:
        x: [N, D] vectors.
        codebook: [K, D] codewords.

    Returns:
        [N] int64 codeword indices.
    """
    cb = np.ascontiguousarray(codebook, dtype=np.float32)
    return _assign(np.ascontiguousarray(x, dtype=np.float32), cb, _chunk_rows(cb.shape[0], None))[0]


# Above this many multiply-adds for one flat assignment pass (N x K x D), ``kmeans`` goes two-level.
FLAT_MAX_WORK = 2e9


def kmeans(
    x: np.ndarray,
    k: int,
    weights: np.ndarray | None = None,
    iters: int = 8,
    sample: int | None = None,
    seed: int = 0,
    two_level: bool | None = None,
    probes: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """k-means codebook and labels: flat for small problems, two-level for large ones.

    Flat k-means (fit on a sample, one assignment pass) when N x K x D is small; otherwise (or with
    ``two_level=True``) **two-level** k-means: ``sqrt(K)`` coarse centroids, then within each coarse
    cell a flat k-means with that cell's share of the K codewords (proportional to its importance
    mass, at least 1). Every point is then compared with sqrt(K) + K / sqrt(K) codewords instead of
    K: for K = 8192, 2 x 91 instead of 8192 — the inverted-file idea of faiss's IVF indexes applied
    to building the codebook. The codewords of a cell are fitted to that cell's points only, so
    the final assignment compares each point with the codewords of its ``probes`` (3) nearest
    cells (multi-probe, as faiss's ``nprobe``), so points near a cell border still find the closest
    codeword of the next cell (measured against flat k-means in ``docs/design.md``).

    Args:
        x: [N, D] vectors (converted to float32).
        k: Codewords wanted.
        weights: [N] importance of each row, or None for uniform.
        iters: Lloyd iterations per fit.
        sample: Sample size of each fit (see ``fit_codebook``).
        seed: Seed (deterministic).
        two_level: Force (True) or forbid (False) the two-level scheme; None decides by size.
        probes: Coarse cells searched per point in the two-level assignment.

    Returns:
        ``(codebook, labels)``: [k', D] float32 with k' <= min(k, N), and [N] int64.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if n == 0:
        return np.zeros((0, d), np.float32), np.zeros(0, np.int64)
    k = max(1, min(int(k), n))
    if two_level is None:
        two_level = float(n) * k * d > FLAT_MAX_WORK and k >= 64
    if not two_level:
        cb = fit_codebook(x, k, weights, iters, sample, seed)
        return cb, assign(x, cb)
    kc = max(2, int(round(math.sqrt(k))))
    coarse = fit_codebook(x, kc, weights, iters, sample, seed)
    cl = assign(x, coarse)
    w = (
        np.ones(n)
        if weights is None
        else np.where(
            np.isfinite(np.asarray(weights, np.float64)), np.maximum(np.asarray(weights, np.float64).reshape(-1), 0), 0
        )
    )
    # codewords per cell: proportional to sqrt(count x mass share), at least 1, at most the cell's size
    cnt = np.bincount(cl, minlength=kc).astype(np.float64)
    mass = np.bincount(cl, weights=w, minlength=kc)
    share = np.sqrt(cnt / cnt.sum() * (mass / mass.sum() if mass.sum() > 0 else cnt / cnt.sum()))
    alloc = np.where(cnt > 0, np.maximum(1, np.floor(share / share.sum() * k)), 0).astype(np.int64)
    alloc = np.minimum(alloc, cnt.astype(np.int64))
    order = np.argsort(cl, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(cnt.astype(np.int64))])
    books, starts, base = [], np.zeros(kc + 1, np.int64), 0
    for c in range(kc):
        starts[c] = base
        if alloc[c] == 0:
            continue
        idx = order[bounds[c] : bounds[c + 1]]
        wc = None if weights is None else w[idx]
        cb = fit_codebook(x[idx], int(alloc[c]), wc, iters, None, seed + 1 + c)
        books.append(cb)
        base += len(cb)
    starts[kc] = base
    book = np.concatenate(books).astype(np.float32)
    # final assignment, multi-probe: the codewords of each point's ``probes`` nearest coarse cells
    cd = _coarse_rank(x, coarse, min(probes, kc))
    labels = np.zeros(n, np.int64)
    best = np.full(n, np.inf, np.float32)
    for r in range(cd.shape[1]):
        cell = cd[:, r]
        order = np.argsort(cell, kind="stable")
        cnt_r = np.bincount(cell, minlength=kc)
        b = np.concatenate([[0], np.cumsum(cnt_r)])
        for c in range(kc):
            if cnt_r[c] == 0 or starts[c + 1] == starts[c]:
                continue
            idx = order[b[c] : b[c + 1]]
            cb = book[starts[c] : starts[c + 1]]
            lab, d2 = _assign(x[idx], cb, _chunk_rows(len(cb), None))
            better = d2 < best[idx]
            labels[idx[better]] = lab[better] + starts[c]
            best[idx[better]] = d2[better]
    return book, labels


def _coarse_rank(x: np.ndarray, coarse: np.ndarray, probes: int) -> np.ndarray:
    """(N, probes) indices of each row's nearest coarse centroids, nearest first."""
    out = np.empty((x.shape[0], probes), np.int64)
    ct2 = -2.0 * coarse.T.astype(np.float32)
    cn = np.einsum("ij,ij->i", coarse, coarse).astype(np.float32)
    for s in range(0, x.shape[0], 65536):
        d = x[s : s + 65536] @ ct2 + cn
        part = (
            np.argpartition(d, probes - 1, axis=1)[:, :probes]
            if probes < d.shape[1]
            else np.tile(np.arange(d.shape[1]), (len(d), 1))
        )
        o = np.take_along_axis(d, part, axis=1).argsort(axis=1)
        out[s : s + 65536] = np.take_along_axis(part, o, axis=1)
    return out


def scalar_codebook(
    values: np.ndarray, k: int = 256, iters: int = 12, sample: int = 1 << 18, seed: int = 0
) -> np.ndarray:
    """A sorted 1-D codebook of ``k`` levels shared by all entries of ``values``.

    Lloyd's algorithm in one dimension, started from the uniform quantiser over [min, max], so its
    squared error is never above that of uniform ``log2 k``-bit codes on the values fitted. SOG
    stores scales and colours this way (one 256-entry table per attribute).

    Args:
        values: Values of any shape.
        k: Levels wanted.
        iters: Lloyd iterations.
        sample: Fit on a random sample of at most this many values.
        seed: Seed (deterministic).

    Returns:
        [k'] float32 levels, sorted ascending and distinct (k' <= k).
    """
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 0:
        return np.zeros(1, np.float32)
    rng = np.random.default_rng(seed)
    if v.size > sample:
        v = v[rng.choice(v.size, sample, replace=False)]
    v = np.sort(v)
    uniq = np.unique(v)
    if uniq.size <= k:
        return uniq.astype(np.float32)
    c = np.linspace(v[0], v[-1], k)  # the uniform quantiser; Lloyd steps never increase its error
    for _ in range(iters):
        edges = 0.5 * (c[1:] + c[:-1])
        cut = np.searchsorted(v, edges)
        starts = np.concatenate([[0], cut])
        ends = np.concatenate([cut, [v.size]])
        cs = np.concatenate([[0.0], np.cumsum(v)])
        cnt = ends - starts
        live = cnt > 0
        c[live] = (cs[ends[live]] - cs[starts[live]]) / cnt[live]
        c = np.sort(c)
    return np.unique(c.astype(np.float32))


def scalar_assign(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the nearest level of every value.

    Args:
        values: Values of any shape.
        levels: [L] levels, sorted ascending.

    Returns:
        Indices of the shape of ``values``: uint8 when L <= 256, else uint16.
    """
    lv = np.asarray(levels, np.float64)
    v = np.asarray(values, np.float64)
    hi = np.clip(np.searchsorted(lv, v), 1, len(lv) - 1) if len(lv) > 1 else np.zeros(v.shape, np.int64)
    if len(lv) > 1:
        lo = hi - 1
        idx = np.where(np.abs(v - lv[lo]) <= np.abs(v - lv[hi]), lo, hi)
    else:
        idx = hi
    return idx.astype(np.uint8 if len(lv) <= 256 else np.uint16)
