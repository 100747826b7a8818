"""Teacher variants of Distilled-3DGS (Xiang et al. 2025; METHODS.md §1), as the paper means them.

- ``noise``: at regular intervals in a window, the clone candidates (accumulated screen-space gradient
  >= grow_grad2d and max scale <= grow_scale3d * extent) get position, opacity logit, log-scale and
  rotation perturbed by eps * 0.1 * max(mean|p|, 1), eps ~ N(0, 1), and their Adam moments reset.
- ``dropout``: every iteration of a window, opacity * mask / (1 - p), p rising linearly.
"""

from __future__ import annotations

import torch

PERTURBED = ("means", "opacities", "scales", "quats")


def dropout_probability(step: int, start: int, end: int, p_start: float, p_end: float) -> float:
    if end <= start:
        return p_start
    f = min(1.0, max(0.0, (step - start) / (end - start)))
    return p_start + f * (p_end - p_start)


def dropout_scale(n: int, p: float, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """Opacity multiplier: Bernoulli(1 - p) mask rescaled by 1 / (1 - p)."""
    keep = torch.rand(n, generator=generator, device=device) >= p
    return keep.float() / (1.0 - p)


@torch.no_grad()
def perturb_candidates(
    params: dict[str, torch.nn.Parameter],
    optimizers: dict[str, torch.optim.Optimizer],
    candidates: torch.Tensor,
    scale: float = 0.1,
    generator: torch.Generator | None = None,
) -> int:
    """Perturb the selected Gaussians in place and zero their Adam moments. Returns how many."""
    idx = torch.nonzero(candidates, as_tuple=False).squeeze(-1)
    if idx.numel() == 0:
        return 0
    for name in PERTURBED:
        p = params[name]
        mag = scale * max(float(p.detach().abs().mean()), 1.0)
        noise = torch.randn(p[idx].shape, generator=generator, device=p.device) * mag
        p[idx] += noise
        for group in optimizers[name].param_groups:
            for q in group["params"]:
                st = optimizers[name].state.get(q, {})
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in st:
                        st[key][idx] = 0
    return int(idx.numel())


class GradientAccumulator:
    """Mean screen-space gradient norm per Gaussian (the densification statistic of 3DGS), kept by
    the noise variant for its window, where the densification strategy no longer accumulates."""

    def __init__(self):
        self.grad = None
        self.count = None

    def reset(self, n: int, device) -> None:
        self.grad = torch.zeros(n, device=device)
        self.count = torch.zeros(n, device=device)

    @torch.no_grad()
    def update(self, info: dict) -> None:
        g = info["means2d"].grad
        if g is None:
            return
        n = g.shape[-2]
        if self.grad is None or self.grad.shape[0] != n:
            self.reset(n, g.device)
        g = g.clone()
        g[..., 0] *= info["width"] / 2.0 * info["n_cameras"]
        g[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
        visible = (info["radii"] > 0).all(dim=-1)  # (C, N)
        norms = g.norm(dim=-1) * visible
        self.grad += norms.sum(dim=0)
        self.count += visible.sum(dim=0).float()

    def mean(self) -> torch.Tensor:
        return self.grad / self.count.clamp_min(1)
