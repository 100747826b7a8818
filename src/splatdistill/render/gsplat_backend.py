"""The ``gsplat`` backend: gsplat's fused CUDA rasterizer (imported lazily; CUDA tensors only)."""

from __future__ import annotations

import torch

from splatdistill.errors import UserError


def rasterize_gsplat(scene, cams, sh_degree, background, render_depth, eps2d, near, far, antialiased=None):
    """Render with gsplat's fused CUDA ``rasterization`` (CUDA tensors only).

    Args:
        scene: The scene, on a CUDA device.
        cams: The ``CameraBatch``.
        sh_degree: SH degree to evaluate.
        background: [C, 3] background.
        render_depth: Also render the expected depth.
        eps2d: The 2D low-pass in px^2.
        near, far: Depth range.
        antialiased: gsplat's ``rasterize_mode="antialiased"``; ``scene.antialiased`` when None.

    Returns:
        ``(renders, alpha, info)``: [C, H, W, 3 or 4] (RGB, then depth), [C, H, W] and gsplat's info
        dict. CPU tensors or a missing gsplat raise ``UserError``.
    """
    if scene.device.type != "cuda":
        # gsplat would try to JIT-compile its CUDA extension for CPU tensors and fail with a
        # misleading message; refuse clearly instead.
        raise UserError("the gsplat backend needs CUDA tensors; use backend='cpu' on the CPU")
    try:
        from gsplat import rasterization
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise UserError(f"the gsplat backend is unavailable: {e}") from e
    colors = scene.sh_coeffs()
    renders, alphas, info = rasterization(
        means=scene.means,
        quats=scene.quats,
        scales=torch.exp(scene.scales),
        opacities=torch.sigmoid(scene.opacities),
        colors=colors,
        viewmats=cams.viewmats,
        Ks=cams.Ks,
        width=cams.width,
        height=cams.height,
        sh_degree=sh_degree,
        backgrounds=background[:, :3] if background is not None else None,
        render_mode="RGB+ED" if render_depth else "RGB",
        packed=False,
        eps2d=eps2d,
        near_plane=near,
        far_plane=far,
        # Mip-Splatting-trained models: the 2D filter with opacity compensation
        rasterize_mode="antialiased" if (scene.antialiased if antialiased is None else antialiased) else "classic",
    )
    return renders, alphas[..., 0], info
