"""What a dataset holds: format, splits, resolutions, cameras, extent (``splatdistill info``)."""

from __future__ import annotations

import os

import numpy as np


def describe_dataset(path: str | os.PathLike) -> dict:
    """What a dataset holds, for ``splatdistill info``.

    Args:
        path: The dataset folder.

    Returns:
        A JSON-ready dict: ``kind`` ("dataset"), ``format``, ``root``, ``num_train`` / ``num_test`` /
        ``num_val``, ``width`` / ``height`` (the smallest resolution), ``resolutions``,
        ``camera_models``, ``focal_x`` / ``focal_y`` ([min, max]), ``scene_extent``, ``num_points``
        and ``normalization``.
    """
    from splatdistill.data.dataset import load_dataset

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
