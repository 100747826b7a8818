"""View-dependent colour of each Gaussian from its SH coefficients (gsplat's convention)."""

from __future__ import annotations

import torch

from splatdistill.scene.sh import eval_sh


def camera_centers(viewmats: torch.Tensor) -> torch.Tensor:
    """Camera centres in world coordinates.

    Args:
        viewmats: [C, 4, 4] world-to-camera matrices.

    Returns:
        [C, 3] centres.
    """
    R = viewmats[:, :3, :3]
    t = viewmats[:, :3, 3]
    return -(R.transpose(-1, -2) @ t.unsqueeze(-1)).squeeze(-1)


def view_colors(means: torch.Tensor, coeffs: torch.Tensor, viewmats: torch.Tensor, sh_degree: int) -> torch.Tensor:
    """View-dependent colours: SH evaluated along camera centre -> mean, plus 0.5, clamped at 0.

    Args:
        means: [N, 3] positions.
        coeffs: [N, K, 3] SH coefficients.
        viewmats: [C, 4, 4] world-to-camera matrices.
        sh_degree: SH degree to evaluate.

    Returns:
        [C, N, 3] colours.
    """
    if sh_degree == 0:
        # direction-independent: evaluate once and broadcast over cameras
        rgb = coeffs[:, 0, :] * 0.28209479177387814 + 0.5
        return torch.clamp_min(rgb, 0.0).unsqueeze(0).expand(viewmats.shape[0], -1, -1)
    dirs = means.unsqueeze(0) - camera_centers(viewmats).unsqueeze(1)  # (C, N, 3)
    rgb = eval_sh(sh_degree, coeffs.unsqueeze(0).expand(dirs.shape[0], -1, -1, -1), dirs) + 0.5
    return torch.clamp_min(rgb, 0.0)
