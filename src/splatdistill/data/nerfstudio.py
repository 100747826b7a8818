"""nerfstudio / instant-ngp datasets: one ``transforms.json`` listing every frame.

Format (https://docs.nerf.studio/quickstart/data_conventions.html; instant-ngp's
``docs/nerf_dataset_tips.md``): intrinsics either at the top level (shared) or per frame (a
frame's value wins):

* ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h`` in pixels; instead of ``fl_x`` / ``fl_y``,
  instant-ngp files may give ``camera_angle_x`` / ``camera_angle_y`` (radians), with
  ``fl = 0.5 * w / tan(0.5 * angle)``. Missing ``fl_y`` = ``fl_x``; missing ``cx, cy`` = the
  image centre; missing ``w, h`` = the image's size.
* ``camera_model``: ``OPENCV`` (distortion ``k1, k2, p1, p2``, optionally ``k3``; the same
  polynomial model as COLMAP OPENCV and undistorted the same way), ``PINHOLE`` or
  ``SIMPLE_PINHOLE``. Fisheye and panoramic models are rejected.
* ``frames[i].file_path`` relative to the JSON's folder, ``frames[i].transform_matrix``
  camera-to-world in the OpenGL/Blender camera convention (x right, y up, z back), converted
  to OpenCV world-to-camera as for Blender.
* ``ply_file_path`` (optional, nerfstudio): the SfM points, in the same world frame as the poses.

Downscaling uses ``images_N/`` when the frames live in ``images/`` and ``images_N/`` holds the
file (nerfstudio's ``ns-process-data`` layout); otherwise the image is resized with INTER_AREA.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath

import numpy as np

from splatdistill.cameras.camera import Camera, check_intrinsics
from splatdistill.data.blender import frames_of, image_path_of, opengl_c2w_to_opencv_w2c, read_json
from splatdistill.data.images import ImageSpec, prepare_view, read_image_size
from splatdistill.errors import UserError

SUPPORTED_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE")


def _number(value, key: str, path: Path, index: int) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not math.isfinite(v):
        raise UserError(f"frame {index}: '{key}' must be a finite number, got {value!r}", path)
    return v


def _angle(value, key: str, path: Path, index: int) -> float:
    a = _number(value, key, path, index)
    if not 0 < a < math.pi:
        raise UserError(f"frame {index}: '{key}' must be an angle in (0, pi) radians, got {value!r}", path)
    return a


def _read_ply_points(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from plyfile import PlyData  # only needed for nerfstudio datasets with a point cloud

    try:
        ply = PlyData.read(str(path))
        v = ply["vertex"].data
        xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
        names = v.dtype.names or ()
        if all(c in names for c in ("red", "green", "blue")):
            rgb = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.uint8)
        else:
            rgb = np.full((xyz.shape[0], 3), 128, dtype=np.uint8)
    except FileNotFoundError:
        raise UserError("point cloud named by ply_file_path not found", path) from None
    except Exception as e:  # plyfile raises several types for malformed files
        raise UserError(f"cannot read point cloud: {e}", path) from None
    return xyz, rgb


def load_nerfstudio(
    root: str | Path, downscale: int = 1, background=(1.0, 1.0, 1.0), json_path: str | Path | None = None
) -> tuple[list[tuple[Camera, ImageSpec]], np.ndarray | None, np.ndarray | None]:
    """All frames of a nerfstudio / instant-ngp dataset, and its point cloud if any.

    Args:
        root: The dataset folder.
        downscale: Integer downscale (``images_N/`` when present, else INTER_AREA resizing).
        background: RGB in [0, 1] that transparency is composited on.
        json_path: The transforms file; ``root / "transforms.json"`` when None.

    Returns:
        ``(views, points, colors)``: ``(Camera, ImageSpec)`` per frame in file order, and the
        ``ply_file_path`` points as [M, 3] float64 and [M, 3] uint8, or None and None.
    """
    root = Path(root)
    jpath = Path(json_path) if json_path is not None else root / "transforms.json"
    base = jpath.parent
    data = read_json(jpath)
    frames = frames_of(data, jpath)

    views = []
    for i, fr in enumerate(frames):

        def get(key, default=None, fr=fr):
            return fr.get(key, data.get(key, default))

        if get("is_fisheye", False):
            raise UserError(
                "unsupported camera model 'fisheye' (supported: " + ", ".join(SUPPORTED_MODELS) + ")", jpath
            )
        model = get("camera_model")
        if model is not None:
            model = str(model).upper()
            if model not in SUPPORTED_MODELS:
                raise UserError(f"unsupported camera model '{model}' (supported: {', '.join(SUPPORTED_MODELS)})", jpath)

        fp = str(fr["file_path"])
        img = image_path_of(base, fp)
        w = int(_number(get("w"), "w", jpath, i)) if get("w") is not None else None
        h = int(_number(get("h"), "h", jpath, i)) if get("h") is not None else None
        if w is None or h is None:  # intrinsics refer to the full-resolution frame
            w, h = read_image_size(img, listed_in=jpath)
        if w < 1 or h < 1:
            raise UserError(f"frame {i}: image size 'w' x 'h' must be at least 1x1 pixels, got {w}x{h}", jpath)
        factor = 1.0 / downscale
        if downscale > 1:
            parts = PurePosixPath(fp).parts
            parts = parts[1:] if parts and parts[0] == "." else parts
            if len(parts) > 1 and parts[0] == "images":
                alt = image_path_of(base / f"images_{downscale}", "/".join(parts[1:]))
                if alt.is_file():
                    img, factor = alt, 1.0
        sw, sh = read_image_size(img, listed_in=jpath)

        if get("fl_x") is not None:
            fx = _number(get("fl_x"), "fl_x", jpath, i)
        elif get("camera_angle_x") is not None:
            fx = 0.5 * w / math.tan(0.5 * _angle(get("camera_angle_x"), "camera_angle_x", jpath, i))
        else:
            raise UserError(f"frame {i}: no focal length ('fl_x' or 'camera_angle_x')", jpath)
        if get("fl_y") is not None:
            fy = _number(get("fl_y"), "fl_y", jpath, i)
        elif get("camera_angle_y") is not None:
            fy = 0.5 * h / math.tan(0.5 * _angle(get("camera_angle_y"), "camera_angle_y", jpath, i))
        else:
            fy = fx
        cx = _number(get("cx"), "cx", jpath, i) if get("cx") is not None else 0.5 * w
        cy = _number(get("cy"), "cy", jpath, i) if get("cy") is not None else 0.5 * h
        dist = [_number(get(k, 0.0), k, jpath, i) for k in ("k1", "k2", "p1", "p2", "k3")]
        if dist[4] == 0.0:
            dist = dist[:4]
        if model in ("PINHOLE", "SIMPLE_PINHOLE") and any(dist):
            raise UserError(f"frame {i}: camera_model {model} with distortion coefficients", jpath)
        if model is None:
            model = "OPENCV" if any(dist) else "PINHOLE"

        check_intrinsics(fx, fy, cx, cy, w, h, jpath, i)
        cam = Camera(
            fx=fx,
            fy=fy,
            cx=cx,
            cy=cy,
            width=w,
            height=h,
            world_to_camera=opengl_c2w_to_opencv_w2c(fr["transform_matrix"], jpath, i),
            image_name=PurePosixPath(fp).as_posix(),
            model=model,
        )
        views.append(prepare_view(cam, dist, img, (sw, sh), factor, background))

    points = colors = None
    ply = data.get("ply_file_path")
    if ply:
        points, colors = _read_ply_points(base / str(ply))
    return views, points, colors
