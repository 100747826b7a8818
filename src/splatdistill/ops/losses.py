"""Photometric loss of 3DGS: (1 - lambda) L1 + lambda (1 - SSIM), lambda = 0.2 (Kerbl et al. 2023)."""

from __future__ import annotations

import torch

from splatdistill.ops.ssim import ssim


def photometric_loss(pred: torch.Tensor, target: torch.Tensor, ssim_lambda: float = 0.2) -> torch.Tensor:
    """The 3DGS photometric loss (1 - lambda) L1 + lambda (1 - SSIM).

    Args:
        pred: [C, H, W, 3] renders in [0, 1].
        target: [C, H, W, 3] ground truth in [0, 1].
        ssim_lambda: lambda; 0 gives the L1 alone.

    Returns:
        A scalar (0-d) tensor.
    """
    l1 = (pred - target).abs().mean()
    if ssim_lambda == 0:
        return l1
    s = ssim(pred.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2))
    return (1.0 - ssim_lambda) * l1 + ssim_lambda * (1.0 - s)


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error of images in [0, 1].

    Args:
        mse: The mean squared error.

    Returns:
        ``-10 log10(mse)``; ``inf`` for 0.
    """
    import math

    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)
