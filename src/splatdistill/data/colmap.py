"""Reader and writer of COLMAP sparse models (binary and text), written for this project.

Formats (https://colmap.github.io/format.html, and for the binary layout COLMAP's
``src/colmap/scene/reconstruction_io_binary.cc``). All binary data is little endian.

``cameras.bin``::

    uint64 num_cameras
    per camera: uint32 camera_id, int32 model_id, uint64 width, uint64 height,
                float64 params[num_params(model)]

``images.bin``::

    uint64 num_reg_images
    per image: uint32 image_id, float64 qw, qx, qy, qz, float64 tx, ty, tz, uint32 camera_id,
               name (bytes up to a NUL), uint64 num_points2D,
               per point2D: float64 x, float64 y, uint64 point3D_id (2^64-1 = none, -1 in text)

``points3D.bin``::

    uint64 num_points
    per point: uint64 point3D_id, float64 x, y, z, uint8 r, g, b, float64 error,
               uint64 track_length, per track element: uint32 image_id, uint32 point2D_idx

Text files hold the same fields, whitespace separated, ``#`` starting a comment line;
``images.txt`` has two lines per image (the second, the 2D points, may be empty).

Poses are world-to-camera (``cam_from_world``): a Hamilton quaternion (w, x, y, z) and a
translation; the camera frame is x right, y down, z forward (the OpenCV convention) and the
camera centre is ``-R^T t``. Intrinsics are in pixels with the image's upper-left *corner* at
(0, 0), i.e. the centre of the upper-left pixel is (0.5, 0.5) (COLMAP's convention; see the
discussion in gsplat PR #151).

Camera models (COLMAP ``src/colmap/sensor/models.h``; id, name, parameters)::

    0 SIMPLE_PINHOLE  f, cx, cy
    1 PINHOLE         fx, fy, cx, cy
    2 SIMPLE_RADIAL   f, cx, cy, k
    3 RADIAL          f, cx, cy, k1, k2
    4 OPENCV          fx, fy, cx, cy, k1, k2, p1, p2
    5 OPENCV_FISHEYE  ... (and the other fisheye / thin-prism models: not supported here)

SIMPLE_RADIAL and RADIAL are the OPENCV model with only radial terms (COLMAP's camera model
documentation), so every supported model maps to OpenCV distortion coefficients (k1, k2, p1, p2).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splatdistill.errors import UserError
from splatdistill.fileio import atomic_path

# name -> (model_id, number of parameters); every model COLMAP defines, so that the reader can
# name an unsupported model precisely and the writer can produce one for tests.
CAMERA_MODELS: dict[str, tuple[int, int]] = {
    "SIMPLE_PINHOLE": (0, 3),
    "PINHOLE": (1, 4),
    "SIMPLE_RADIAL": (2, 4),
    "RADIAL": (3, 5),
    "OPENCV": (4, 8),
    "OPENCV_FISHEYE": (5, 8),
    "FULL_OPENCV": (6, 12),
    "FOV": (7, 5),
    "SIMPLE_RADIAL_FISHEYE": (8, 4),
    "RADIAL_FISHEYE": (9, 5),
    "THIN_PRISM_FISHEYE": (10, 12),
    "RAD_TAN_THIN_PRISM_FISHEYE": (11, 16),
}
MODEL_NAMES: dict[int, str] = {mid: name for name, (mid, _) in CAMERA_MODELS.items()}
SUPPORTED_MODELS: tuple[str, ...] = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")

INVALID_POINT3D_ID = -1  # stored as 2^64 - 1 in binary files, -1 in text files


def unsupported_model_error(name: str, path: str | Path | None) -> UserError:
    """The ``UserError`` for a camera model this reader does not support (it lists the supported ones).

    Args:
        name: The model's name.
        path: The file, to name in the error.

    Returns:
        The error, to raise.
    """
    return UserError(f"unsupported camera model '{name}' (supported: {', '.join(SUPPORTED_MODELS)})", path)


@dataclass
class ColmapCamera:
    """One camera of a COLMAP model.

    Args:
        camera_id: COLMAP's id.
        model: Camera model name (``SIMPLE_PINHOLE``, ``PINHOLE``, ``SIMPLE_RADIAL``, ``RADIAL``,
            ``OPENCV``).
        width, height: Image size in pixels.
        params: float64 parameters, as many as the model has.
    """

    camera_id: int
    model: str
    width: int
    height: int
    params: np.ndarray  # float64, length given by the model

    def __post_init__(self) -> None:
        self.params = np.asarray(self.params, dtype=np.float64).reshape(-1)

    def pinhole_and_distortion(self) -> tuple[float, float, float, float, np.ndarray]:
        """The pinhole intrinsics and the distortion of this camera.

        Returns:
            ``(fx, fy, cx, cy, dist)``: floats in pixels, and [4] float64 OpenCV coefficients
            (k1, k2, p1, p2). An unsupported model raises ``UserError``.
        """
        p = self.params
        dist = np.zeros(4)
        if self.model == "SIMPLE_PINHOLE":
            fx = fy = p[0]
            cx, cy = p[1], p[2]
        elif self.model == "PINHOLE":
            fx, fy, cx, cy = p[:4]
        elif self.model == "SIMPLE_RADIAL":
            fx = fy = p[0]
            cx, cy = p[1], p[2]
            dist[0] = p[3]
        elif self.model == "RADIAL":
            fx = fy = p[0]
            cx, cy = p[1], p[2]
            dist[:2] = p[3:5]
        elif self.model == "OPENCV":
            fx, fy, cx, cy = p[:4]
            dist[:] = p[4:8]
        else:
            raise unsupported_model_error(self.model, None)
        return float(fx), float(fy), float(cx), float(cy), dist


@dataclass
class ColmapImage:
    """One registered image of a COLMAP model.

    Args:
        image_id: COLMAP's id.
        qvec: [4] float64 Hamilton quaternion (w, x, y, z) of the world-to-camera rotation.
        tvec: [3] float64 world-to-camera translation.
        camera_id: Id of its camera.
        name: Image file name, relative to the image folder.
        xys: [P, 2] float64 keypoints.
        point3D_ids: [P] int64 3D point of each keypoint (-1: none).
    """

    image_id: int
    qvec: np.ndarray  # (4,) float64, Hamilton (w, x, y, z), world-to-camera rotation
    tvec: np.ndarray  # (3,) float64, world-to-camera translation
    camera_id: int
    name: str
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (N, 2) float64
    point3D_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (N,)

    def __post_init__(self) -> None:
        self.qvec = np.asarray(self.qvec, dtype=np.float64).reshape(4)
        self.tvec = np.asarray(self.tvec, dtype=np.float64).reshape(3)
        self.xys = np.asarray(self.xys, dtype=np.float64).reshape(-1, 2)
        self.point3D_ids = np.asarray(self.point3D_ids, dtype=np.int64).reshape(-1)

    def rotation(self) -> np.ndarray:
        """[3, 3] float64 world-to-camera rotation."""
        return qvec_to_rotmat(self.qvec)

    def world_to_camera(self) -> np.ndarray:
        """[4, 4] float64 world-to-camera matrix (OpenCV axes, as COLMAP's)."""
        m = np.eye(4)
        m[:3, :3] = self.rotation()
        m[:3, 3] = self.tvec
        return m


@dataclass
class ColmapPoints:
    """The 3D points of a COLMAP model, as arrays.

    Args:
        ids: [M] int64 point ids.
        xyz: [M, 3] float64 positions.
        rgb: [M, 3] uint8 colours.
        error: [M] float64 reprojection errors.
        track_lengths: [M] int64 observations per point.
        track_image_ids: [T] int64 image of each observation (T = sum of track lengths).
        track_point2D_idxs: [T] int64 keypoint index of each observation.
    """

    ids: np.ndarray  # (M,) int64
    xyz: np.ndarray  # (M, 3) float64
    rgb: np.ndarray  # (M, 3) uint8
    error: np.ndarray  # (M,) float64
    track_lengths: np.ndarray  # (M,) int64
    track_image_ids: np.ndarray  # (sum of track lengths,) int64
    track_point2D_idxs: np.ndarray  # (sum of track lengths,) int64

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @staticmethod
    def empty() -> "ColmapPoints":
        """No points."""
        z = np.zeros(0, dtype=np.int64)
        return ColmapPoints(z, np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0), z, z, z)

    @staticmethod
    def from_arrays(xyz, rgb, ids=None, error=None, tracks=None) -> "ColmapPoints":
        """Points from positions and colours; ids, errors and tracks get defaults when None.

        Args:
            xyz: [M, 3] positions.
            rgb: [M, 3] uint8 colours.
            ids: [M] ids; ``1..M`` when None.
            error: [M] reprojection errors; zeros when None.
            tracks: One list per point of ``(image_id, point2D_idx)`` pairs; empty when None.

        Returns:
            ``ColmapPoints``.
        """
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        m = xyz.shape[0]
        ids = np.arange(1, m + 1, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        error = np.zeros(m) if error is None else np.asarray(error, np.float64)
        tracks = [[] for _ in range(m)] if tracks is None else tracks
        flat = [pair for t in tracks for pair in t]
        flat_arr = np.asarray(flat, dtype=np.int64).reshape(-1, 2)
        return ColmapPoints(
            ids=ids,
            xyz=xyz,
            rgb=np.asarray(rgb, dtype=np.uint8).reshape(-1, 3),
            error=error,
            track_lengths=np.array([len(t) for t in tracks], dtype=np.int64),
            track_image_ids=flat_arr[:, 0].copy(),
            track_point2D_idxs=flat_arr[:, 1].copy(),
        )


@dataclass
class ColmapModel:
    """A sparse model read from one folder.

    Args:
        path: The folder.
        cameras: Camera id -> ``ColmapCamera``.
        images: Image id -> ``ColmapImage``.
        points: The 3D points; None when the model has no points3D file.
    """

    path: Path
    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: ColmapPoints | None  # None when the model has no points3D file


# ----------------------------------------------------------------------------------------------
# rotations


def qvec_to_rotmat(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a Hamilton quaternion; the quaternion is normalised first.

    Args:
        q: [4] quaternion (w, x, y, z).

    Returns:
        [3, 3] float64 rotation matrix.
    """
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n == 0:
        raise ValueError("quaternion of zero or non-finite norm")
    w, x, y, z = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """Hamilton quaternion of a rotation matrix (Shepperd's method).

    Args:
        R: [3, 3] rotation matrix.

    Returns:
        [4] float64 quaternion (w, x, y, z) with w >= 0.
    """
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    cands = [tr, R[0, 0], R[1, 1], R[2, 2]]
    i = int(np.argmax(cands))
    if i == 0:
        s = 2.0 * math.sqrt(max(tr + 1.0, 0.0))
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif i == 1:
        s = 2.0 * math.sqrt(max(1.0 + R[0, 0] - R[1, 1] - R[2, 2], 0.0))
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif i == 2:
        s = 2.0 * math.sqrt(max(1.0 + R[1, 1] - R[0, 0] - R[2, 2], 0.0))
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(max(1.0 + R[2, 2] - R[0, 0] - R[1, 1], 0.0))
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


# ----------------------------------------------------------------------------------------------
# binary reading


class _BinaryReader:
    """Bounds-checked little-endian reader; running off the end is a UserError naming the file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.data = self.path.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read file: {e.strerror or e}", self.path) from None
        self.buf = memoryview(self.data)
        self.pos = 0

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise UserError(
                f"truncated or malformed COLMAP binary file: {what} needs {n} bytes at offset "
                f"{self.pos}, the file has {len(self.buf)} bytes",
                self.path,
            )

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize(fmt)
        self._need(size, what)
        out = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return out

    def array(self, dtype: np.dtype, count: int, what: str) -> np.ndarray:
        dtype = np.dtype(dtype)
        self._need(count * dtype.itemsize, what)
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += count * dtype.itemsize
        return out

    def cstring(self, what: str) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise UserError(f"truncated or malformed COLMAP binary file: {what} has no terminating NUL", self.path)
        s = self.data[self.pos : end].decode("utf-8", errors="surrogateescape")
        self.pos = end + 1
        return s

    def count(self, what: str, min_record_bytes: int) -> int:
        (n,) = self.unpack("<Q", what)
        remaining = len(self.buf) - self.pos
        if n * min_record_bytes > remaining:
            raise UserError(
                f"truncated or malformed COLMAP binary file: {what} is {n} but only {remaining} bytes follow",
                self.path,
            )
        return n


def read_cameras_binary(path: str | Path) -> dict[int, ColmapCamera]:
    """Read ``cameras.bin``; a truncated or malformed file raises ``UserError``.

    Args:
        path: The file.

    Returns:
        Camera id -> ``ColmapCamera``.
    """
    r = _BinaryReader(Path(path))
    n = r.count("number of cameras", 24)
    cameras: dict[int, ColmapCamera] = {}
    for i in range(n):
        camera_id, model_id, width, height = r.unpack("<IiQQ", f"camera {i}")
        name = MODEL_NAMES.get(model_id)
        if name is None:
            raise UserError(f"unknown camera model id {model_id} (camera {camera_id})", r.path)
        if name not in SUPPORTED_MODELS:
            raise unsupported_model_error(name, r.path)
        params = r.array("<f8", CAMERA_MODELS[name][1], f"parameters of camera {camera_id}")
        cameras[camera_id] = ColmapCamera(camera_id, name, int(width), int(height), params.copy())
    return cameras


_POINT2D_DTYPE = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<u8")])


def read_images_binary(path: str | Path) -> dict[int, ColmapImage]:
    """Read ``images.bin``; a truncated or malformed file raises ``UserError``.

    Args:
        path: The file.

    Returns:
        Image id -> ``ColmapImage``.
    """
    r = _BinaryReader(Path(path))
    n = r.count("number of images", 4 + 56 + 4 + 1 + 8)
    images: dict[int, ColmapImage] = {}
    for i in range(n):
        (image_id,) = r.unpack("<I", f"image {i}")
        pose = r.unpack("<7d", f"pose of image {image_id}")
        (camera_id,) = r.unpack("<I", f"camera id of image {image_id}")
        name = r.cstring(f"name of image {image_id}")
        (num_points,) = r.unpack("<Q", f"number of 2D points of image {image_id}")
        pts = r.array(_POINT2D_DTYPE, num_points, f"2D points of image {image_id}")
        images[image_id] = ColmapImage(
            image_id=image_id,
            qvec=pose[:4],
            tvec=pose[4:],
            camera_id=camera_id,
            name=name,
            xys=np.stack([pts["x"], pts["y"]], axis=1),
            point3D_ids=pts["id"].astype(np.int64),  # 2^64-1 wraps to -1
        )
    return images


def read_points3D_binary(path: str | Path) -> ColmapPoints:
    """Read ``points3D.bin``; a truncated or malformed file raises ``UserError``.

    Args:
        path: The file.

    Returns:
        ``ColmapPoints``.
    """
    r = _BinaryReader(Path(path))
    n = r.count("number of points", 51)
    ids = np.empty(n, dtype=np.int64)
    xyz = np.empty((n, 3))
    rgb = np.empty((n, 3), dtype=np.uint8)
    err = np.empty(n)
    lengths = np.empty(n, dtype=np.int64)
    tracks: list[bytes] = []
    head = struct.Struct("<Q3d3BdQ")
    data = r.data
    for i in range(n):
        r._need(head.size, f"point {i}")
        pid, x, y, z, cr, cg, cb, e, tl = head.unpack_from(data, r.pos)
        r.pos += head.size
        ids[i] = pid
        xyz[i] = (x, y, z)
        rgb[i] = (cr, cg, cb)
        err[i] = e
        lengths[i] = tl
        r._need(8 * tl, f"track of point {pid}")
        tracks.append(data[r.pos : r.pos + 8 * tl])
        r.pos += 8 * tl
    flat = np.frombuffer(b"".join(tracks), dtype="<u4").astype(np.int64)
    return ColmapPoints(ids, xyz, rgb, err, lengths, flat[0::2].copy(), flat[1::2].copy())


# ----------------------------------------------------------------------------------------------
# text reading


def _text_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) for every line; comments are dropped, empty lines are kept."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        raise UserError(f"cannot read file: {e.strerror or e}", path) from None
    return [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines()) if not ln.lstrip().startswith("#")]


def _malformed(path: Path, lineno: int, why: str) -> UserError:
    return UserError(f"malformed COLMAP text file at line {lineno}: {why}", path)


def read_cameras_text(path: str | Path) -> dict[int, ColmapCamera]:
    """Read ``cameras.txt``; a malformed line raises ``UserError`` naming it.

    Args:
        path: The file.

    Returns:
        Camera id -> ``ColmapCamera``.
    """
    path = Path(path)
    cameras: dict[int, ColmapCamera] = {}
    for lineno, line in _text_lines(path):
        if not line:
            continue
        tok = line.split()
        if len(tok) < 4:
            raise _malformed(path, lineno, "expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]")
        model = tok[1]
        if model not in SUPPORTED_MODELS:
            raise unsupported_model_error(model, path)
        nparams = CAMERA_MODELS[model][1]
        if len(tok) != 4 + nparams:
            raise _malformed(path, lineno, f"{model} takes {nparams} parameters, got {len(tok) - 4}")
        try:
            cam = ColmapCamera(int(tok[0]), model, int(tok[2]), int(tok[3]), [float(t) for t in tok[4:]])
        except ValueError as e:
            raise _malformed(path, lineno, str(e)) from None
        cameras[cam.camera_id] = cam
    return cameras


def read_images_text(path: str | Path) -> dict[int, ColmapImage]:
    """Read ``images.txt`` (two lines per image); a malformed line raises ``UserError`` naming it.

    Args:
        path: The file.

    Returns:
        Image id -> ``ColmapImage``.
    """
    path = Path(path)
    lines = _text_lines(path)
    images: dict[int, ColmapImage] = {}
    i = 0
    while i < len(lines):
        lineno, line = lines[i]
        i += 1
        if not line:  # blank line where an image header is expected
            continue
        tok = line.split(maxsplit=9)
        if len(tok) != 10:
            raise _malformed(path, lineno, "expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        points_line = lines[i][1] if i < len(lines) else ""
        i += 1
        ptok = points_line.split()
        if len(ptok) % 3:
            raise _malformed(path, lines[i - 1][0], "expected POINTS2D[] as (X, Y, POINT3D_ID) triples")
        try:
            xys = np.array(ptok[0::3] + ptok[1::3], dtype=np.float64).reshape(2, -1).T
            img = ColmapImage(
                image_id=int(tok[0]),
                qvec=[float(t) for t in tok[1:5]],
                tvec=[float(t) for t in tok[5:8]],
                camera_id=int(tok[8]),
                name=tok[9],
                xys=xys,
                point3D_ids=np.array([int(t) for t in ptok[2::3]], dtype=np.int64),
            )
        except ValueError as e:
            raise _malformed(path, lineno, str(e)) from None
        images[img.image_id] = img
    return images


def read_points3D_text(path: str | Path) -> ColmapPoints:
    """Read ``points3D.txt``; a malformed line raises ``UserError`` naming it.

    Args:
        path: The file.

    Returns:
        ``ColmapPoints``.
    """
    path = Path(path)
    ids, xyz, rgb, err, lengths, tracks = [], [], [], [], [], []
    for lineno, line in _text_lines(path):
        if not line:
            continue
        tok = line.split()
        if len(tok) < 8 or (len(tok) - 8) % 2:
            raise _malformed(path, lineno, "expected POINT3D_ID X Y Z R G B ERROR TRACK[]")
        try:
            ids.append(int(tok[0]))
            xyz.append([float(t) for t in tok[1:4]])
            rgb.append([int(t) for t in tok[4:7]])
            err.append(float(tok[7]))
            tr = [int(t) for t in tok[8:]]
        except ValueError as e:
            raise _malformed(path, lineno, str(e)) from None
        lengths.append(len(tr) // 2)
        tracks.extend(tr)
    flat = np.asarray(tracks, dtype=np.int64)
    return ColmapPoints(
        ids=np.asarray(ids, dtype=np.int64),
        xyz=np.asarray(xyz, dtype=np.float64).reshape(-1, 3),
        rgb=np.asarray(rgb, dtype=np.uint8).reshape(-1, 3),
        error=np.asarray(err, dtype=np.float64),
        track_lengths=np.asarray(lengths, dtype=np.int64),
        track_image_ids=flat[0::2].copy(),
        track_point2D_idxs=flat[1::2].copy(),
    )


# ----------------------------------------------------------------------------------------------
# model directories


def find_model_dir(root: str | Path) -> Path | None:
    """The sparse model folder of a COLMAP dataset: ``sparse/0/`` or else ``sparse/`` itself.

    Args:
        root: The dataset folder.

    Returns:
        The folder holding ``cameras.{bin,txt}``, or None when there is none.
    """
    root = Path(root)
    for d in (root / "sparse" / "0", root / "sparse"):
        if (d / "cameras.bin").is_file() or (d / "cameras.txt").is_file():
            return d
    return None


def _pick(directory: Path, stem: str) -> Path | None:
    # COLMAP prefers the binary file when both exist (format.html).
    for ext in (".bin", ".txt"):
        p = directory / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def read_model(directory: str | Path) -> ColmapModel:
    """Read ``cameras``, ``images`` and (if present) ``points3D`` from one sparse model folder.

    Binary files are preferred over text files when both are there.

    Args:
        directory: The model folder.

    Returns:
        ``ColmapModel``.
    """
    directory = Path(directory)
    cam_path = _pick(directory, "cameras")
    img_path = _pick(directory, "images")
    if cam_path is None:
        raise UserError("COLMAP model has no cameras.bin or cameras.txt", directory)
    if img_path is None:
        raise UserError("COLMAP model has no images.bin or images.txt", directory)
    cameras = read_cameras_binary(cam_path) if cam_path.suffix == ".bin" else read_cameras_text(cam_path)
    images = read_images_binary(img_path) if img_path.suffix == ".bin" else read_images_text(img_path)
    for im in images.values():
        if im.camera_id not in cameras:
            raise UserError(f"image '{im.name}' refers to camera {im.camera_id}, which {cam_path.name} lacks", img_path)
    pts_path = _pick(directory, "points3D")
    points = None
    if pts_path is not None:
        points = read_points3D_binary(pts_path) if pts_path.suffix == ".bin" else read_points3D_text(pts_path)
    return ColmapModel(directory, cameras, images, points)


# ----------------------------------------------------------------------------------------------
# writing (binary and text); atomic, like every output of the project


def _check_model(cam: ColmapCamera) -> int:
    if cam.model not in CAMERA_MODELS:
        raise ValueError(f"unknown COLMAP camera model {cam.model!r}")
    mid, nparams = CAMERA_MODELS[cam.model]
    if cam.params.shape[0] != nparams:
        raise ValueError(f"{cam.model} takes {nparams} parameters, got {cam.params.shape[0]}")
    return mid


def write_cameras_binary(cameras: dict[int, ColmapCamera] | list[ColmapCamera], path: str | Path) -> None:
    """Write ``cameras.bin``.

    Args:
        cameras: The cameras (a dict by id or a list).
        path: The output file.

    Returns:
        None.
    """
    cams = list(cameras.values()) if isinstance(cameras, dict) else list(cameras)
    out = [struct.pack("<Q", len(cams))]
    for c in cams:
        out.append(struct.pack("<IiQQ", c.camera_id, _check_model(c), c.width, c.height))
        out.append(c.params.astype("<f8").tobytes())
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(out))


def write_images_binary(images: dict[int, ColmapImage] | list[ColmapImage], path: str | Path) -> None:
    """Write ``images.bin``.

    Args:
        images: The images (a dict by id or a list).
        path: The output file.

    Returns:
        None.
    """
    ims = list(images.values()) if isinstance(images, dict) else list(images)
    out = [struct.pack("<Q", len(ims))]
    for im in ims:
        out.append(struct.pack("<I7dI", im.image_id, *im.qvec, *im.tvec, im.camera_id))
        out.append(im.name.encode("utf-8", errors="surrogateescape") + b"\0")
        pts = np.empty(im.xys.shape[0], dtype=_POINT2D_DTYPE)
        pts["x"], pts["y"] = im.xys[:, 0], im.xys[:, 1]
        pts["id"] = im.point3D_ids.astype(np.int64).view(np.uint64)
        out.append(struct.pack("<Q", pts.shape[0]) + pts.tobytes())
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(out))


def write_points3D_binary(points: ColmapPoints, path: str | Path) -> None:
    """Write ``points3D.bin``.

    Args:
        points: The points.
        path: The output file.

    Returns:
        None.
    """
    out = [struct.pack("<Q", len(points))]
    head = struct.Struct("<Q3d3BdQ")
    offsets = np.concatenate([[0], np.cumsum(points.track_lengths)])
    for i in range(len(points)):
        a, b = offsets[i], offsets[i + 1]
        out.append(
            head.pack(
                int(points.ids[i]), *points.xyz[i], *(int(c) for c in points.rgb[i]), float(points.error[i]), int(b - a)
            )
        )
        tr = np.stack([points.track_image_ids[a:b], points.track_point2D_idxs[a:b]], axis=1)
        out.append(tr.astype("<u4").tobytes())
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(out))


