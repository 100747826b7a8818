"""``splatdistill convert``: a model from one file format into another."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from splatdistill.commands.common import Pos


@dataclass
class ConvertCommand:
    """Convert a model between formats. Reads .ply (Inria or compressed, told apart by the header),
    .spz (v1-v4), .sdz, .sog, a SOG meta.json or its folder; writes by the output name: .ply,
    .compressed.ply, .spz (v4; --spz-version 3 for readers without v4, such as Spark), .sdz, .sog,
    meta.json (SOG textures beside it)."""

    src: Pos[Path]
    """the model to read."""
    dst: Pos[Path]
    """the file to write; its name chooses the format."""
    spz_version: Optional[Literal[2, 3, 4]] = None
    """SPZ version of a .spz output (default: 4)."""

    def run(self) -> None:
        from splatdistill.fileio import check_output_file
        from splatdistill.formats.io import load_model, save_model, size_on_disk

        src, dst = self.src, self.dst
        check_output_file(dst, min_free_bytes=src.stat().st_size if src.is_file() else 0)
        scene = load_model(src)
        written = save_model(scene, dst, spz_version=self.spz_version)
        print(f"wrote {written} ({len(scene)} Gaussians, SH degree {scene.sh_degree}, {size_on_disk(written)} bytes)")
