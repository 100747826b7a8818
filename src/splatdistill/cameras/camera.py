"""One camera type for every dataset format.

Conventions: OpenCV camera frame (x right, y down, z forward); ``world_to_camera`` is a 4x4
rigid transform; intrinsics are pinhole (``fx, fy, cx, cy``) in pixels of an image of size
``width`` x ``height``. Distorted source models are undistorted at load, so every camera here is
a pinhole camera; ``model`` records the source model for reporting.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch


@dataclass
class Camera:
    """A pinhole camera: intrinsics in pixels and an OpenCV world-to-camera transform.

    Args:
        fx, fy: Focal lengths in pixels.
        cx, cy: Principal point in pixels (pixel centres at +0.5).
        width, height: Image size in pixels.
        world_to_camera: [4, 4] float64 rigid transform (x right, y down, z forward).
        image_name: The source image's name, for reporting and matching.
        model: The source camera model (undistorted at load), for reporting.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    world_to_camera: np.ndarray  # (4, 4) float64
    image_name: str = ""
    model: str = "PINHOLE"

    def __post_init__(self) -> None:
        self.world_to_camera = np.asarray(self.world_to_camera, dtype=np.float64).reshape(4, 4)

    @property
    def K(self) -> np.ndarray:
        """[3, 3] float64 intrinsic matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64)

    @property
    def camera_to_world(self) -> np.ndarray:
        """[4, 4] float64 inverse of ``world_to_camera``."""
        return np.linalg.inv(self.world_to_camera)

    @property
    def center(self) -> np.ndarray:
        """[3] float64 camera centre in world coordinates."""
        R = self.world_to_camera[:3, :3]
        t = self.world_to_camera[:3, 3]
        return -R.T @ t

    def scaled(self, factor: float) -> "Camera":
        """The same camera for an image resized by ``factor`` (e.g. 0.25 for downscale 4).

        Args:
            factor: Scale of the image size; intrinsics scale with it.

        Returns:
            A new ``Camera``.
        """
        w = max(1, int(round(self.width * factor)))
        h = max(1, int(round(self.height * factor)))
        sx, sy = w / self.width, h / self.height
        return replace(self, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy, width=w, height=h)

    def with_size(self, width: int, height: int) -> "Camera":
        """The same camera rendered at another resolution (intrinsics scaled per axis).

        Args:
            width, height: The new image size in pixels.

        Returns:
            A new ``Camera``.
        """
        sx, sy = width / self.width, height / self.height
        return replace(
            self,
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=self.cx * sx,
            cy=self.cy * sy,
            width=int(width),
            height=int(height),
        )

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field (``world_to_camera`` as nested lists); ``from_dict`` reads it."""
        return {
            "fx": float(self.fx),
            "fy": float(self.fy),
            "cx": float(self.cx),
            "cy": float(self.cy),
            "width": int(self.width),
            "height": int(self.height),
            "world_to_camera": self.world_to_camera.tolist(),
            "image_name": self.image_name,
            "model": self.model,
        }

    @staticmethod
    def from_dict(d: dict) -> "Camera":
        """The camera written by ``to_dict``.

        Args:
            d: The dict.

        Returns:
            A ``Camera``.
        """
        return Camera(
            fx=float(d["fx"]),
            fy=float(d["fy"]),
            cx=float(d["cx"]),
            cy=float(d["cy"]),
            width=int(d["width"]),
            height=int(d["height"]),
            world_to_camera=np.asarray(d["world_to_camera"], dtype=np.float64),
            image_name=str(d.get("image_name", "")),
            model=str(d.get("model", "PINHOLE")),
        )


def check_intrinsics(fx, fy, cx, cy, width, height, path=None, index: int | None = None, what: str = "frame") -> None:
    """Raise ``UserError`` unless a renderer can use these intrinsics.

    The image must be at least 1x1 and the focal lengths positive and finite.

    Args:
        fx, fy, cx, cy: Intrinsics in pixels.
        width, height: Image size in pixels.
        path: The file to name in the error.
        index: Index of the camera in that file, for the message.
        what: What a camera is called in that file (``frame``, ``camera``), for the message.

    Returns:
        None.
    """
    from splatdistill.errors import UserError

    where = "" if index is None else f"{what} {index}: "
    if not (int(width) >= 1 and int(height) >= 1):
        raise UserError(f"{where}image size must be at least 1x1 pixels, got {width}x{height}", path)
    for name, v in (("fl_x", fx), ("fl_y", fy)):
        if not (np.isfinite(v) and v > 0):
            raise UserError(f"{where}focal length {name} must be a positive number of pixels, got {v}", path)
    for name, v in (("cx", cx), ("cy", cy)):
        if not np.isfinite(v):
            raise UserError(f"{where}principal point {name} must be finite, got {v}", path)


@dataclass
class CameraBatch:
    """Cameras of one size stacked as tensors, the form every render backend takes.

    Args:
        viewmats: [C, 4, 4] float32 world-to-camera matrices.
        Ks: [C, 3, 3] float32 intrinsic matrices.
        width, height: The common image size in pixels.
    """

    viewmats: torch.Tensor  # (C, 4, 4) float32 world-to-camera
    Ks: torch.Tensor  # (C, 3, 3) float32
    width: int
    height: int

    def __len__(self) -> int:
        return int(self.viewmats.shape[0])


def stack_cameras(cameras: "Camera | list[Camera]", device: "torch.device | str" = "cpu") -> CameraBatch:
    """Stack cameras (all of one image size) into a :class:`CameraBatch`.

    Args:
        cameras: One camera or a list of C cameras of equal width and height.
        device: Device of the tensors.

    Returns:
        A ``CameraBatch`` with [C, 4, 4] viewmats and [C, 3, 3] Ks, float32.
    """
    if isinstance(cameras, Camera):
        cameras = [cameras]
    if not cameras:
        raise ValueError("stack_cameras needs at least one camera")
    w, h = cameras[0].width, cameras[0].height
    for c in cameras:
        if (c.width, c.height) != (w, h):
            raise ValueError("all cameras of one batch must have the same image size")
    viewmats = torch.tensor(np.stack([c.world_to_camera for c in cameras]), dtype=torch.float32)
    Ks = torch.tensor(np.stack([c.K for c in cameras]), dtype=torch.float32)
    return CameraBatch(viewmats.to(device), Ks.to(device), int(w), int(h))


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """World-to-camera matrix (OpenCV convention) of a camera at ``eye`` looking at ``target``.

    Args:
        eye: [3] camera centre.
        target: [3] point on the optical axis.
        up: [3] world up; image y (down) points away from it.

    Returns:
        [4, 4] float64 world-to-camera matrix.
    """
    eye = np.asarray(eye, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    up = np.asarray(up, dtype=np.float64)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-8:  # looking along up: pick any perpendicular
        x = np.cross(z, np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # rows: camera axes in world coordinates
    m = np.eye(4)
    m[:3, :3] = R
    m[:3, 3] = -R @ eye
    return m


@dataclass
class Normalization:
    """How a dataset's world was normalised: world = normalised point * scale + center.

    Results are mapped back to the input frame with it.

    Args:
        center: [3] translation.
        scale: Scale factor.
    """

    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    scale: float = 1.0

    def to_dict(self) -> dict:
        """A JSON-ready dict ``{"center": [3 floats], "scale": float}``."""
        return {"center": np.asarray(self.center, dtype=float).tolist(), "scale": float(self.scale)}
