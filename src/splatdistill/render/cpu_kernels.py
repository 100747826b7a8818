"""Compiled CPU kernels (numba) for tile-based alpha compositing and its backward pass.

Written for this project: no CPU library rasterizes Gaussians with gradients. The algorithm is the
one of Kerbl et al. 2023 and gsplat: bin Gaussians into 16x16 tiles, sort each tile's list by depth,
composite front to back per pixel; the backward pass walks each pixel's list back to front,
recovering the transmittance by division. Threads work on disjoint tiles; gradients are written to
one slot per (tile, Gaussian) intersection and summed afterwards, so there are no data races.

Kernels are compiled once and cached on disk (numba ``cache=True``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

ALPHA_MIN = np.float32(1.0 / 255.0)
ALPHA_MAX = np.float32(0.999)
T_MIN = np.float32(1e-4)


@njit(cache=True, nogil=True)
def bin_tiles(means2d, radii, depths, tile_size, tiles_x, tiles_y):
    """Depth-sorted per-tile lists of the Gaussians whose bounding box meets each tile (CSR).

    Args:
        means2d: [N, 2] pixel coordinates.
        radii: [N, 2] int32 bounding-box half sizes (0: culled).
        depths: [N] camera-space z.
        tile_size: Tile width and height in pixels.
        tiles_x, tiles_y: Tiles per row and column.

    Returns:
        ``(offsets, ids)``: [n_tiles + 1] int64 offsets and [n_isect] int64 Gaussian ids.
    """
    n = means2d.shape[0]
    n_tiles = tiles_x * tiles_y
    order = np.argsort(depths, kind="mergesort")
    rect = np.zeros((n, 4), dtype=np.int32)
    counts = np.zeros(n_tiles + 1, dtype=np.int64)
    for i in range(n):
        if radii[i, 0] <= 0 and radii[i, 1] <= 0:
            continue
        x, y = means2d[i, 0], means2d[i, 1]
        rx, ry = radii[i, 0], radii[i, 1]
        x0 = min(max(0, int(math.floor((x - rx) / tile_size))), tiles_x)
        x1 = min(max(0, int(math.ceil((x + rx) / tile_size))), tiles_x)
        y0 = min(max(0, int(math.floor((y - ry) / tile_size))), tiles_y)
        y1 = min(max(0, int(math.ceil((y + ry) / tile_size))), tiles_y)
        rect[i, 0], rect[i, 1], rect[i, 2], rect[i, 3] = x0, x1, y0, y1
        for ty in range(y0, y1):
            for tx in range(x0, x1):
                counts[ty * tiles_x + tx + 1] += 1
    offsets = np.cumsum(counts)
    ptr = offsets[:-1].copy()
    ids = np.empty(offsets[-1], dtype=np.int32)
    for k in range(n):
        i = order[k]
        if radii[i, 0] <= 0 and radii[i, 1] <= 0:
            continue
        for ty in range(rect[i, 2], rect[i, 3]):
            for tx in range(rect[i, 0], rect[i, 1]):
                t = ty * tiles_x + tx
                ids[ptr[t]] = i
                ptr[t] += 1
    return offsets, ids


@njit(cache=True, inline="always")
def _pixel_range(lo, size, limit, m, r):
    """Pixels p of [lo, min(lo+size, limit)) whose centre p+0.5 may lie within (m - r, m + r)."""
    p0 = max(lo, int(math.floor(m - r - 0.5)))
    p1 = min(min(lo + size, limit), int(math.ceil(m + r - 0.5)) + 1)
    return p0, p1


@njit(cache=True, parallel=True, fastmath=False)
def rasterize_forward(
    means2d,
    conics,
    colors,
    opacities,
    radii,
    background,
    offsets,
    ids,
    width,
    height,
    tile_size,
    tiles_x,
    out_feat,
    out_t,
    out_last,
):
    """Front-to-back compositing of one camera, into the ``out_*`` arrays.

    Gaussian-major within a tile: each Gaussian visits only the tile pixels inside its bounding box
    (outside it alpha < 1/255, so this skips no contribution); every pixel still sees the tile's
    Gaussians in depth order, so the result is that of the per-pixel loop.

    Args:
        means2d: [N, 2], conics: [N, 3], colors: [N, D], opacities: [N], radii: [N, 2] of the
            projection; background: [D].
        offsets, ids: The tile lists from ``bin_tiles``.
        width, height, tile_size, tiles_x: Image and tile geometry.
        out_feat: [H, W, D] features, written.
        out_t: [H, W] final transmittance, written.
        out_last: [H, W] index (into ``ids``) of the last Gaussian that contributed to each pixel
            (-1 if none), written.

    Returns:
        None.
    """
    n_tiles = offsets.shape[0] - 1
    d_feat = colors.shape[1]
    npix = tile_size * tile_size
    for t in prange(n_tiles):
        start, end = offsets[t], offsets[t + 1]
        ty, tx = t // tiles_x, t % tiles_x
        x_lo, y_lo = tx * tile_size, ty * tile_size
        w_t, h_t = min(tile_size, width - x_lo), min(tile_size, height - y_lo)
        T = np.ones(npix, dtype=np.float32)
        done = np.zeros(npix, dtype=np.bool_)
        last = np.full(npix, -1, dtype=np.int64)
        acc = np.zeros((npix, d_feat), dtype=np.float32)
        n_live = w_t * h_t
        for j in range(start, end):
            if n_live == 0:
                break
            g = ids[j]
            mx, my = means2d[g, 0], means2d[g, 1]
            a_, b_, c_ = conics[g, 0], conics[g, 1], conics[g, 2]
            op = opacities[g]
            # alpha < 1/255  <=>  sigma > ln(255 o): skip the exp there (with a safety margin)
            s_max = np.float32(math.log(255.0 * op) + 1e-3)
            x0, x1 = _pixel_range(x_lo, tile_size, width, mx, radii[g, 0])
            y0, y1 = _pixel_range(y_lo, tile_size, height, my, radii[g, 1])
            for py in range(y0, y1):
                dy = my - (np.float32(py) + np.float32(0.5))
                row = (py - y_lo) * tile_size - x_lo
                for px in range(x0, x1):
                    p = row + px
                    if done[p]:
                        continue
                    dx = mx - (np.float32(px) + np.float32(0.5))
                    sigma = np.float32(0.5) * (a_ * dx * dx + c_ * dy * dy) + b_ * dx * dy
                    if sigma < 0.0 or sigma > s_max:
                        continue
                    alpha = min(ALPHA_MAX, op * np.float32(math.exp(-sigma)))
                    if alpha < ALPHA_MIN:
                        continue
                    tp = T[p]
                    next_t = tp * (np.float32(1.0) - alpha)
                    if next_t <= T_MIN:
                        done[p] = True
                        n_live -= 1
                        continue
                    w = alpha * tp
                    for k in range(d_feat):
                        acc[p, k] += colors[g, k] * w
                    T[p] = next_t
                    last[p] = j
        for py in range(y_lo, y_lo + h_t):
            for px in range(x_lo, x_lo + w_t):
                p = (py - y_lo) * tile_size + (px - x_lo)
                for k in range(d_feat):
                    out_feat[py, px, k] = acc[p, k] + T[p] * background[k]
                out_t[py, px] = T[p]
                out_last[py, px] = last[p]


@njit(cache=True, parallel=True, fastmath=False)
def rasterize_backward(
    means2d,
    conics,
    colors,
    opacities,
    radii,
    background,
    offsets,
    ids,
    width,
    height,
    tile_size,
    tiles_x,
    out_t,
    out_last,
    v_feat,
    v_alpha,
    g_means2d,
    g_conics,
    g_colors,
    g_opac,
):
    """Gradients of one camera per intersection slot j (same indexing as ``ids``).

    Walks each tile's list back to front, recovering transmittance by division; pixel p takes part
    for j <= its last contributor. Each slot is written by one thread, so there are no races; the
    caller sums the slots per Gaussian.

    Args:
        means2d, conics, colors, opacities, radii, background, offsets, ids, width, height,
            tile_size, tiles_x: As for ``rasterize_forward``.
        out_t, out_last: The forward pass's transmittance and last contributors.
        v_feat: [H, W, D] gradient of the features.
        v_alpha: [H, W] gradient of the alpha.
        g_means2d: [n_isect, 2], written.
        g_conics: [n_isect, 3], written.
        g_colors: [n_isect, D], written.
        g_opac: [n_isect], written.

    Returns:
        None.
    """
    n_tiles = offsets.shape[0] - 1
    d_feat = colors.shape[1]
    npix = tile_size * tile_size
    for t in prange(n_tiles):
        start = offsets[t]
        ty, tx = t // tiles_x, t % tiles_x
        x_lo, y_lo = tx * tile_size, ty * tile_size
        w_t, h_t = min(tile_size, width - x_lo), min(tile_size, height - y_lo)
        T = np.ones(npix, dtype=np.float32)
        t_fin = np.ones(npix, dtype=np.float32)
        last = np.full(npix, -1, dtype=np.int64)
        buf = np.zeros((npix, d_feat), dtype=np.float32)
        vf = np.zeros((npix, d_feat), dtype=np.float32)
        va_bg = np.zeros(npix, dtype=np.float32)
        g_col = np.zeros(d_feat, dtype=np.float32)
        j_max = -1
        for py in range(y_lo, y_lo + h_t):
            for px in range(x_lo, x_lo + w_t):
                p = (py - y_lo) * tile_size + (px - x_lo)
                last[p] = out_last[py, px]
                T[p] = out_t[py, px]
                t_fin[p] = out_t[py, px]
                bg_dot = np.float32(0.0)
                for k in range(d_feat):
                    vf[p, k] = v_feat[py, px, k]
                    bg_dot += background[k] * v_feat[py, px, k]
                va_bg[p] = v_alpha[py, px] - bg_dot
                j_max = max(j_max, last[p])
        for j in range(j_max, start - 1, -1):
            g = ids[j]
            mx, my = means2d[g, 0], means2d[g, 1]
            a_, b_, c_ = conics[g, 0], conics[g, 1], conics[g, 2]
            op = opacities[g]
            s_max = np.float32(math.log(255.0 * op) + 1e-3)
            gm0 = gm1 = gc0 = gc1 = gc2 = go = np.float32(0.0)
            for k in range(d_feat):
                g_col[k] = 0.0
            x0, x1 = _pixel_range(x_lo, tile_size, width, mx, radii[g, 0])
            y0, y1 = _pixel_range(y_lo, tile_size, height, my, radii[g, 1])
            for py in range(y0, y1):
                dy = my - (np.float32(py) + np.float32(0.5))
                row = (py - y_lo) * tile_size - x_lo
                for px in range(x0, x1):
                    p = row + px
                    if j > last[p]:
                        continue
                    dx = mx - (np.float32(px) + np.float32(0.5))
                    sigma = np.float32(0.5) * (a_ * dx * dx + c_ * dy * dy) + b_ * dx * dy
                    if sigma < 0.0 or sigma > s_max:
                        continue
                    vis = np.float32(math.exp(-sigma))
                    raw = op * vis
                    alpha = min(ALPHA_MAX, raw)
                    if alpha < ALPHA_MIN:
                        continue
                    ra = np.float32(1.0) / (np.float32(1.0) - alpha)
                    tp = T[p] * ra
                    T[p] = tp
                    fac = alpha * tp
                    v_a = np.float32(0.0)
                    for k in range(d_feat):
                        g_col[k] += fac * vf[p, k]
                        v_a += (colors[g, k] * tp - buf[p, k] * ra) * vf[p, k]
                        buf[p, k] += colors[g, k] * fac
                    v_a += t_fin[p] * ra * va_bg[p]
                    if raw <= ALPHA_MAX:
                        v_sigma = -raw * v_a
                        gc0 += np.float32(0.5) * v_sigma * dx * dx
                        gc1 += v_sigma * dx * dy
                        gc2 += np.float32(0.5) * v_sigma * dy * dy
                        gm0 += v_sigma * (a_ * dx + b_ * dy)
                        gm1 += v_sigma * (b_ * dx + c_ * dy)
                        go += vis * v_a
            g_means2d[j, 0] = gm0
            g_means2d[j, 1] = gm1
            g_conics[j, 0] = gc0
            g_conics[j, 1] = gc1
            g_conics[j, 2] = gc2
            g_opac[j] = go
            for k in range(d_feat):
                g_colors[j, k] = g_col[k]
