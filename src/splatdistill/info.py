"""``splatdistill info``: what a dataset or a model file holds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import UserError

MODEL_SUFFIXES = (".ply", ".spz", ".sdz")


def load_model(path: str | os.PathLike):
    """Read a model file of any supported format (by extension)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".ply":
        from .scene.ply import read_ply

        return read_ply(p)
    if suffix == ".spz":
        from .compress.spz import read_spz

        return read_spz(p)
    if suffix == ".sdz":
        from .compress.codec import load_sdz

        return load_sdz(p)
    raise UserError(f"unknown model format '{suffix}' (supported: {', '.join(MODEL_SUFFIXES)})", p)


def save_model(scene, path: str | os.PathLike) -> Path:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".ply":
        from .scene.ply import write_ply

        return write_ply(scene, p)
    if suffix == ".spz":
        from .compress.spz import write_spz

        return write_spz(scene, p)
    if suffix == ".sdz":
        from .compress.codec import save_sdz

        return save_sdz(scene, p)
    raise UserError(f"unknown output format '{suffix}' (supported: {', '.join(MODEL_SUFFIXES)})", p)


def describe_model(path: str | os.PathLike) -> dict:
    scene = load_model(path)
    lo, hi = scene.bbox()
    return {
        "kind": "model",
        "format": Path(path).suffix.lower().lstrip("."),
        "num_gaussians": len(scene),
        "sh_degree": scene.sh_degree,
        "bbox_min": [float(v) for v in lo],
        "bbox_max": [float(v) for v in hi],
        "bytes": os.path.getsize(path),
        "bytes_in_memory": scene.nbytes(),
    }


def describe_dataset(path: str | os.PathLike) -> dict:
    from .data.dataset import load_dataset

    ds = load_dataset(path)
    train, test = ds.split("train"), ds.splits.get("test", [])
    cams = train + test
    sizes = sorted({(c.camera.width, c.camera.height) for c in cams})
    fx = np.array([c.camera.fx for c in cams])
    fy = np.array([c.camera.fy for c in cams])
    w, h = sizes[0] if sizes else (0, 0)
    return {
        "kind": "dataset",
        "format": ds.format,
        "root": str(ds.root),
        "num_train": len(train),
        "num_test": len(test),
        "num_val": len(ds.splits.get("val", [])),
        "width": int(w),
        "height": int(h),
        "resolutions": [list(s) for s in sizes],
        "camera_models": list(ds.camera_models),
        "focal_x": [float(fx.min()), float(fx.max())] if len(fx) else None,
        "focal_y": [float(fy.min()), float(fy.max())] if len(fy) else None,
        "scene_extent": float(ds.extent),
        "num_points": None if ds.points is None else int(len(ds.points)),
        "normalization": ds.normalization.to_dict(),
    }


def describe(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.exists():
        raise UserError("no such file or directory", p)
    if p.is_dir():
        return describe_dataset(p)
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
