"""One entry point for model files: ``load_model`` / ``save_model`` pick the format from the name
(and, for ``.ply``, the header); ``describe_model`` says what a file holds."""

from __future__ import annotations

import os
from pathlib import Path

from splatdistill.errors import UserError

MODEL_SUFFIXES = (".ply", ".spz", ".sdz", ".sog", "meta.json")
# written by save_model: ".compressed.ply" is the SuperSplat / PlayCanvas compressed PLY
OUTPUT_SUFFIXES = (".ply", ".compressed.ply", ".spz", ".sdz", ".sog", "meta.json")


def model_format(path: str | os.PathLike) -> str:
    """The format of a model file.

    Args:
        path: A file, or a SOG folder.

    Returns:
        ``ply``, ``compressed_ply`` (from the PLY header, whatever the name), ``spz``, ``sdz`` or ``sog``
        (a ``.sog`` zip, a ``meta.json``, or a folder holding one). Any other name raises ``UserError``.
    """
    from splatdistill.formats.sog import is_sog_path

    p = Path(path)
    suffix = p.suffix.lower()
    if is_sog_path(p):
        return "sog"
    if suffix == ".ply":
        from splatdistill.formats.ply import is_compressed_ply, read_header

        return "compressed_ply" if is_compressed_ply(read_header(p)) else "ply"
    if suffix in (".spz", ".sdz"):
        return suffix[1:]
    raise UserError(
        f"unknown model format '{suffix or p.name}' (supported: {', '.join(MODEL_SUFFIXES)}, or a SOG folder)", p
    )


def load_model(path: str | os.PathLike):
    """Read a model file of any supported format.

    Inria or compressed PLY (told apart by the header), SPZ v1-v4, ``.sdz`` (plain or packed), SOG
    (``.sog`` zip, ``meta.json``, or its folder).

    Args:
        path: The model file or SOG folder.

    Returns:
        A float32 CPU ``GaussianScene``. A missing, unknown or malformed file raises ``UserError``.
    """
    p = Path(path)
    fmt = model_format(p)
    if fmt in ("ply", "compressed_ply"):
        from splatdistill.formats.ply import read_ply

        return read_ply(p)  # dispatches compressed PLYs itself
    if fmt == "spz":
        from splatdistill.formats.spz import read_spz

        return read_spz(p)
    if fmt == "sdz":
        from splatdistill.formats.sdz import load_sdz

        return load_sdz(p)
    from splatdistill.formats.sog import read_sog

    return read_sog(p)


def save_model(scene, path: str | os.PathLike, *, spz_version: int | None = None) -> Path:
    """Write ``scene`` in the format its file name asks for.

    ``.compressed.ply`` (SuperSplat compressed PLY), ``.ply`` (Inria), ``.spz``, ``.sdz``, ``.sog`` (zip)
    or ``meta.json`` (SOG textures beside it).

    Args:
        scene: The scene.
        path: The output file.
        spz_version: SPZ version 2-4 (default 4); only for ``.spz`` names.

    Returns:
        The path written.
    """
    p = Path(path)
    name = p.name.lower()
    suffix = p.suffix.lower()
    if spz_version is not None and suffix != ".spz":
        raise UserError("--spz-version applies to .spz outputs only", p)
    if name.endswith(".compressed.ply"):
        from splatdistill.formats.compressed_ply import write_compressed_ply

        return write_compressed_ply(scene, p)
    if suffix == ".ply":
        from splatdistill.formats.ply import write_ply

        return write_ply(scene, p)
    if suffix == ".spz":
        from splatdistill.formats.spz import DEFAULT_VERSION, write_spz

        return write_spz(scene, p, version=DEFAULT_VERSION if spz_version is None else spz_version)
    if suffix == ".sdz":
        from splatdistill.formats.sdz import save_sdz

        return save_sdz(scene, p)
    if suffix == ".sog" or name == "meta.json":
        from splatdistill.formats.sog import write_sog

        return write_sog(scene, p)
    raise UserError(f"unknown output format '{suffix or p.name}' (supported: {', '.join(OUTPUT_SUFFIXES)})", p)


def describe_model(path: str | os.PathLike) -> dict:
    """What a model file holds, for ``splatdistill info``.

    Args:
        path: The model file or SOG folder.

    Returns:
        A JSON-ready dict: ``kind`` ("model"), ``format``, ``num_gaussians``, ``sh_degree``,
        ``antialiased``, ``bbox_min`` / ``bbox_max`` ([3] floats), ``bytes`` on disk,
        ``bytes_in_memory`` and, for SPZ, ``spz_version``.
    """
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
        "bytes": size_on_disk(path),
        "bytes_in_memory": scene.nbytes(),
    }
    if fmt == "spz":
        from splatdistill.formats.spz import read_spz_header

        d["spz_version"] = read_spz_header(path).version
    return d


def size_on_disk(path) -> int:
    """Bytes a model takes on disk.

    Args:
        path: A model file, or a SOG ``meta.json`` or folder.

    Returns:
        The file's size; for SOG, ``meta.json`` plus the textures it names.
    """
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
