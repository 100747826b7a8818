"""Evaluate a model on a dataset split the way the 3DGS papers do (METHODS.md §0)."""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from splatdistill.cameras.camera import stack_cameras
from splatdistill.data.dataset import Dataset
from splatdistill.errors import UserError
from splatdistill.render import render
from splatdistill.scene.gaussians import GaussianScene
from splatdistill.ops.lpips import LPIPSBank
from splatdistill.ops.metrics import image_metrics

METRIC_KEYS = ("psnr", "ssim", "lpips_vgg", "lpips_alex")


def _mean(values):
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals and len(vals) == len(values) else None


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB


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
    bank = lpips_bank or LPIPSBank()
    nets = ("vgg", "alex") if lpips else ()
    per_view, times = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for view in tqdm(views, desc=f"eval {split}", disable=not progress, leave=False):
        gt = dataset.image(view).to(device)
        cams = stack_cameras([view.camera], device)
        with torch.no_grad():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            out = render(scene, cams, background=dataset.background, backend=backend)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
        pred = out.rgb[0].clamp(0, 1)
        m = image_metrics(pred, gt, nets, lpips_bank=bank)
        per_view.append({"name": view.camera.image_name, **m})
    result = {k: _mean([v[k] for v in per_view]) for k in METRIC_KEYS}
    errors = {v.get("lpips_error") for v in per_view if v.get("lpips_error")}
    if errors:
        result["lpips_error"] = sorted(errors)[0]
    render_ms = 1000.0 * sum(times) / len(times)
    result.update({
        "split": split,
        "num_views": len(per_view),
        "num_gaussians": len(scene),
        "bytes": os.path.getsize(model_path) if model_path else None,
        "render_ms": render_ms,
        "fps": 1000.0 / render_ms if render_ms > 0 else None,
        "device": str(device),
        "peak_memory_bytes": peak_memory_bytes(device),
        "per_view": per_view,
    })
    return result