def _f(x: float) -> str:
    return repr(float(x))  # shortest string that reads back to the same double


def write_cameras_text(cameras: dict[int, ColmapCamera] | list[ColmapCamera], path: str | Path) -> None:
    """Write ``cameras.txt``.

    Args:
        cameras: The cameras (a dict by id or a list).
        path: The output file.

    Returns:
        None.
    """
    cams = list(cameras.values()) if isinstance(cameras, dict) else list(cameras)
    lines = [
        "# Camera list with one line of data per camera:",
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
        f"# Number of cameras: {len(cams)}",
    ]
    for c in cams:
        _check_model(c)
        lines.append(" ".join([str(c.camera_id), c.model, str(c.width), str(c.height)] + [_f(p) for p in c.params]))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")


def write_images_text(images: dict[int, ColmapImage] | list[ColmapImage], path: str | Path) -> None:
    """Write ``images.txt``.

    Args:
        images: The images (a dict by id or a list).
        path: The output file.

    Returns:
        None.
    """
    ims = list(images.values()) if isinstance(images, dict) else list(images)
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {len(ims)}",
    ]
    for im in ims:
        lines.append(
            " ".join([str(im.image_id)] + [_f(v) for v in (*im.qvec, *im.tvec)] + [str(im.camera_id), im.name])
        )
        lines.append(" ".join(f"{_f(x)} {_f(y)} {int(p)}" for (x, y), p in zip(im.xys, im.point3D_ids)))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")


