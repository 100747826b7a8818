"""``splatdistill render``: a model to a folder of PNGs, with the cameras written beside them for exact
re-renders. (torch and the renderer load when a render starts, not when the command line is read.)"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional

from splatdistill.commands.common import Pos, abs_path
from splatdistill.errors import UserError
from splatdistill.fileio import atomic_path, write_json_atomic
from splatdistill.validate import check_config

if TYPE_CHECKING:
    import torch

    from splatdistill.cameras.camera import Camera


def save_png(rgb: torch.Tensor, path: Path, alpha: torch.Tensor | None = None) -> None:
    import numpy as np
    from PIL import Image

    arr = (rgb.detach().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    if alpha is not None:
        a = (alpha.detach().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
        arr = np.concatenate([arr, a[..., None]], axis=-1)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def write_cameras(path: Path, cameras: list[Camera], background) -> None:
    write_json_atomic(path, {"background": list(background), "cameras": [c.to_dict() for c in cameras]})


def read_cameras(path: Path) -> tuple[list[Camera], tuple]:
    from splatdistill.cameras.camera import Camera

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


def render_to_folder(
    model,
    out,
    data=None,
    split="test",
    orbit=None,
    cameras_file=None,
    width=None,
    height=None,
    backend="auto",
    downscale=1,
    device="auto",
) -> int:
    import torch
    from tqdm.auto import tqdm

    from splatdistill.device import pick_device
    from splatdistill.formats.io import load_model
    from splatdistill.render.api import render

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
            raise UserError(
                "the model has no Gaussians to place an orbit around (--cameras or --data render it)", model
            )
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


@dataclass
class RenderCommand:
    """Render a model to PNGs: the views of a dataset split (--data), an orbit (--orbit N, no dataset
    needed) or exactly the views of a cameras.json written earlier (--cameras). Writes OUT/cameras.json.
    OUT holding another render's images is refused unless --overwrite (which removes them)."""

    model: Pos[Path]
    """the model file (any format convert reads)."""
    out: Path
    """the folder of the PNGs."""
    data: Optional[Path] = None
    """render the views of this dataset's --split."""
    split: str = "test"
    """the dataset split rendered with --data."""
    orbit: Optional[int] = None
    """render N views on an orbit around the model (no dataset needed)."""
    cameras: Optional[Path] = None
    """render exactly the views of this cameras.json (written by an earlier render)."""
    width: Optional[int] = None
    """image width (default: the cameras'; 512 for --orbit)."""
    height: Optional[int] = None
    """image height (default: the cameras'; --width for --orbit)."""
    backend: Literal["auto", "cpu", "gsplat", "reference"] = "auto"
    """rasteriser (auto: gsplat on CUDA, the CPU kernel otherwise)."""
    downscale: int = 1
    """divide the dataset's image size by this factor (with --data)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where to render (auto: CUDA when available)."""
    overwrite: bool = False
    """remove another render's images from OUT first."""

    def run(self) -> None:
        from splatdistill.commands.runs import run_folder

        check_config(self)
        config = {
            "model": abs_path(self.model),
            "data": abs_path(self.data),
            "split": self.split,
            "orbit": self.orbit,
            "cameras": abs_path(self.cameras),
            "width": self.width,
            "height": self.height,
            "backend": self.backend,
            "downscale": self.downscale,
        }
        with run_folder(
            self.out,
            "render",
            config,
            owned=("[0-9][0-9][0-9][0-9]_*.png", "cameras.json"),
            overwrite=self.overwrite,
            can_resume=False,
        ):
            n = render_to_folder(
                self.model,
                self.out,
                data=self.data,
                split=self.split,
                orbit=self.orbit,
                cameras_file=self.cameras,
                width=self.width,
                height=self.height,
                backend=self.backend,
                downscale=self.downscale,
                device=self.device,
            )
        print(f"wrote {n} images and cameras.json to {self.out}")
