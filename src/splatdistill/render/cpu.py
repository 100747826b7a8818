"""The ``cpu`` backend: torch projection and SH (autograd) + compiled tile compositing (numba)."""

from __future__ import annotations

import numpy as np
import torch

from splatdistill.render import cpu_kernels as K
from splatdistill.render.projection import Projection

TILE_SIZE = 16


def _np(t: torch.Tensor, dtype=np.float32) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(dtype, copy=False))


class _RasterizeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, background, radii, depths, width, height):
        tiles_x = (width + TILE_SIZE - 1) // TILE_SIZE
        tiles_y = (height + TILE_SIZE - 1) // TILE_SIZE
        m2d, con, col, opa, bg = (_np(t) for t in (means2d, conics, colors, opacities, background))
        rad = _np(radii, np.int32)
        offsets, ids = K.bin_tiles(m2d, rad, _np(depths), TILE_SIZE, tiles_x, tiles_y)
        d = col.shape[1]
        feat = np.empty((height, width, d), dtype=np.float32)
        t_final = np.empty((height, width), dtype=np.float32)
        last = np.empty((height, width), dtype=np.int64)
        K.rasterize_forward(
            m2d, con, col, opa, rad, bg, offsets, ids, width, height, TILE_SIZE, tiles_x, feat, t_final, last
        )
        ctx.arrays = (m2d, con, col, opa, rad, bg, offsets, ids, t_final, last)
        ctx.dims = (width, height, tiles_x)
        ctx.n = means2d.shape[0]
        return torch.from_numpy(feat), torch.from_numpy(1.0 - t_final)

    @staticmethod
    def backward(ctx, v_feat, v_alpha):
        m2d, con, col, opa, rad, bg, offsets, ids, t_final, last = ctx.arrays
        width, height, tiles_x = ctx.dims
        n_isect = ids.shape[0]
        d = col.shape[1]
        g_m = np.zeros((n_isect, 2), np.float32)
        g_c = np.zeros((n_isect, 3), np.float32)
        g_col = np.zeros((n_isect, d), np.float32)
        g_o = np.zeros(n_isect, np.float32)
        vf = _np(v_feat) if v_feat is not None else np.zeros((height, width, d), np.float32)
        va = _np(v_alpha) if v_alpha is not None else np.zeros((height, width), np.float32)
        K.rasterize_backward(
            m2d,
            con,
            col,
            opa,
            rad,
            bg,
            offsets,
            ids,
            width,
            height,
            TILE_SIZE,
            tiles_x,
            t_final,
            last,
            vf,
            va,
            g_m,
            g_c,
            g_col,
            g_o,
        )
        idx = torch.from_numpy(ids.astype(np.int64))
        n = ctx.n

        def reduce(g):
            g = torch.from_numpy(g)
            out = torch.zeros((n,) + tuple(g.shape[1:]), dtype=torch.float32)
            return out.index_add_(0, idx, g)

        v_bg = torch.from_numpy((t_final[..., None] * vf).sum(axis=(0, 1)))
        return reduce(g_m), reduce(g_c), reduce(g_col), reduce(g_o), v_bg, None, None, None, None


def rasterize_cpu(
    proj: Projection, colors: torch.Tensor, background: torch.Tensor, width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tile compositing of projected Gaussians with the compiled kernels, one camera at a time.

    Differentiable (hand-written backward) in the projection's fields and the colours.

    Args:
        proj: The ``Projection`` ([C, N] fields).
        colors: [C, N, D] colours or features.
        background: [C, D] background.
        width, height: Image size in pixels.

    Returns:
        ``(features, alpha)``: [C, H, W, D] and [C, H, W].
    """
    feats, alphas = [], []
    for c in range(colors.shape[0]):
        f, a = _RasterizeCPU.apply(
            proj.means2d[c],
            proj.conics[c],
            colors[c],
            proj.opacities[c],
            background[c],
            proj.radii[c],
            proj.depths[c],
            width,
            height,
        )
        feats.append(f)
        alphas.append(a)
    return torch.stack(feats), torch.stack(alphas)
