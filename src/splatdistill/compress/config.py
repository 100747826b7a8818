"""``CompressConfig``: every setting of ``splatdistill compress``, and the ``--quality`` presets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from splatdistill.errors import UserError
from splatdistill.ops.policies import POLICIES

Quality = Literal["high", "balanced", "small"]

PRESETS: dict[str, dict] = {
    "high": {"prune": 0.5, "sh_degree": 3, "vq_size": 8192, "vq_ratio": 0.4,
             "bits": {"opacities": 12, "sh0": 8, "shN": 8}, "kept_encoding": "bits"},
    # LightGaussian's defaults: prune 66 %, SH 3 -> 2, 8192 codewords for the least significant 60 %
    "balanced": {"prune": 0.66, "sh_degree": 2, "vq_size": 8192, "vq_ratio": 0.6,
                 "bits": {"opacities": 10, "sh0": 8, "shN": 6}, "kept_encoding": "bits"},
    "small": {"prune": 0.8, "sh_degree": 1, "vq_size": 4096, "vq_ratio": 0.8,
              "bits": {"opacities": 10, "sh0": 8, "shN": 5}, "kept_encoding": "bits"},
}



@dataclass
class CompressConfig:
    quality: Quality = "balanced"
    prune: float | None = None  # fraction of Gaussians removed (preset if None)
    sh_degree: int | None = None  # output SH degree (preset, capped at the input's, if None)
    vq_size: int | None = None  # colour codebook size K
    vq_ratio: float | None = None  # fraction R of Gaussians whose colour is VQ'd
    prune_policy: Literal["significance", "mask", "confidence"] = "significance"
    iterations: int = 1000  # co-adaptation and SH-distillation steps; the VQ fine-tune gets half
    downscale: int = 1  # dataset images
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # data-free mode
    views: int = 48  # sampled training views (3/4 on a Fibonacci sphere, 1/4 on an orbit)
    eval_views: int = 8  # held-out orbit views for the metrics
    resolution: int = 192  # of the sampled views (square)
    fov_deg: float = 50.0
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    background: tuple[float, float, float] | None = None  # None: the dataset's, or black
    # fine-tunes with --data on RGBA images: a random background colour each step (None: when the
    # images have alpha and no background is given; train/background.py); metrics stay on ``background``
    random_background: bool | None = None
    pseudo_views: int | None = None  # SH-distillation pseudo-view pool (default 2 x train views, <= 256)
    rvq_stages: int = 0  # residual VQ of scales and rotations (Compact-3DGS: 6 stages); 0 = off
    rvq_size: int = 64  # codewords per R-VQ stage (Compact-3DGS: 64)
    write_spz: bool = True
    spz_version: int = 4  # 3 for viewers that read only versions 1-3 (Spark)
    lpips: bool = True
    seed: int = 0
    progress: bool = True
    # training-free path (compress/trainingfree.py): the default without a dataset
    training_free: bool | None = None  # None: training-free when no dataset is given
    refine: int = 0  # training-free: fine-tune iterations after the reduction (0 = none)
    importance_views: int = 8  # forward renders for the importance (0: opacity x volume)
    importance_resolution: int = 128
    merge: bool = True  # moment-matched pairwise merges where they beat pruning
    palette_size: int | None = None  # SH-rest k-means palette (preset if None)
    zstd_level: int = 19
    lod: str | None = None  # e.g. "1,0.5,0.25,0.1": a ladder of models in OUT/lod/

    def settings(self, input_degree: int) -> dict:
        """The resolved settings: preset values overridden by the explicit ones, checked."""
        if self.quality not in PRESETS:
            raise UserError(f"unknown quality preset '{self.quality}' (choose {', '.join(PRESETS)})")
        p = PRESETS[self.quality]
        prune = p["prune"] if self.prune is None else float(self.prune)
        if not 0.0 <= prune < 1.0:
            raise UserError(f"--prune must be in [0, 1), got {prune}")
        if self.sh_degree is None:
            deg = min(p["sh_degree"], input_degree)
        else:
            deg = int(self.sh_degree)
            if not 0 <= deg <= 3:
                raise UserError(f"--sh-degree must be in 0..3, got {deg}")
            if deg > input_degree:
                raise UserError(f"--sh-degree {deg} is higher than the input model's SH degree {input_degree}")
        k = p["vq_size"] if self.vq_size is None else int(self.vq_size)
        if k < 1:
            raise UserError(f"--vq-size must be at least 1, got {k}")
        ratio = p["vq_ratio"] if self.vq_ratio is None else float(self.vq_ratio)
        if not 0.0 <= ratio <= 1.0:
            raise UserError(f"--vq-ratio must be in [0, 1], got {ratio}")
        if self.prune_policy not in POLICIES:
            raise UserError(f"unknown prune policy '{self.prune_policy}' (choose {', '.join(POLICIES)})")
        if self.iterations < 0:
            raise UserError(f"--iterations must be >= 0, got {self.iterations}")
        if self.downscale < 1:
            raise UserError(f"--downscale must be >= 1, got {self.downscale}")
        if self.rvq_stages < 0 or not 1 <= self.rvq_size <= 65536:
            raise UserError(f"--rvq-stages must be >= 0 and --rvq-size in 1..65536, got {self.rvq_stages}, "
                            f"{self.rvq_size}")
        if self.views < 1 or self.eval_views < 1 or self.resolution < 8:
            raise UserError("data-free mode needs at least 1 view, 1 evaluation view and 8-pixel images")
        return {
            "quality": self.quality, "prune": prune, "sh_degree": deg, "vq_size": k, "vq_ratio": ratio,
            "prune_policy": self.prune_policy, "iterations": int(self.iterations),
            "bits": dict(p["bits"]), "position": "fp16", "kept_encoding": p["kept_encoding"],
            "rvq_stages": int(self.rvq_stages), "rvq_size": int(self.rvq_size),
        }