def write_points3D_text(points: ColmapPoints, path: str | Path) -> None:
    """Write ``points3D.txt``.

    Args:
        points: The points.
        path: The output file.

    Returns:
        None.
    """
    lines = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
        f"# Number of points: {len(points)}",
    ]
    offsets = np.concatenate([[0], np.cumsum(points.track_lengths)])
    for i in range(len(points)):
        a, b = offsets[i], offsets[i + 1]
        track = " ".join(
            f"{int(im)} {int(p2)}" for im, p2 in zip(points.track_image_ids[a:b], points.track_point2D_idxs[a:b])
        )
        fields = [str(int(points.ids[i]))] + [_f(v) for v in points.xyz[i]] + [str(int(c)) for c in points.rgb[i]]
        fields.append(_f(points.error[i]))
        lines.append(" ".join(fields) + (" " + track if track else ""))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_model(
    directory: str | Path,
    cameras: dict[int, ColmapCamera] | list[ColmapCamera],
    images: dict[int, ColmapImage] | list[ColmapImage],
    points: ColmapPoints | None = None,
    binary: bool = True,
) -> None:
    """Write a sparse model (``cameras``, ``images``, ``points3D``) into ``directory``.

    Args:
        directory: The output folder (created).
        cameras: The cameras (a dict by id or a list).
        images: The images (a dict by id or a list).
        points: The points; an empty points file when None.
        binary: ``.bin`` files (True) or ``.txt`` files.

    Returns:
        None.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    points = ColmapPoints.empty() if points is None else points
    if binary:
        write_cameras_binary(cameras, d / "cameras.bin")
        write_images_binary(images, d / "images.bin")
        write_points3D_binary(points, d / "points3D.bin")
    else:
        write_cameras_text(cameras, d / "cameras.txt")
        write_images_text(images, d / "images.txt")
        write_points3D_text(points, d / "points3D.txt")
