"""``splatdistill metrics``: image metrics between two images or two folders of images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from splatdistill.commands.common import Pos, fmt, print_json


@dataclass
class MetricsCommand:
    """Image metrics (PSNR, SSIM, LPIPS-VGG, LPIPS-AlexNet) between two images or two folders of
    same-named images."""

    a: Pos[Path]
    """the first image or folder (the reference)."""
    b: Pos[Path]
    """the second image or folder."""
    json: bool = False
    """print the metrics as one line of JSON."""

    def run(self) -> None:
        from splatdistill.ops.metrics import compare_paths

        m = compare_paths(self.a, self.b)
        if self.json:
            print_json(m)
            return
        print(
            f"{m.get('count', 1)} image(s): PSNR {fmt(m['psnr'], '.3f')} dB, SSIM {fmt(m['ssim'])}, "
            f"LPIPS-VGG {fmt(m['lpips_vgg'])}, LPIPS-Alex {fmt(m['lpips_alex'])}"
        )
        if m.get("lpips_error"):
            print(f"LPIPS unavailable: {m['lpips_error']}")
