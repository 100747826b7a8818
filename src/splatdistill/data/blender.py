"""NeRF-synthetic / Blender datasets: ``transforms_{train,val,test}.json`` + RGBA PNG frames.

Format (Mildenhall et al. 2020, NeRF; the files of the ``nerf_synthetic`` release):

* ``camera_angle_x``: horizontal field of view in radians, so the focal length in pixels is
  ``0.5 * W / tan(0.5 * camera_angle_x)`` for the image width ``W`` actually loaded (the angle
  does not depend on the resolution). Pixels are square, the principal point the image centre.
* ``frames[i].file_path``: image path relative to the JSON's folder, usually without extension
  (``./train/r_0`` means ``./train/r_0.png``).
* ``frames[i].transform_matrix``: 4x4 camera-to-world in the OpenGL/Blender camera convention
  (x right, y up, z backward, looking down -z). Negating the camera's y and z axes gives the
  OpenCV convention (x right, y down, z forward) that ``Camera`` uses; its inverse is the
  world-to-camera matrix.

Frames are RGBA; the loader composites them on a background (white by default), as 3DGS does
for this benchmark. The world frame is left as it is (identity normalisation, the benchmark
convention).
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath

import numpy as np

from splatdistill.cameras.camera import Camera
from splatdistill.data.images import IMAGE_EXTENSIONS, ImageSpec, prepare_view, read_image_size
from splatdistill.errors import UserError

SPLITS = ("train", "val", "test")
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def read_json(path: Path) -> dict:
    """The JSON object in ``path``; an unreadable or malformed file, or one that is not an object,
    raises ``UserError``.

    Args:
        path: The ``transforms_*.json`` file.

    Returns:
        The parsed dict.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read file: {e.strerror or e}", path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}", path) from None
    if not isinstance(data, dict):
        raise UserError("expected a JSON object at the top level", path)
    return data


def frames_of(data: dict, path: Path) -> list[dict]:
    """The ``frames`` list of a transforms file, each checked for ``file_path`` and ``transform_matrix``.

    Args:
        data: The parsed file.
        path: The file, to name in errors.

    Returns:
        The frames (dicts).
    """
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise UserError("no 'frames' list (expected a list of {file_path, transform_matrix})", path)
    for i, f in enumerate(frames):
        if not isinstance(f, dict) or "file_path" not in f or "transform_matrix" not in f:
            raise UserError(f"frame {i} lacks 'file_path' or 'transform_matrix'", path)
    return frames


def opengl_c2w_to_opencv_w2c(matrix, path: Path | None = None, index: int = 0) -> np.ndarray:
    """World-to-camera (OpenCV axes) from a camera-to-world matrix in OpenGL/Blender axes.

    Args:
        matrix: [4, 4] or [3, 4] camera-to-world matrix (nested lists or array).
        path: The file, to name in errors.
        index: The frame's index, for the message.

    Returns:
        [4, 4] float64 world-to-camera matrix. A non-numeric, non-finite or singular matrix raises
        ``UserError``.
    """
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"frame {index}: transform_matrix is not a numeric matrix", path) from None
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise UserError(f"frame {index}: transform_matrix must be a finite 4x4 (or 3x4) matrix", path)
    c2w = m @ _GL_TO_CV  # flip the camera's y and z axes (columns 1 and 2)
    try:
        return np.linalg.inv(c2w)
    except np.linalg.LinAlgError:
        raise UserError(f"frame {index}: transform_matrix is singular", path) from None


def image_path_of(root: Path, file_path: str) -> Path:
    """The image file of a frame: ``root / file_path``, with ``.png`` added when it has no image suffix.

    Args:
        root: The dataset folder.
        file_path: The frame's ``file_path``.

    Returns:
        The path.
    """
    p = root / file_path
    return p if p.suffix.lower() in IMAGE_EXTENSIONS else p.with_name(p.name + ".png")


def load_blender(
    root: str | Path, downscale: int = 1, background=(1.0, 1.0, 1.0)
) -> dict[str, list[tuple[Camera, ImageSpec]]]:
    """Cameras and image specs of a NeRF-synthetic / Blender dataset.

    Args:
        root: The dataset folder.
        downscale: Integer image downscale (images resized with INTER_AREA, cameras scaled).
        background: RGB in [0, 1] the RGBA frames are composited on.

    Returns:
        Split name -> list of ``(Camera, ImageSpec)``: ``train`` always; ``val`` and ``test`` when
        present.
    """
    root = Path(root)
    splits: dict[str, list[tuple[Camera, ImageSpec]]] = {}
    for split in SPLITS:
        jpath = root / f"transforms_{split}.json"
        if not jpath.is_file():
            if split == "train":
                raise UserError("no transforms_train.json", root)
            continue
        data = read_json(jpath)
        frames = frames_of(data, jpath)
        angle = data.get("camera_angle_x")
        if not isinstance(angle, (int, float)) or not 0 < angle < math.pi:
            raise UserError("missing or invalid 'camera_angle_x' (radians, in (0, pi))", jpath)
        views = []
        for i, fr in enumerate(frames):
            img = image_path_of(root, str(fr["file_path"]))
            w, h = read_image_size(img, listed_in=jpath)
            focal = 0.5 * w / math.tan(0.5 * float(angle))
            cam = Camera(
                fx=focal,
                fy=focal,
                cx=0.5 * w,
                cy=0.5 * h,
                width=w,
                height=h,
                world_to_camera=opengl_c2w_to_opencv_w2c(fr["transform_matrix"], jpath, i),
                image_name=PurePosixPath(str(fr["file_path"])).as_posix(),
                model="PINHOLE",
            )
            views.append(prepare_view(cam, None, img, (w, h), 1.0 / downscale, background))
        splits[split] = views
    return splits
