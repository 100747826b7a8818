"""Evaluate a model the way the 3DGS papers do (METHODS.md §0): ``evaluate_views`` renders a list of
cameras and compares each render with its target (the one evaluator); ``evaluate_scene`` runs it on a
dataset split, ``compress`` on its evaluation targets."""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from splatdistill.cameras.camera import Camera, stack_cameras
from splatdistill.data.dataset import Dataset
from splatdistill.errors import UserError
from splatdistill.ops.lpips import LPIPSBank
from splatdistill.ops.metrics import image_metrics
from splatdistill.render import render
from splatdistill.scene.gaussians import GaussianScene

METRIC_KEYS = ("psnr", "ssim", "lpips_vgg", "lpips_alex")


def mean_metric(values: Sequence[float | None]) -> float | None:
    """The mean of per-view values, or None when any is None (a metric that was not computed)."""
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals and len(vals) == len(values) else None


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB


def evaluate_views(
    scene: GaussianScene,
    cameras: Sequence[Camera],
    targets: Sequence[torch.Tensor | Callable[[], torch.Tensor]],
    background=None,
    lpips_nets: Sequence[str] = ("vgg", "alex"),
    lpips_bank: LPIPSBank | None = None,
    backend: str = "auto",
    progress: bool = True,
    desc: str = "evaluate",
) -> list[dict]:
    """Render each camera and compare it with its target.

    Args:
        scene: The scene, on the device it renders on.
        cameras: The views.
        targets: Per view an [H, W, 3] image in [0, 1], or a zero-argument callable returning one
            (loaded when its view comes up).
        background: The render background (RGB), as ``render`` takes it.
        lpips_nets: LPIPS networks to run (``"vgg"``, ``"alex"``); empty for none.
        lpips_bank: Loaded LPIPS networks to reuse.
        backend: The render backend.
        progress: Show a progress bar (labelled ``desc``).

    Returns:
        Per view: ``name`` (the camera's image name), ``image_metrics``' keys (``psnr``, ``ssim``,
        ``lpips_vgg``, ``lpips_alex``, maybe ``lpips_error``) and ``render_s`` (render time, seconds,
        synchronised on CUDA).
    """
    device = scene.device
    bank = lpips_bank or LPIPSBank()
    per_view = []
    for cam, target in zip(tqdm(cameras, desc=desc, disable=not progress, leave=False), targets):
        gt = (target() if callable(target) else target).to(device)
        cams = stack_cameras([cam], device)
        with torch.no_grad():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            out = render(scene, cams, background=background, backend=backend)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
        m = image_metrics(out.rgb[0].clamp(0, 1), gt, tuple(lpips_nets), lpips_bank=bank)
        per_view.append({"name": cam.image_name, **m, "render_s": dt})
    return per_view


def mean_of_views(per_view: list[dict], keys: Sequence[str] = METRIC_KEYS) -> dict:
    """``{key: mean over the views}`` for ``keys`` (None where a view lacks the metric), plus
    ``lpips_error`` (the first, sorted) when a view has one."""
    out = {k: mean_metric([v.get(k) for v in per_view]) for k in keys}
    errors = {v.get("lpips_error") for v in per_view if v.get("lpips_error")}
    if errors:
        out["lpips_error"] = sorted(errors)[0]
    return out


def evaluate_scene(
    scene: GaussianScene,
    dataset: Dataset,
    split: str = "test",
    backend: str = "auto",
    lpips: bool = True,
    lpips_bank: LPIPSBank | None = None,
    progress: bool = True,
    max_views: int | None = None,
    model_path: str | os.PathLike | None = None,
) -> dict:
    """PSNR / SSIM / LPIPS-VGG / LPIPS-AlexNet per view and their means, plus the number of
    Gaussians, bytes on disk (when ``model_path`` is given), render time per view and peak memory."""
    views = dataset.split(split)
    if max_views:
        views = views[:max_views]
    if not views:
        raise UserError(f"split '{split}' has no views", dataset.root)
    device = scene.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    per_view = evaluate_views(
        scene,
        [v.camera for v in views],
        [(lambda v=v: dataset.image(v)) for v in views],
        dataset.background,
        ("vgg", "alex") if lpips else (),
        lpips_bank,
        backend,
        progress,
        desc=f"eval {split}",
    )
    times = [v.pop("render_s") for v in per_view]
    result = mean_of_views(per_view)
    render_ms = 1000.0 * sum(times) / len(times)
    result.update(
        {
            "split": split,
            "num_views": len(per_view),
            "num_gaussians": len(scene),
            "bytes": os.path.getsize(model_path) if model_path else None,
            "render_ms": render_ms,
            "fps": 1000.0 / render_ms if render_ms > 0 else None,
            "device": str(device),
            "peak_memory_bytes": peak_memory_bytes(device),
            "per_view": per_view,
        }
    )
    return result
