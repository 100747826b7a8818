"""``compress``'s targets: what the fine-tunes fit (the dataset's training views, or without data the
input model's renders of cameras sampled around it, plus pseudo views for the SH distillation) and
what the final metrics compare against; loading the input model; the evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from splatdistill.cameras.camera import Camera, stack_cameras
from splatdistill.compress.config import CompressConfig
from splatdistill.errors import UserError
from splatdistill.render import render
from splatdistill.scene.gaussians import GaussianScene


def _h(x):
    """Images kept on the CPU as float16 (half the memory; 1e-3 relative precision)."""
    if isinstance(x, Layered):
        return Layered(_h(x.black), _h(x.transmittance))
    return x.detach().to("cpu", torch.float16)


@dataclass
class Layered:
    """A target for random-background fine-tunes: its image on a colour ``bg`` is
    ``black + transmittance * bg`` (ground truth: its black composite and 1 - alpha; a render: the
    render on black and 1 - its alpha)."""

    black: torch.Tensor  # (H, W, 3)
    transmittance: torch.Tensor  # (H, W, 1)

    def to(self, device, dtype=None) -> "Layered":
        return Layered(self.black.to(device, dtype), self.transmittance.to(device, dtype))

    def on(self, bg: torch.Tensor) -> torch.Tensor:
        return (self.black + self.transmittance * bg.reshape(1, 1, 3)).clamp(0.0, 1.0)


@dataclass
class Targets:
    """What the fine-tunes fit and what the metrics compare against."""

    mode: str  # "data" | "data-free"
    train_cams: list[Camera]
    train_images: list  # callables or tensors -> (H, W, 3) float in [0, 1]
    eval_cams: list[Camera]
    eval_images: list
    eval_kind: str  # what the eval images are
    background: tuple[float, float, float]
    extent: float
    teacher: GaussianScene  # the uncompressed input (on the device)
    device: torch.device
    pseudo_cams: list[Camera] = field(default_factory=list)
    random_background: bool = False  # fine-tunes on a random colour each step (targets are Layered)
    _teacher_train: list | None = None
    _teacher_pseudo: list | None = None

    def image(self, images: list, i: int) -> torch.Tensor:
        x = images[i]
        x = x() if callable(x) else x
        return x.to(self.device, torch.float32)

    def teacher_render(self, cam: Camera):
        with torch.no_grad():
            if self.random_background:
                out = render(self.teacher, stack_cameras([cam], self.device), background=(0.0, 0.0, 0.0))
                return Layered(out.rgb[0], 1.0 - out.alpha[0].unsqueeze(-1))
            return render(self.teacher, stack_cameras([cam], self.device), background=self.background).rgb[0]

    def teacher_images(self, progress: bool = True) -> tuple[list, list]:
        """Teacher renders of the training and pseudo views (computed once)."""
        if self._teacher_train is None:
            if self.mode == "data-free":
                self._teacher_train = self.train_images
            else:
                self._teacher_train = [
                    _h(self.teacher_render(c))
                    for c in tqdm(self.train_cams, desc="teacher renders", disable=not progress, leave=False)
                ]
        if self._teacher_pseudo is None:
            self._teacher_pseudo = [
                _h(self.teacher_render(c))
                for c in tqdm(self.pseudo_cams, desc="pseudo-view renders", disable=not progress, leave=False)
            ]
        return self._teacher_train, self._teacher_pseudo


def sample_cameras(scene: GaussianScene, cfg: CompressConfig) -> tuple[list[Camera], list[Camera], float]:
    """Data-free cameras: (training views, held-out evaluation views, sphere radius)."""
    from splatdistill.cameras.views import bounding_sphere, orbit_cameras, sphere_cameras

    center, radius = bounding_sphere(scene.means.detach().cpu().numpy())
    radius = max(float(radius), 1e-6)
    res = int(cfg.resolution)
    n_orbit = max(1, cfg.views // 4) if cfg.views > 1 else 0
    train = sphere_cameras(center, radius, cfg.views - n_orbit, res, res, cfg.fov_deg, cfg.up)
    train += orbit_cameras(center, radius, n_orbit, res, res, cfg.fov_deg, elevation_deg=15.0, up=cfg.up)
    evals = orbit_cameras(center, radius, cfg.eval_views, res, res, cfg.fov_deg, elevation_deg=30.0, up=cfg.up)
    return train, [replace(c, image_name=f"eval_{i:04d}") for i, c in enumerate(evals)], radius


def prepare_targets(scene: GaussianScene, data, cfg: CompressConfig, device: torch.device) -> Targets:
    from splatdistill.cameras.views import camera_extent, pseudo_views

    teacher = scene.to(device)
    if data is not None:
        from splatdistill.data.dataset import load_dataset

        ds = load_dataset(data, downscale=cfg.downscale)
        views = ds.split("train")
        if not views:
            raise UserError("the dataset has no training views", data)
        test = ds.splits.get("test") or []
        eval_kind = "dataset test views (ground truth)"
        if not test:
            test = views
            eval_kind = "dataset training views (no test split)"
        bg = tuple(float(b) for b in (cfg.background if cfg.background is not None else ds.background))
        random_bg = cfg.random_background
        if random_bg is None:
            from splatdistill.ops.background import dataset_has_alpha

            random_bg = cfg.background is None and dataset_has_alpha(ds)

        def train_image(v):
            if not random_bg:  # the images composited on the background the renders use
                return ds.image_on(v, bg)
            black = ds.image_on(v, (0.0, 0.0, 0.0))
            return Layered(black, (ds.image_on(v, (1.0, 1.0, 1.0)) - black)[..., :1])

        t = Targets(
            mode="data",
            train_cams=[v.camera for v in views],
            train_images=[(lambda v=v: train_image(v)) for v in views],
            eval_cams=[v.camera for v in test],
            eval_images=[(lambda v=v: ds.image_on(v, bg)) for v in test],
            eval_kind=eval_kind,
            background=bg,
            extent=float(ds.extent),
            teacher=teacher,
            device=device,
            random_background=bool(random_bg),
        )
    else:
        train, evals, _ = sample_cameras(scene, cfg)
        bg = tuple(float(b) for b in (cfg.background if cfg.background is not None else (0.0, 0.0, 0.0)))
        t = Targets(
            mode="data-free",
            train_cams=train,
            train_images=[],
            eval_cams=evals,
            eval_images=[],
            eval_kind="held-out orbit views vs the input model's renders",
            background=bg,
            extent=camera_extent(train) if len(train) > 1 else 1.0,
            teacher=teacher,
            device=device,
        )
        bar = tqdm(train + evals, desc="target renders", disable=not cfg.progress, leave=False)
        renders = [_h(t.teacher_render(c)) for c in bar]
        t.train_images, t.eval_images = renders[: len(train)], renders[len(train) :]
    n_pseudo = cfg.pseudo_views if cfg.pseudo_views is not None else min(256, 2 * len(t.train_cams))
    t.pseudo_cams = (
        pseudo_views(t.train_cams, max(1, n_pseudo), sigma_fraction=0.05, extent=t.extent, seed=cfg.seed)
        if len(t.train_cams)
        else []
    )
    return t


def load_input(model_path) -> GaussianScene:
    """The model to compress, checked: it exists, its values are finite and it has Gaussians."""
    from splatdistill.formats.io import load_model

    p = Path(model_path)
    if not p.exists():
        raise UserError("no such file", p)
    scene = load_model(p)
    scene.check_finite(str(p))
    if len(scene) == 0:
        raise UserError("the model has no Gaussians", p)
    return scene


def evaluate(scene: GaussianScene, targets: Targets, lpips: bool = True, bank=None, progress: bool = True) -> dict:
    """Mean PSNR / SSIM / LPIPS-VGG of ``scene``'s renders of the evaluation views
    (``ops.evaluate.evaluate_views`` against ``targets.eval_images``).

    Returns:
        ``{"psnr", "ssim", "lpips_vgg"}`` (None where not computed), plus ``lpips_error`` when LPIPS failed.
    """
    from splatdistill.ops.evaluate import evaluate_views, mean_of_views
    from splatdistill.ops.lpips import LPIPSBank

    scene = scene.to(targets.device)
    images = [(lambda i=i: targets.image(targets.eval_images, i)) for i in range(len(targets.eval_cams))]
    per = evaluate_views(
        scene,
        targets.eval_cams,
        images,
        targets.background,
        ("vgg",) if lpips else (),
        bank or LPIPSBank(),
        progress=progress,
    )
    return mean_of_views(per, ("psnr", "ssim", "lpips_vgg"))
