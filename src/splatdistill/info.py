"""``splatdistill info``: what a dataset or a model file holds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import UserError

MODEL_SUFFIXES = (".ply", ".spz", ".sdz", ".sog", "meta.json")
# written by save_model: ".compressed.ply" is the SuperSplat / PlayCanvas compressed PLY
OUTPUT_SUFFIXES = (".ply", ".compressed.ply", ".spz", ".sdz", ".sog", "meta.json")


def model_format(path: str | os.PathLike) -> str:
    """The format of a model file: ply, compressed_ply (from the PLY header, whatever the name),
    spz, sdz or sog (a .sog zip, a meta.json, or a folder holding one)."""
    from .formats.sog import is_sog_path

    p = Path(path)
    suffix = p.suffix.lower()
    if is_sog_path(p):
        return "sog"
    if suffix == ".ply":
        from .scene.ply import is_compressed_ply, read_header

        return "compressed_ply" if is_compressed_ply(read_header(p)) else "ply"
    if suffix in (".spz", ".sdz"):
        return suffix[1:]
    raise UserError(f"unknown model format '{suffix or p.name}' (supported: {', '.join(MODEL_SUFFIXES)}, "
                    f"or a SOG folder)", p)


def load_model(path: str | os.PathLike):
    """Read a model file of any supported format: Inria or compressed PLY (told apart by the
    header), SPZ v1-v4, .sdz, SOG (.sog zip, meta.json, or its folder)."""
    p = Path(path)
    fmt = model_format(p)
    if fmt in ("ply", "compressed_ply"):
        from .scene.ply import read_ply

        return read_ply(p)  # dispatches compressed PLYs itself
    if fmt == "spz":
        from .compress.spz import read_spz

        return read_spz(p)
    if fmt == "sdz":
        from .compress.codec import load_sdz

        return load_sdz(p)
    from .formats.sog import read_sog

    return read_sog(p)


def save_model(scene, path: str | os.PathLike, *, spz_version: int | None = None) -> Path:
    """Write ``scene`` in the format the name asks for: ``.compressed.ply`` (SuperSplat compressed
    PLY), ``.ply`` (Inria), ``.spz`` (version ``spz_version``, default 4), ``.sdz``, ``.sog`` (zip)
    or ``meta.json`` (SOG textures beside it)."""
    p = Path(path)
    name = p.name.lower()
    suffix = p.suffix.lower()
    if spz_version is not None and suffix != ".spz":
        raise UserError("--spz-version applies to .spz outputs only", p)
    if name.endswith(".compressed.ply"):
        from .formats.compressed_ply import write_compressed_ply

        return write_compressed_ply(scene, p)
    if suffix == ".ply":
        from .scene.ply import write_ply

        return write_ply(scene, p)
    if suffix == ".spz":
        from .compress.spz import DEFAULT_VERSION, write_spz

        return write_spz(scene, p, version=DEFAULT_VERSION if spz_version is None else spz_version)
    if suffix == ".sdz":
        from .compress.codec import save_sdz

        return save_sdz(scene, p)
    if suffix == ".sog" or name == "meta.json":
        from .formats.sog import write_sog

        return write_sog(scene, p)
    raise UserError(f"unknown output format '{suffix or p.name}' (supported: {', '.join(OUTPUT_SUFFIXES)})", p)


def describe_model(path: str | os.PathLike) -> dict:
    fmt = model_format(path)
    scene = load_model(path)
    lo, hi = scene.bbox()
    d = {
        "kind": "model",
        "format": fmt,
        "num_gaussians": len(scene),
        "sh_degree": scene.sh_degree,
        "antialiased": scene.antialiased,
        "bbox_min": [float(v) for v in lo],
        "bbox_max": [float(v) for v in hi],
        "bytes": _size_on_disk(path),
        "bytes_in_memory": scene.nbytes(),
    }
    if fmt == "spz":
        from .compress.spz import read_spz_header

        d["spz_version"] = read_spz_header(path).version
    return d


def _size_on_disk(path) -> int:
    """A file's size; for a SOG meta.json or folder, meta.json plus the textures it names."""
    p = Path(path)
    if p.is_dir() or p.name.lower() == "meta.json":
        import json

        meta = p / "meta.json" if p.is_dir() else p
        total = os.path.getsize(meta)
        for v in json.loads(meta.read_text()).values():
            for f in v.get("files", []) if isinstance(v, dict) else []:
                if (meta.parent / f).is_file():
                    total += os.path.getsize(meta.parent / f)
        return total
    return os.path.getsize(p)


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
        from .formats.sog import is_sog_path

        return describe_model(p) if is_sog_path(p) else describe_dataset(p)
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
