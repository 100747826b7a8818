"""Importance scores of Gaussians, for pruning.

- ``blend``: Mini-Splatting's accumulated blending weight, sum over training pixels of alpha_j T_j
  (Fang & Wang 2024; the Distilled-3DGS student's "indoor" score, METHODS.md §1).
- ``significance``: LightGaussian's global significance (Fan et al. 2024, METHODS.md §2): the same
  hit-weighted opacity-transmittance sum times a volume factor (V / V90)^beta clipped to [0, 1],
  V = product of the scales, V90 the 90th-percentile volume, beta = 0.1 (the paper's normalisation).
- ``opacity``: the activated opacity.

The accumulated weight is read as a gradient: rendering a constant feature 1 per Gaussian, the sum of
the output over all pixels has derivative sum_pixels alpha_j T_j with respect to Gaussian j's feature.
This works unchanged on every render backend.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from splatdistill.cameras.camera import Camera, stack_cameras
from splatdistill.render import render
from splatdistill.scene.gaussians import GaussianScene

Score = Literal["significance", "blend", "opacity"]


def accumulated_weights(scene: GaussianScene, cameras: Sequence[Camera], backend: str = "auto") -> torch.Tensor:
    """Each Gaussian's blending weight alpha * T summed over the cameras' pixels (read as a gradient).

    Args:
        scene: The scene.
        cameras: The cameras (rendered one at a time).
        backend: Render backend (see ``render``).

    Returns:
        [N] float32 weights, on the scene's device.
    """
    scene = scene.detach()
    total = torch.zeros(len(scene), device=scene.device)
    for cam in cameras:
        ones = torch.ones(len(scene), 1, device=scene.device, requires_grad=True)
        out = render(scene, stack_cameras([cam], scene.device), features=ones, backend=backend)
        (g,) = torch.autograd.grad(out.features.sum(), ones)
        total += g[:, 0]
    return total


def volume_factor(scene: GaussianScene, beta: float = 0.1, percentile: float = 0.9) -> torch.Tensor:
    """LightGaussian's volume factor (V / V90)^beta clipped to [0, 1].

    Args:
        scene: The scene.
        beta: Exponent.
        percentile: Quantile of the volumes that normalises them (0.9: V90).

    Returns:
        [N] float32 factors in [0, 1].
    """
    vol = torch.exp(scene.scales.detach()).prod(dim=-1)
    ref = torch.quantile(vol, percentile) if len(vol) else vol.new_tensor(1.0)
    return (vol / ref.clamp_min(1e-30)).clamp(0.0, 1.0) ** beta


def importance(
    scene: GaussianScene, cameras: Sequence[Camera], score: Score = "significance", backend: str = "auto"
) -> torch.Tensor:
    """Importance score of every Gaussian, for pruning (see the module docstring).

    Args:
        scene: The scene.
        cameras: The cameras the weights are accumulated over (unused for ``opacity``).
        score: ``significance`` (weights x volume factor), ``blend`` (weights) or ``opacity``.
        backend: Render backend (see ``render``).

    Returns:
        [N] float32 scores >= 0. An unknown score raises ``ValueError``.
    """
    if score == "opacity":
        return torch.sigmoid(scene.opacities.detach())
    w = accumulated_weights(scene, cameras, backend)
    if score == "blend":
        return w
    if score == "significance":
        return w * volume_factor(scene)
    raise ValueError(f"unknown importance score '{score}'")


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k highest scores, exactly k of them.

    Ties are broken by index so exactly k are kept (a plain threshold can keep one Gaussian when many
    scores tie at 0, a LightGaussian complaint).

    Args:
        scores: [N] scores.
        k: How many to keep; clipped to [0, N].

    Returns:
        [N] bool mask with k True entries.
    """
    k = max(0, min(int(k), scores.numel()))
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k:
        mask[torch.topk(scores, k, sorted=False).indices] = True
    return mask
