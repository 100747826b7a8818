"""Dense reference rasterizer: every Gaussian against every pixel, in plain torch with autograd.

Short and obviously correct, slow; tests compare the fast backends against it. On CPU it composites
the output of the same fused projection as the ``cpu`` backend (so threshold decisions agree bit for
bit); the projection is tested separately against the plain torch one in ``projection.py``. Same rules as gsplat's
tile rasterizer: pixel centres at +0.5, alpha = min(0.999, o * exp(-sigma)), sigma < 0 and
alpha < 1/255 skipped, compositing stops before transmittance would drop to <= 1e-4, background
added with the final transmittance.
"""

from __future__ import annotations

import torch

from splatdistill.render.projection import ALPHA_THRESHOLD, Projection


def rasterize_dense(
    proj: Projection,
    colors: torch.Tensor,  # (C, N, D)
    background: torch.Tensor,  # (C, D)
    width: int,
    height: int,
    max_elements: int = 1 << 24,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite every Gaussian against every pixel, in plain torch (autograd), depth-sorted per camera.

    Args:
        proj: The ``Projection``.
        colors: [C, N, D] colours or features.
        background: [C, D] background.
        width, height: Image size in pixels.
        max_elements: Pixels x Gaussians per chunk (bounds the memory).

    Returns:
        ``(features, alpha)``: [C, H, W, D] and [C, H, W].
    """
    out_c, out_a = [], []
    for ci in range(colors.shape[0]):
        keep = (proj.radii[ci] > 0).any(dim=-1)
        order = torch.argsort(proj.depths[ci].detach().masked_fill(~keep, float("inf")), stable=True)
        order = order[: int(keep.sum())]
        m2d = proj.means2d[ci, order]
        con = proj.conics[ci, order]
        opa = proj.opacities[ci, order]
        col = colors[ci, order]
        ys, xs = torch.meshgrid(
            torch.arange(height, dtype=m2d.dtype), torch.arange(width, dtype=m2d.dtype), indexing="ij"
        )
        pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1) + 0.5  # (P, 2)
        n = max(1, order.numel())
        chunk = max(1, max_elements // n)
        feats, alphas = [], []
        for s in range(0, pix.shape[0], chunk):
            d = m2d.unsqueeze(0) - pix[s : s + chunk].unsqueeze(1)  # (p, n, 2)
            dx, dy = d[..., 0], d[..., 1]
            sigma = 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy
            alpha = torch.clamp_max(opa * torch.exp(-sigma), 0.999)
            alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
            next_t = torch.cumprod(1.0 - alpha, dim=-1)
            alpha = torch.where(next_t > 1e-4, alpha, torch.zeros_like(alpha))
            one_minus = 1.0 - alpha
            trans = torch.cumprod(torch.cat([torch.ones_like(one_minus[:, :1]), one_minus[:, :-1]], dim=-1), dim=-1)
            w = alpha * trans  # (p, n)
            t_final = torch.prod(one_minus, dim=-1) if n else torch.ones(d.shape[0])
            feats.append(w @ col + t_final.unsqueeze(-1) * background[ci])
            alphas.append(1.0 - t_final)
        out_c.append(torch.cat(feats).reshape(height, width, -1))
        out_a.append(torch.cat(alphas).reshape(height, width))
    return torch.stack(out_c), torch.stack(out_a)
