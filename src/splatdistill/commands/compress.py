"""``splatdistill compress``: a model made small, with its outputs published together."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Optional

import tyro

from splatdistill.commands.common import STAGING, Pos, abs_path, run_staged
from splatdistill.compress.config import CompressConfig
from splatdistill.errors import UserError
from splatdistill.validate import COUNT, Rule, check_config, flag

OWNED = (
    "model.sdz",
    "model.ply",
    "model.spz",
    "summary.json",
    "sweep.json",
    "sweep.md",
    "rate_distortion.png",
    "high",
    "balanced",
    "small",
    "balanced_prune50",
    "balanced_prune80",
    "lod",
    STAGING,
)
"""The files of a compression in its folder (removed by --overwrite)."""
RULES = {"iterations": COUNT, "resolution": Rule(minimum=8)}
"""This command's ranges where they differ from the shared ones (``validate.RULES``)."""


TRAINING_FREE_ONLY = (
    "refine",
    "importance_views",
    "importance_resolution",
    "merge",
    "palette_size",
    "position_bits",
    "rotation_bits",
    "opacity_bits",
    "codebook_levels",
    "zstd_level",
    "lod",
)
"""Settings only the training-free path reads (compress/trainingfree.py)."""


@dataclass
class CompressCommand:
    """Compress a model (any format convert reads): prune (--prune-policy), distil SH to --sh-degree, colour VQ,
    quantise + Morton order + zstd. Writes OUT/model.sdz, OUT/model.ply (decompressed, for any viewer),
    OUT/model.spz (v4; --spz-version 3 for Spark) and OUT/summary.json (sizes, PSNR/LPIPS of the decoded model).
    With --data the dataset's views are the targets; without, views sampled around the model and its own
    renders. Presets --quality high|balanced|small (prune/SH/VQ: 0.5/3/0.4, 0.66/2/0.6, 0.8/1/0.8); explicit
    flags override them. --rvq-stages S (Compact-3DGS: 6, with --rvq-size 64) stores scales and
    rotations as residual-VQ indices after a short fine-tune of the codebooks. --sweep runs the
    presets and two prune ratios: OUT/sweep.json, sweep.md, rate_distortion.png. The outputs appear
    together when the run ends; OUT holding another run's is refused unless --overwrite.
    Without --data the default is training-free (no gradient steps; --no-training-free for the
    fine-tuning path): importance from --importance-views forward renders (0: opacity x volume),
    pairwise merges where they beat pruning (--no-merge: prune only), closed-form SH fit, k-means
    palettes, packed .sdz; --refine N adds N fine-tune iterations; --lod 1,0.5,0.25,0.1 also writes
    a ladder of models (shares of the input's Gaussians) to OUT/lod/."""

    model: Pos[Path]
    """the model file (any format convert reads)."""
    out: Path
    """the output folder (model.sdz, model.ply, model.spz, summary.json)."""
    data: Optional[Path] = None
    """fit to this dataset's views (default: views sampled around the model, its own renders as targets)."""
    sweep: bool = False
    """run the three presets and two prune ratios: OUT/sweep.json, sweep.md, rate_distortion.png."""
    overwrite: bool = False
    """remove another run's outputs from OUT first."""
    training_free: bool = True
    """without --data: the training-free path (no gradient steps); --no-training-free: fine-tune."""
    cfg: Annotated[CompressConfig, tyro.conf.arg(name="")] = field(default_factory=CompressConfig)
    """the compression settings."""

    def config(self) -> CompressConfig:
        """The library's settings: ``training_free`` None lets the pipeline choose by --data."""
        return replace(self.cfg, training_free=None if self.training_free else False)

    def run(self) -> None:
        from splatdistill.commands.runs import run_folder

        check_config(self, RULES)
        self.check_path_flags()
        cfg = self.config()
        config = {"model": abs_path(self.model), "data": abs_path(self.data), "sweep": self.sweep, **asdict(cfg)}
        config.pop("device", None)
        config.pop("progress", None)
        with run_folder(self.out, "compress", config, owned=OWNED, overwrite=self.overwrite, can_resume=False):
            run_staged(self.out, lambda staging: self.compress(staging, cfg))

    def check_path_flags(self) -> None:
        """Refuse a training-free setting given to the fine-tuning path (--data or --no-training-free),
        where it would be ignored, before any work."""
        if self.data is None and self.training_free:
            return
        default = CompressConfig()
        for name in TRAINING_FREE_ONLY:
            if getattr(self.cfg, name) != getattr(default, name):
                why = "--data" if self.data is not None else "--no-training-free"
                raise UserError(f"applies to the training-free path only, not with {why}", flag(name))

    def compress(self, staging: Path, cfg: CompressConfig) -> None:
        """Compress into ``staging`` and print what OUT will hold."""
        from splatdistill.compress.pipeline import compress_model, run_sweep, sweep_markdown

        model, out, data = self.model, self.out, self.data
        if self.sweep:
            print(sweep_markdown(run_sweep(model, staging, data, cfg)))
            print(f"wrote {out / 'sweep.json'}, {out / 'sweep.md'}, {out / 'rate_distortion.png'}")
            return
        s = compress_model(model, staging, data, cfg)
        lp = "n/a" if s["lpips_vgg"] is None else f"{s['lpips_vgg']:.4f}"
        if s["psnr"] is None:  # --eval-views 0: nothing was rendered to score
            quality = "not evaluated (--eval-views 0)"
        else:
            quality = f"PSNR {s['psnr']:.2f} dB, LPIPS-VGG {lp} on {s['evaluated_on']}"
        print(
            f"{s['num_gaussians_input']} -> {s['num_gaussians']} Gaussians, {s['input_bytes'] / 1e6:.2f} MB -> "
            f"{s['output_bytes'] / 1e6:.3f} MB ({s['ratio']:.1f}x); {quality}"
        )
        conf = s["stages"].get("prune", {}).get("policy_stats", {}).get("mean_confidence")
        if conf is not None:
            print(f"mean confidence {conf:.3f} (Confident Splatting's scene-quality indicator)")
        print(f"wrote {out / 'model.sdz'}, {out / 'model.ply'}, {out / 'summary.json'}")
        for lv in s.get("lod") or []:
            print(
                f"LOD {lv['level']}: {lv['num_gaussians']} Gaussians ({lv['share']:g}), "
                f"{lv['sdz_bytes'] / 1e6:.3f} MB in {out / 'lod'}"
            )
        from splatdistill.view.server import view_command

        print(f"see them side by side: {view_command([model, out / 'model.sdz'], data)}")
