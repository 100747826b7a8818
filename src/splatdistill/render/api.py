"""``render()``: one entry point for every backend.

``auto`` picks ``gsplat`` for CUDA tensors and ``cpu`` otherwise; ``reference`` is the dense torch
renderer used by tests. Every backend returns the same :class:`RenderOutput`, whose ``info`` holds
what gsplat's ``DefaultStrategy`` and ``MCMCStrategy`` read, so those strategies work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch

from splatdistill.cameras.camera import Camera, CameraBatch, stack_cameras
from splatdistill.errors import UserError
from splatdistill.render.colors import camera_centers, view_colors
from splatdistill.render.projection import Projection, project
from splatdistill.scene.gaussians import GaussianScene

Backend = Literal["auto", "cpu", "gsplat", "reference"]


@dataclass
class RenderOutput:
    """What ``render`` returns.

    Args:
        rgb: [C, H, W, 3] float32 colours, background included.
        alpha: [C, H, W] float32 accumulated opacity.
        depth: [C, H, W] expected depth (sum w z / alpha), or None unless ``render_depth``.
        info: What gsplat's densification strategies read: ``means2d`` (gradient retained),
            ``radii`` [C, N, 2], ``width``, ``height``, ``n_cameras``, ``gaussian_ids`` and more.
        features: [C, H, W, D] composited features when ``features`` were given instead of SH.
    """

    rgb: torch.Tensor  # (C, H, W, 3)
    alpha: torch.Tensor  # (C, H, W)
    depth: torch.Tensor | None  # (C, H, W) expected depth (sum w z / alpha), or None
    info: dict = field(default_factory=dict)
    features: torch.Tensor | None = None  # (C, H, W, D) when ``features`` were given instead of SH


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend ``backend`` stands for on ``device``.

    Args:
        backend: ``auto`` (gsplat on CUDA, else cpu), ``cpu``, ``gsplat`` or ``reference``.
        device: The scene's device.

    Returns:
        ``cpu``, ``gsplat`` or ``reference``. An unknown name, or ``cpu`` for non-CPU tensors, raises
        ``UserError``.
    """
    if backend == "auto":
        return "gsplat" if device.type == "cuda" else "cpu"
    if backend not in ("cpu", "gsplat", "reference"):
        raise UserError(f"unknown render backend '{backend}' (choose auto, cpu, gsplat or reference)")
    if backend == "cpu" and device.type != "cpu":
        raise UserError("the cpu backend needs CPU tensors; move the scene with .to('cpu')")
    return backend


def _background(background, n_cams: int, dims: int, device) -> torch.Tensor:
    if background is None:
        bg = torch.zeros(3, device=device)
    else:
        bg = torch.as_tensor(background, dtype=torch.float32, device=device)
    if bg.ndim == 1:
        bg = bg.unsqueeze(0).expand(n_cams, -1)
    if dims > 3:  # depth channel: background contributes nothing
        bg = torch.cat([bg, torch.zeros(n_cams, dims - 3, device=device)], dim=-1)
    return bg.contiguous()


def project_cpu(
    means,
    quats,
    scales,
    opacities,
    viewmats,
    Ks,
    width,
    height,
    eps2d=0.3,
    near_plane=0.01,
    far_plane=1e10,
    antialiased: bool = False,
) -> Projection:
    """The fused numba projection (same results as :func:`.projection.project`), camera by camera.

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
        antialiased: Multiply the opacities by the low-pass compensation (gsplat's antialiased mode).

    Returns:
        A ``Projection`` with [C, N] fields (differentiable except ``radii``).
    """
    from splatdistill.render.cpu_projection import ProjectCPU

    outs = [
        ProjectCPU.apply(
            means,
            quats,
            scales,
            opacities,
            viewmats[c],
            Ks[c],
            width,
            height,
            eps2d,
            near_plane,
            far_plane,
            bool(antialiased),
        )
        for c in range(viewmats.shape[0])
    ]
    m2d, con, dep, rad, comp = (torch.stack(t) for t in zip(*outs))
    opac = opacities.unsqueeze(0).expand(dep.shape)
    return Projection(m2d, con, dep, rad, opac * comp if antialiased else opac)


