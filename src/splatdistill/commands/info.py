"""``splatdistill info``: what a dataset or a model file holds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from splatdistill.commands.common import Pos, print_json
from splatdistill.errors import UserError


def describe(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.exists():
        raise UserError("no such file or directory", p)
    if p.is_dir():
        from splatdistill.data.describe import describe_dataset
        from splatdistill.formats.io import describe_model
        from splatdistill.formats.sog import is_sog_path

        return describe_model(p) if is_sog_path(p) else describe_dataset(p)
    from splatdistill.formats.io import describe_model

    return describe_model(p)


def format_info(d: dict) -> str:
    lines = []
    for k, v in d.items():
        if isinstance(v, float):
            v = f"{v:.6g}"
        elif isinstance(v, list) and v and isinstance(v[0], float):
            v = "[" + ", ".join(f"{x:.4g}" for x in v) + "]"
        lines.append(f"{k:>16}: {v}")
    return "\n".join(lines)


@dataclass
class InfoCommand:
    """Describe a dataset (format, splits, resolution, cameras, extent) or a model file (.ply, compressed
    .ply, .spz v1-v4, .sdz, .sog, SOG meta.json or folder)."""

    path: Pos[Path]
    """the dataset folder or model file."""
    json: bool = False
    """print the description as one line of JSON."""

    def run(self) -> None:
        d = describe(self.path)
        print_json(d) if self.json else print(format_info(d))
