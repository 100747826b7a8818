"""``splatdistill eval``: a model's metrics on a dataset split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from splatdistill.commands.common import Pos, print_json, summary_line
from splatdistill.validate import check_config


@dataclass
class EvalCommand:
    """Evaluate a model on a dataset split: PSNR, SSIM, LPIPS-VGG, LPIPS-AlexNet, Gaussians, bytes,
    render time, peak memory, per-view values (written to --out as JSON)."""

    model: Pos[Path]
    """the model file (any format convert reads)."""
    data: Path
    """the dataset folder."""
    split: str = "test"
    """the split evaluated."""
    out: Optional[Path] = None
    """write every metric, per view too, to this JSON file."""
    downscale: int = 1
    """divide the dataset's image size by this factor."""
    backend: Literal["auto", "cpu", "gsplat", "reference"] = "auto"
    """rasteriser (auto: gsplat on CUDA, the CPU kernel otherwise)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where to render (auto: CUDA when available)."""
    lpips: bool = True
    """compute LPIPS (VGG and AlexNet)."""
    json: bool = False
    """print the metrics (without the per-view values) as one line of JSON."""

    def run(self) -> None:
        from splatdistill.data.dataset import load_dataset
        from splatdistill.device import pick_device
        from splatdistill.fileio import check_output_file, write_json_atomic
        from splatdistill.formats.io import load_model
        from splatdistill.ops.evaluate import evaluate_scene

        check_config(self)
        if self.out:
            check_output_file(self.out)
        scene = load_model(self.model).to(pick_device(self.device))
        ds = load_dataset(self.data, downscale=self.downscale)
        m = evaluate_scene(scene, ds, self.split, backend=self.backend, lpips=self.lpips, model_path=self.model)
        if self.out:
            write_json_atomic(self.out, m)
        if self.json:
            print_json({k: v for k, v in m.items() if k != "per_view"})
        else:
            print(summary_line(m))