def render(
    scene: GaussianScene,
    cameras: Camera | Sequence[Camera] | CameraBatch,
    sh_degree: int | None = None,
    background=None,
    backend: Backend = "auto",
    render_depth: bool = False,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    opacity_scale: torch.Tensor | None = None,
    features: torch.Tensor | None = None,
    antialiased: bool | None = None,
) -> RenderOutput:
    """Render ``scene`` from ``cameras`` (all of one size), on any backend.

    Args:
        scene: The scene (CPU tensors for ``cpu``, CUDA tensors for ``gsplat``).
        cameras: One camera, a list of C cameras of one size, or a ``CameraBatch``.
        sh_degree: SH degree to evaluate; the scene's when None.
        background: RGB triple or [C, 3] tensor composited behind the Gaussians (black if None).
        backend: ``auto`` (gsplat on CUDA, cpu otherwise), ``cpu``, ``gsplat`` or ``reference``.
        render_depth: Also return the expected depth.
        eps2d: The 2D low-pass added to each projected covariance, in px^2 (gsplat's 0.3).
        near_plane, far_plane: Depth range; Gaussians outside are culled.
        opacity_scale: [N] factors multiplying the activated opacities (masks, confidences, dropout).
        features: [N, D] or [C, N, D] features to composite instead of the SH colour (no clamp, no
            background beyond the first three channels).
        antialiased: Render with gsplat's ``rasterize_mode="antialiased"`` (Mip-Splatting's 2D filter:
            opacities compensated for the ``eps2d`` low-pass); ``scene.antialiased`` when None.

    Returns:
        A ``RenderOutput``: ``rgb`` [C, H, W, 3], ``alpha`` [C, H, W], optional ``depth`` [C, H, W],
        ``info`` for the densification strategies, and ``features`` [C, H, W, D] when given.
    """
    device = scene.device
    cams = (
        cameras
        if isinstance(cameras, CameraBatch)
        else stack_cameras([cameras] if isinstance(cameras, Camera) else list(cameras), device)
    )
    if sh_degree is None:
        sh_degree = scene.sh_degree
    if not 0 <= sh_degree <= scene.sh_degree:
        raise ValueError(f"sh_degree {sh_degree} exceeds the scene's degree {scene.sh_degree}")
    name = resolve_backend(backend, device)
    aa = scene.antialiased if antialiased is None else bool(antialiased)
    opacities = torch.sigmoid(scene.opacities)
    if opacity_scale is not None:
        opacities = opacities * opacity_scale
    if name == "gsplat" and features is not None:
        from gsplat import rasterization

        feats, alpha, _ = rasterization(
            scene.means,
            scene.quats,
            torch.exp(scene.scales),
            opacities,
            features,
            cams.viewmats,
            cams.Ks,
            cams.width,
            cams.height,
            packed=False,
            eps2d=eps2d,
            near_plane=near_plane,
            far_plane=far_plane,
            rasterize_mode="antialiased" if aa else "classic",
        )
        return RenderOutput(feats[..., :3], alpha[..., 0], None, {}, features=feats)
    if name == "gsplat":
        from splatdistill.render.gsplat_backend import rasterize_gsplat

        scaled = scene
        if opacity_scale is not None:  # fold the scale into the logits gsplat activates itself
            params = dict(scene.params)
            params["opacities"] = torch.logit(opacities.clamp(1e-7, 1 - 1e-7))
            scaled = GaussianScene(**params, antialiased=scene.antialiased)
        bg = None if background is None else _background(background, len(cams), 3, device)
        feats, alpha, info = rasterize_gsplat(
            scaled, cams, sh_degree, bg, render_depth, eps2d, near_plane, far_plane, antialiased=aa
        )
        depth = feats[..., 3] if render_depth else None
        return RenderOutput(feats[..., :3], alpha, depth, info)

    # The reference rasterizer shares the fused projection on CPU, so both backends make the same
    # float32 threshold decisions (alpha >= 1/255, T > 1e-4) and images can be compared exactly;
    # the fused projection itself is tested against the torch one (tests/test_render.py).
    project_fn = project_cpu if device.type == "cpu" and name in ("cpu", "reference") else project
    proj = project_fn(
        scene.means,
        scene.quats,
        torch.exp(scene.scales),
        opacities,
        cams.viewmats,
        cams.Ks,
        cams.width,
        cams.height,
        eps2d=eps2d,
        near_plane=near_plane,
        far_plane=far_plane,
        antialiased=aa,
    )
    if proj.means2d.requires_grad:
        proj.means2d.retain_grad()
    if features is not None:  # arbitrary per-Gaussian features instead of SH colour (no clamp)
        colors = features.unsqueeze(0).expand(len(cams), -1, -1) if features.ndim == 2 else features
    elif name == "cpu":
        from splatdistill.render.cpu_sh import SHColorsCPU

        centers = camera_centers(cams.viewmats)
        colors = torch.stack(
            [SHColorsCPU.apply(scene.means, scene.sh0, scene.shN, centers[c], sh_degree) for c in range(len(cams))]
        )
    else:
        colors = view_colors(scene.means, scene.sh_coeffs(), cams.viewmats, sh_degree)
    if render_depth:
        colors = torch.cat([colors, proj.depths.unsqueeze(-1)], dim=-1)
    bg = _background(background, len(cams), colors.shape[-1], device)
    if name == "cpu":
        from splatdistill.render.cpu import rasterize_cpu

        feats, alpha = rasterize_cpu(proj, colors, bg, cams.width, cams.height)
    else:
        from splatdistill.render.reference import rasterize_dense

        feats, alpha = rasterize_dense(proj, colors, bg, cams.width, cams.height)
    if features is not None:
        return RenderOutput(feats[..., :3], alpha, None, {}, features=feats[..., : colors.shape[-1]])
    depth = feats[..., 3] / alpha.clamp_min(1e-10) if render_depth else None
    info = {
        "means2d": proj.means2d,
        "radii": proj.radii,
        "depths": proj.depths,
        "conics": proj.conics,
        "opacities": proj.opacities,
        "width": cams.width,
        "height": cams.height,
        "n_cameras": len(cams),
        "gaussian_ids": None,
        "camera_ids": None,
        "tile_size": 16,
    }
    return RenderOutput(feats[..., :3], alpha, depth, info)
