"""EWA projection of 3D Gaussians to the image plane, in torch (autograd), with gsplat 1.5.3's conventions.

Conventions (Zwicker et al. 2001 EWA splatting; Kerbl et al. 2023; gsplat ``fully_fused_projection``):

- Sigma = R S S^T R^T from the normalised quaternion (w, x, y, z) and the activated scales.
- Camera-space covariance W Sigma W^T; 2D covariance J W Sigma W^T J^T with the perspective Jacobian,
  the point's x/z and y/z clamped to 1.3x the field of view (as gsplat does, for stability at the edges).
- A low-pass of ``eps2d`` = 0.3 px^2 on the diagonal of the 2D covariance.
- ``antialiased`` (gsplat's ``rasterize_mode="antialiased"``, Mip-Splatting's 2D filter): the opacity is
  multiplied by ``sqrt(max(0, det(Sigma2) / det(Sigma2 + eps2d I)))`` (gsplat 1.5.3 ``add_blur``), which keeps
  the filtered Gaussian's integral that of the unfiltered one; culling and the bounding box use the
  compensated opacity (as gsplat's projection does).
- Culled (radius 0): depth <= near or >= far, det <= 0, opacity < 1/255, bounding box off the image.
- Opacity-aware bounding box: extend = min(3.33, sqrt(2 ln(255 o))) standard deviations per axis
  (gsplat 1.5.3, after Radl et al. 2024 "StopThePop", sec. B.2): outside it alpha < 1/255, so culling
  by it never changes the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ALPHA_THRESHOLD = 1.0 / 255.0


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices of quaternions of any norm.

    Args:
        quats: [N, 4] quaternions (w, x, y, z).

    Returns:
        [N, 3, 3] rotation matrices.
    """
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))


def covariance_3d(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """3D covariances R S S^T R^T from quaternions and scales.

    Args:
        quats: [N, 4] quaternions (w, x, y, z).
        scales: [N, 3] activated (positive) scales.

    Returns:
        [N, 3, 3] covariances.
    """
    M = quat_to_rotmat(quats) * scales.unsqueeze(-2)  # R @ diag(s)
    return M @ M.transpose(-1, -2)


@dataclass
class Projection:
    """N Gaussians projected into C cameras.

    Args:
        means2d: [C, N, 2] pixel coordinates.
        conics: [C, N, 3] inverse 2D covariances (a, b, c) of [[a, b], [b, c]].
        depths: [C, N] camera-space z.
        radii: [C, N, 2] int32 bounding-box half sizes; 0 = culled.
        opacities: [C, N] activated opacities (times the compensation in antialiased mode).
    """

    means2d: torch.Tensor  # (C, N, 2) pixel coordinates
    conics: torch.Tensor  # (C, N, 3) inverse 2D covariance (a, b, c): [[a, b], [b, c]]
    depths: torch.Tensor  # (C, N) camera-space z
    radii: torch.Tensor  # (C, N, 2) int32 bounding-box half sizes; 0 = culled
    opacities: torch.Tensor  # (C, N) activated opacities


def project(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    antialiased: bool = False,
) -> Projection:
    """Project N Gaussians into C cameras, in torch (autograd).

    Args:
        means: [N, 3] positions.
        quats: [N, 4] quaternions (w, x, y, z), any norm.
        scales: [N, 3] activated scales.
        opacities: [N] activated opacities.
        viewmats: [C, 4, 4] world-to-camera matrices.
        Ks: [C, 3, 3] intrinsics.
        width, height: Image size in pixels.
        eps2d: The 2D low-pass added to each projected covariance, in px^2.
        near_plane, far_plane: Depth range; Gaussians outside are culled.
        antialiased: Multiply the opacities by the low-pass compensation.

    Returns:
        A ``Projection``.
    """
    R = viewmats[:, :3, :3]  # (C, 3, 3)
    t = viewmats[:, :3, 3]  # (C, 3)
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # (C, N, 3)
    cov = covariance_3d(quats, scales)  # (N, 3, 3)
    cov_c = torch.einsum("cij,njk,clk->cnil", R, cov, R)  # (C, N, 3, 3)

    x, y, z = means_c.unbind(-1)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    # guard the division for points at z = 0 (culled below); keeps gradients finite
    z_safe = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    rz = 1.0 / z_safe
    tx = z * torch.clamp(x * rz, -lim_x_neg, lim_x_pos)
    ty = z * torch.clamp(y * rz, -lim_y_neg, lim_y_pos)
    zero = torch.zeros_like(z)
    J = torch.stack([fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz], dim=-1).reshape(
        z.shape + (2, 3)
    )
    cov2d = J @ cov_c @ J.transpose(-1, -2)  # (C, N, 2, 2)
    a = cov2d[..., 0, 0] + eps2d
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    opac = opacities.unsqueeze(0).expand(z.shape)
    if antialiased:
        det_orig = cov2d[..., 0, 0] * cov2d[..., 1, 1] - b * b
        ratio = det_orig / det_safe
        pos = (det > 0) & (ratio > 0)
        comp = torch.where(pos, torch.sqrt(torch.where(pos, ratio, torch.ones_like(ratio))), torch.zeros_like(ratio))
        opac = opac * comp
    with torch.no_grad():
        valid = (det > 0) & (z > near_plane) & (z < far_plane) & (opac >= ALPHA_THRESHOLD)
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp_max(3.33)
        rx = torch.ceil(extend * a.clamp_min(0).sqrt())
        ry = torch.ceil(extend * c.clamp_min(0).sqrt())
        valid &= (rx > 0) | (ry > 0)
        mx, my = means2d[..., 0], means2d[..., 1]
        valid &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        valid &= torch.isfinite(mx) & torch.isfinite(my)
        radii = torch.stack([rx, ry], dim=-1)
        radii = torch.where(valid.unsqueeze(-1), radii, torch.zeros_like(radii)).to(torch.int32)
    return Projection(means2d, conics, z, radii, opac)
