"""Real spherical harmonics, degree 0-3, in the convention of gsplat and the Inria 3DGS code.

colour = sum_k coeffs[k] * Y_k(dir) + 0.5, clamped at 0 by the caller.
Constants: the usual real SH normalisation (as in the Inria ``sh_utils`` and gsplat).
"""

from __future__ import annotations

import torch

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Real SH basis values Y_k(dir) for k < (degree+1)^2.

    Args:
        degree: SH degree, 0-3.
        dirs: [..., 3] directions; need not be normalised.

    Returns:
        [..., (degree+1)^2] basis values, dtype of ``dirs``.
    """
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be 0..3, got {degree}")
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        out += [
            C2[0] * xy,
            C2[1] * yz,
            C2[2] * (2.0 * zz - xx - yy),
            C2[3] * xz,
            C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            C3[0] * y * (3 * xx - yy),
            C3[1] * xy * z,
            C3[2] * y * (4 * zz - xx - yy),
            C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            C3[4] * x * (4 * zz - xx - yy),
            C3[5] * z * (xx - yy),
            C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, coeffs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Evaluate SH in directions, as gsplat does.

    Only the first (degree+1)^2 coefficients are used (the rest are ignored).

    Args:
        degree: SH degree to evaluate, 0-3.
        coeffs: [..., K, 3] coefficients, K >= (degree+1)^2.
        dirs: [..., 3] view directions; need not be normalised.

    Returns:
        [..., 3] raw SH values (add 0.5 and clamp at 0 to get a colour).
    """
    k = (degree + 1) ** 2
    if coeffs.shape[-2] < k:
        raise ValueError(f"need at least {k} SH coefficients for degree {degree}, got {coeffs.shape[-2]}")
    basis = sh_basis(degree, dirs)  # (..., k)
    return (basis.unsqueeze(-1) * coeffs[..., :k, :]).sum(dim=-2)


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """DC coefficient that gives colour ``rgb`` (the inverse of ``C0 * dc + 0.5``).

    Args:
        rgb: [..., 3] colours.

    Returns:
        [..., 3] DC coefficients.
    """
    return (rgb - 0.5) / C0


def sh0_to_rgb(dc: torch.Tensor) -> torch.Tensor:
    """Colour of a DC coefficient alone, ``C0 * dc + 0.5`` (not clamped).

    Args:
        dc: [..., 3] DC coefficients.

    Returns:
        [..., 3] colours.
    """
    return dc * C0 + 0.5
