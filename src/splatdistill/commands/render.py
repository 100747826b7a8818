"""Render a model to a folder of PNGs, with the cameras written beside them for exact re-renders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from splatdistill.cameras.camera import Camera
from splatdistill.errors import UserError
from splatdistill.fileio import atomic_path, write_json_atomic
from splatdistill.render.api import render


def save_png(rgb: torch.Tensor, path: Path, alpha: torch.Tensor | None = None) -> None:
    arr = (rgb.detach().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    if alpha is not None:
        a = (alpha.detach().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
        arr = np.concatenate([arr, a[..., None]], axis=-1)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def write_cameras(path: Path, cameras: list[Camera], background) -> None:
    write_json_atomic(path, {"background": list(background),
                             "cameras": [c.to_dict() for c in cameras]})


def read_cameras(path: Path) -> tuple[list[Camera], tuple]:
    try:
        d = json.loads(Path(path).read_text())
        cams = [Camera.from_dict(c) for c in d["cameras"]]
        bg = tuple(float(v) for v in d.get("background", (1.0, 1.0, 1.0)))
    except FileNotFoundError:
        raise UserError("cameras file not found", path) from None
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"not a valid cameras.json ({type(e).__name__}: {e})", path) from None
    if not cams:
        raise UserError("cameras.json lists no cameras", path)
    from splatdistill.cameras.camera import check_intrinsics

    for i, c in enumerate(cams):
        check_intrinsics(c.fx, c.fy, c.cx, c.cy, c.width, c.height, path, i, what="camera")
    return cams, bg


def orbit_for_scene(scene, n: int, width: int, height: int) -> list[Camera]:
    """Orbit cameras around the robust bounding sphere of the Gaussians (for a bare .ply)."""
    from splatdistill.cameras.views import bounding_sphere, orbit_cameras

    center, radius = bounding_sphere(scene.means.detach().cpu().numpy())
    return orbit_cameras(center, 2.2 * radius, n, width, height)


def render_to_folder(model, out, data=None, split="test", orbit=None, cameras_file=None, width=None,
                     height=None, backend="auto", downscale=1, device="auto") -> int:
    from splatdistill.formats.io import load_model
    from splatdistill.device import pick_device

    chosen = sum(x is not None for x in (data, orbit, cameras_file))
    if chosen != 1:
        raise UserError("give exactly one of --data, --orbit N or --cameras FILE")
    dev = pick_device(device)
    scene = load_model(model).to(dev)
    background = (1.0, 1.0, 1.0)
    if cameras_file is not None:
        cams, background = read_cameras(cameras_file)
    elif orbit is not None:
        if orbit < 1:
            raise UserError("--orbit needs a positive number of views")
        if len(scene) == 0:
            raise UserError("the model has no Gaussians to place an orbit around (--cameras or --data render it)",
                            model)
        cams = orbit_for_scene(scene, orbit, width or 512, height or width or 512)
    else:
        from splatdistill.data.dataset import load_dataset

        ds = load_dataset(data, downscale=downscale)
        cams = [v.camera for v in ds.split(split)]
        background = ds.background
    if width or height:
        cams = [c.with_size(width or c.width, height or c.height) for c in cams]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for i, cam in enumerate(tqdm(cams, desc="render", leave=False)):
        with torch.no_grad():
            r = render(scene, [cam], background=background, backend=backend)
        name = Path(cam.image_name).stem if cam.image_name else f"view_{i:04d}"
        save_png(r.rgb[0], out / f"{i:04d}_{name}.png")
        cam.image_name = cam.image_name or name
    write_cameras(out / "cameras.json", cams, background)
    return len(cams)
