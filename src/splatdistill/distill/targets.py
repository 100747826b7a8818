"""Soft targets: the (optionally weighted) mean of the teachers' renders of each view.

Teachers are loaded and rendered one at a time, so they are never all in (GPU) memory together; the
running mean lives in host memory, or in a memory-mapped file on disk when it would exceed the budget.
Views: the training views and pseudo views (camera centres + N(0, (0.05 extent)^2) per axis,
orientation kept, as LightGaussian and Distilled-3DGS do; and views interpolated between neighbouring
training cameras).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from splatdistill.cameras.camera import Camera, stack_cameras
from splatdistill.cameras.views import interpolated_views, pseudo_views
from splatdistill.render import render
from splatdistill.scene.gaussians import GaussianScene


def make_pseudo_cameras(train: Sequence[Camera], n: int, extent: float, seed: int = 0) -> list[Camera]:
    """``n`` extra views: half jittered training cameras, half interpolated between neighbours."""
    if n <= 0:
        return []
    n_jit = (n + 1) // 2
    cams = pseudo_views(list(train), n_jit, sigma_fraction=0.05, extent=extent, seed=seed)
    if len(train) > 1 and n - n_jit > 0:
        cams += interpolated_views(list(train), n - n_jit, seed=seed + 1)
    else:
        cams += pseudo_views(list(train), n - n_jit, sigma_fraction=0.05, extent=extent, seed=seed + 1)
    return cams


@dataclass
class SoftTargets:
    """The teacher mean of every view. Without ``alpha`` the store holds the mean of the teachers'
    renders on one background; with ``alpha`` (random-background training) it holds the mean of
    their premultiplied colours (the renders on black) and ``alpha`` their mean opacity, so the target
    on any background ``bg`` is ``store + (1 - alpha) * bg``: the mean of the teachers' renders on
    ``bg`` (compositing is linear). ``spread``: the per-pixel standard deviation across the teachers
    (RMS over the channels, and alpha when stored), for agreement weights. ``depth``: the teachers'
    mean expected depth, weighted by their alpha, and 0 where their mean alpha is at most 0.5 (no
    surface to agree on), for a depth term on pseudo views."""

    cameras: list[Camera]
    store: np.ndarray  # (V, H, W, 3) float16, in memory or memory-mapped
    num_train: int  # the first num_train cameras are the training views, in dataset order
    alpha: np.ndarray | None = None  # (V, H, W) float16: mean teacher alpha (store is premultiplied)
    spread: np.ndarray | None = None  # (V, H, W) float16: std across teachers
    depth: np.ndarray | None = None  # (V, H, W) float32: mean teacher depth, 0 where not opaque

    def __len__(self) -> int:
        return len(self.cameras)

    def image(self, i: int, device="cpu", background=None) -> torch.Tensor:
        """(H, W, 3) float32; with alpha stored, composited on ``background`` (a colour or a (3,)
        tensor) and clamped to [0, 1] as a render on it is."""
        rgb = torch.from_numpy(np.asarray(self.store[i], dtype=np.float32)).to(device)
        if self.alpha is None:
            return rgb
        if background is None:
            raise ValueError("these soft targets are premultiplied: give the background to composite on")
        a = torch.from_numpy(np.asarray(self.alpha[i], dtype=np.float32)).to(device).unsqueeze(-1)
        bg = torch.as_tensor(background, dtype=torch.float32, device=device).reshape(1, 1, 3)
        return (rgb + (1.0 - a) * bg).clamp(0.0, 1.0)

    def spread_of(self, i: int, device="cpu") -> torch.Tensor | None:
        if self.spread is None:
            return None
        return torch.from_numpy(np.asarray(self.spread[i], dtype=np.float32)).to(device)

    def depth_of(self, i: int, device="cpu") -> torch.Tensor | None:
        """(H, W) float32 teacher depth of view ``i`` (0: no target), or None."""
        if self.depth is None:
            return None
        return torch.from_numpy(np.asarray(self.depth[i], dtype=np.float32)).to(device)


def build_soft_targets(
    teachers: Sequence[GaussianScene | Path],
    cameras: Sequence[Camera],
    num_train: int,
    background,
    device,
    weights: Sequence[float] | None = None,
    memory_budget_mb: float = 2048.0,
    spill_dir: Path | None = None,
    backend: str = "auto",
    progress: bool = True,
    with_alpha: bool = False,
    with_spread: bool = False,
    with_depth: bool = False,
) -> SoftTargets:
    """``with_alpha``: render on black and keep the mean alpha (targets on any background, see
    ``SoftTargets``); ``background`` is then ignored. ``with_spread``: also the per-pixel spread
    across the teachers (needs the partial sums in memory). ``with_depth``: also the teachers' mean
    depth (``SoftTargets.depth``)."""
    from splatdistill.formats.io import load_model

    if with_alpha:
        background = (0.0, 0.0, 0.0)

    if not teachers:
        raise ValueError("soft targets need at least one teacher")
    w = np.asarray(weights if weights is not None else [1.0] * len(teachers), dtype=np.float64)
    w = w / w.sum()
    h, wd = cameras[0].height, cameras[0].width
    shape = (len(cameras), h, wd, 3)
    nbytes = int(np.prod(shape)) * 2
    if nbytes > memory_budget_mb * 2**20 and spill_dir is not None:
        spill_dir.mkdir(parents=True, exist_ok=True)
        store = np.lib.format.open_memmap(spill_dir / "soft_targets.npy", mode="w+", dtype=np.float16, shape=shape)
    else:
        store = np.zeros(shape, dtype=np.float16)
    acc = np.zeros((h, wd, 3), dtype=np.float32)
    # accumulate per view over teachers: teachers outer (one in memory at a time), partial sums in fp32
    partial = np.zeros(shape, dtype=np.float32) if nbytes * 2 <= memory_budget_mb * 2**20 else None
    alpha = np.zeros(shape[:3], dtype=np.float32) if with_alpha else None
    # spread: E[x^2] - E[x]^2 per pixel, summed over the channels (and alpha)
    sq = np.zeros(shape[:3], dtype=np.float32) if with_spread and len(teachers) > 1 else None
    # depth: sum_t w_t a_t z_t and sum_t w_t a_t (an alpha-weighted mean over the teachers)
    depth_num = np.zeros(shape[:3], dtype=np.float32) if with_depth else None
    depth_den = np.zeros(shape[:3], dtype=np.float32) if with_depth else None
    if sq is not None and partial is None:
        partial = np.zeros(shape, dtype=np.float32)  # the spread needs the mean in fp32 as well
    for t_idx, teacher in enumerate(teachers):
        scene = load_model(teacher) if isinstance(teacher, (str, Path)) else teacher
        scene = scene.detach().to(device)
        for v, cam in enumerate(
            tqdm(cameras, desc=f"teacher {t_idx + 1}/{len(teachers)} renders", disable=not progress, leave=False)
        ):
            with torch.no_grad():
                out = render(
                    scene, stack_cameras([cam], device), background=background, backend=backend, render_depth=with_depth
                )
            a = out.alpha[0].cpu().numpy() if with_alpha or with_depth else None
            if with_depth:
                depth_num[v] += w[t_idx] * a * out.depth[0].cpu().numpy()
                depth_den[v] += w[t_idx] * a
            if with_alpha:  # premultiplied colour, unclamped: the clamp comes after compositing
                img = out.rgb[0].cpu().numpy()
                alpha[v] += w[t_idx] * a
            else:
                img = out.rgb[0].clamp(0, 1).cpu().numpy()
            if sq is not None:
                sq[v] += w[t_idx] * (img * img).sum(-1)
                if with_alpha:
                    sq[v] += w[t_idx] * a * a
            if partial is not None:
                partial[v] += w[t_idx] * img
            else:
                acc[:] = store[v].astype(np.float32) + w[t_idx] * img
                store[v] = acc
        del scene
        if device is not None and torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    spread = None
    if with_spread:
        if sq is None:  # one teacher agrees with itself
            spread = np.zeros(shape[:3], dtype=np.float16)
        else:
            var = sq - (partial * partial).sum(-1) - (alpha * alpha if with_alpha else 0.0)
            channels = 4 if with_alpha else 3
            spread = np.sqrt(np.clip(var, 0.0, None) / channels).astype(np.float16)
    depth = None
    if with_depth:
        opaque = depth_den > 0.5
        depth = np.where(opaque, depth_num / np.maximum(depth_den, 1e-12), 0.0).astype(np.float32)
    if partial is not None:
        store[:] = partial.astype(np.float16)
    if isinstance(store, np.memmap):
        store.flush()
    return SoftTargets(
        list(cameras),
        store,
        num_train,
        alpha=None if alpha is None else alpha.astype(np.float16),
        spread=spread,
        depth=depth,
    )


def select_teachers(
    teachers: Sequence[Path], dataset, margin_db: float | None, device, progress: bool = True
) -> tuple[list[Path], list[float]]:
    """The teachers within ``margin_db`` of the best one's mean PSNR on the training views, and every
    teacher's PSNR (None margin: all teachers, no renders)."""
    from splatdistill.formats.io import load_model
    from splatdistill.ops.ssim import psnr

    if margin_db is None or len(teachers) < 2:
        return list(teachers), []
    views = dataset.split("train")
    scores = []
    for t in teachers:
        scene = load_model(t).detach().to(device)
        vals = []
        for v in tqdm(views, desc="teacher check", disable=not progress, leave=False):
            with torch.no_grad():
                img = render(scene, stack_cameras([v.camera], device), background=dataset.background).rgb[0]
            vals.append(float(psnr(img.clamp(0, 1).cpu(), dataset.image(v))))
        scores.append(float(np.mean(vals)))
        del scene
    best = max(scores)
    return [t for t, s in zip(teachers, scores) if s >= best - margin_db], scores
