"""``CompressConfig``: every setting of ``splatdistill compress``, and the ``--quality`` presets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import tyro

from splatdistill.errors import UserError

Quality = Literal["high", "balanced", "small"]


@dataclass(frozen=True)
class Preset:
    """One ``--quality`` preset: the values a ``CompressConfig`` field left unset (None) takes."""

    prune: float
    """fraction of Gaussians removed."""
    sh_degree: int
    """output SH degree (capped at the input's)."""
    vq_size: int
    """colour codebook size K."""
    vq_ratio: float
    """fraction R of Gaussians whose colour is vector-quantised."""
    bits: dict = field(default_factory=dict)
    """quantisation bits of the attributes kept as numbers."""
    kept_encoding: str = "bits"
    """how the attributes outside the codebook are stored."""


PRESETS: dict[str, Preset] = {
    "high": Preset(prune=0.5, sh_degree=3, vq_size=8192, vq_ratio=0.4, bits={"opacities": 12, "sh0": 8, "shN": 8}),
    # LightGaussian's defaults: prune 66 %, SH 3 -> 2, 8192 codewords for the least significant 60 %
    "balanced": Preset(prune=0.66, sh_degree=2, vq_size=8192, vq_ratio=0.6, bits={"opacities": 10, "sh0": 8, "shN": 6}),
    "small": Preset(prune=0.8, sh_degree=1, vq_size=4096, vq_ratio=0.8, bits={"opacities": 10, "sh0": 8, "shN": 5}),
}


@dataclass
class CompressConfig:
    """Every setting of ``splatdistill compress``. The fields a preset fills are None by default:
    an explicit value overrides the ``--quality`` preset's."""

    # balanced is LightGaussian's setting; an explicit --prune / --sh-degree / --vq-size / --vq-ratio wins
    quality: Quality = "balanced"
    """preset prune / SH degree / VQ ratio: high 0.5/3/0.4, balanced 0.66/2/0.6, small 0.8/1/0.8."""
    prune: float | None = None
    """fraction of Gaussians removed (default: the preset's)."""
    sh_degree: int | None = None
    """output SH degree, at most the input's (default: the preset's, capped at the input's)."""
    vq_size: int | None = None
    """colour codebook size K (default: the preset's)."""
    vq_ratio: float | None = None
    """fraction R of Gaussians whose colour is vector-quantised (default: the preset's)."""
    prune_policy: Literal["significance", "mask", "confidence"] = "significance"
    """rank by significance, or learn a gate while fine-tuning: mask (Compact-3DGS) or confidence."""
    iterations: int = 1000
    """co-adaptation and SH-distillation steps; the VQ fine-tune gets half."""
    downscale: int = 1
    """divide the dataset's image size by this factor (with --data)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where to run (auto: CUDA when available)."""
    views: int = 48
    """data-free: sampled training views (3/4 on a Fibonacci sphere, 1/4 on an orbit)."""
    eval_views: int = 8
    """data-free: held-out orbit views for the metrics."""
    resolution: int = 192
    """data-free: side of the sampled (square) views, at least 8."""
    fov_deg: float = 50.0
    """data-free: field of view of the sampled views, in degrees."""
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """data-free: the model's up direction."""
    background: tuple[float, float, float] | None = None
    """background colour R G B in [0, 1] of targets and metrics (default: the dataset's, or black)."""
    # the metrics stay on ``background`` (train/background.py)
    random_background: bool | None = None
    """with --data: fine-tune on a random colour each step (default: for RGBA images without --background)."""
    pseudo_views: int | None = None
    """SH-distillation pseudo-view pool (default: twice the training views, at most 256)."""
    rvq_stages: int = 0
    """residual VQ of scales and rotations, this many stages (Compact-3DGS: 6); 0: off."""
    rvq_size: int = 64
    """codewords per residual-VQ stage (Compact-3DGS: 64)."""
    write_spz: Annotated[bool, tyro.conf.arg(name="spz")] = True
    """also write OUT/model.spz."""
    spz_version: Literal[2, 3, 4] = 4
    """SPZ version of model.spz (3 for viewers that read only versions 1-3, such as Spark)."""
    lpips: bool = True
    """compute LPIPS of the decoded model."""
    seed: int = 0
    """random seed."""
    progress: bool = True
    """show progress bars."""
    training_free: Annotated[bool | None, tyro.conf.Suppress] = None
    """training-free path (compress/trainingfree.py): None: when no dataset is given."""
    refine: int = 0
    """training-free: fine-tune iterations after the reduction (0: none)."""
    importance_views: int = 8
    """training-free: forward renders for the importance (0: opacity x volume)."""
    importance_resolution: int = 128
    """training-free: side of the importance renders."""
    merge: bool = True
    """training-free: moment-matched pairwise merges where they beat pruning (--no-merge: prune only)."""
    palette_size: int | None = None
    """training-free: SH-rest k-means palette size (default by --quality: 16384 / 8192 / 4096, at most one
    per 8 / 8 / 32 Gaussians)."""
    position_bits: int | None = None
    """training-free: bits per position code of the packed .sdz, 8..16 (default: 16 / 14 / 12 by --quality)."""
    rotation_bits: int | None = None
    """training-free: bits per "smallest three" rotation component of the packed .sdz, 4..16 (default:
    8 / 7 / 6 by --quality)."""
    opacity_bits: int | None = None
    """training-free: bits per opacity code of the packed .sdz, 4..16 (default: 12 / 9 / 8 by --quality)."""
    codebook_levels: int | None = None
    """training-free: levels of the packed .sdz's scalar codebooks (scales, SH DC, SH palette), 2..65536
    (default: 256 / 128 / 64 by --quality)."""
    zstd_level: int = 19
    """zstd level of the packed .sdz."""
    lod: str | None = None
    """a ladder of models in OUT/lod/, as shares of the input's Gaussians, e.g. 1,0.5,0.25,0.1."""

    def settings(self, input_degree: int) -> dict:
        """The resolved settings: preset values overridden by the explicit ones, checked."""
        if self.quality not in PRESETS:
            raise UserError(f"unknown quality preset '{self.quality}' (choose {', '.join(PRESETS)})")
        p = PRESETS[self.quality]
        prune = p.prune if self.prune is None else float(self.prune)
        if not 0.0 <= prune < 1.0:
            raise UserError(f"--prune must be in [0, 1), got {prune}")
        if self.sh_degree is None:
            deg = min(p.sh_degree, input_degree)
        else:
            deg = int(self.sh_degree)
            if not 0 <= deg <= 3:
                raise UserError(f"--sh-degree must be in 0..3, got {deg}")
            if deg > input_degree:
                raise UserError(f"--sh-degree {deg} is higher than the input model's SH degree {input_degree}")
        k = p.vq_size if self.vq_size is None else int(self.vq_size)
        if k < 1:
            raise UserError(f"--vq-size must be at least 1, got {k}")
        ratio = p.vq_ratio if self.vq_ratio is None else float(self.vq_ratio)
        if not 0.0 <= ratio <= 1.0:
            raise UserError(f"--vq-ratio must be in [0, 1], got {ratio}")
        from splatdistill.ops.policies import POLICIES

        if self.prune_policy not in POLICIES:
            raise UserError(f"unknown prune policy '{self.prune_policy}' (choose {', '.join(POLICIES)})")
        if self.iterations < 0:
            raise UserError(f"--iterations must be >= 0, got {self.iterations}")
        if self.downscale < 1:
            raise UserError(f"--downscale must be >= 1, got {self.downscale}")
        if self.rvq_stages < 0 or not 1 <= self.rvq_size <= 65536:
            raise UserError(
                f"--rvq-stages must be >= 0 and --rvq-size in 1..65536, got {self.rvq_stages}, {self.rvq_size}"
            )
        if self.views < 1 or self.eval_views < 1 or self.resolution < 8:
            raise UserError("data-free mode needs at least 1 view, 1 evaluation view and 8-pixel images")
        return {
            "quality": self.quality,
            "prune": prune,
            "sh_degree": deg,
            "vq_size": k,
            "vq_ratio": ratio,
            "prune_policy": self.prune_policy,
            "iterations": int(self.iterations),
            "bits": dict(p.bits),
            "position": "fp16",
            "kept_encoding": p.kept_encoding,
            "rvq_stages": int(self.rvq_stages),
            "rvq_size": int(self.rvq_size),
        }
