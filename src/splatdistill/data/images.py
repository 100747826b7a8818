"""Turning a source image file into a training image: decode, composite, undistort, resize, cache.

Pipeline (``process_image``), all in float32 RGB in [0, 1]:

1. decode with Pillow (pixel data as stored; EXIF orientation is not applied — a rotated image
   shows up as a size that does not match its camera);
2. composite RGBA on the background: ``rgb * a + background * (1 - a)`` (the NeRF-synthetic /
   3DGS convention for transparent renders);
3. undistort (distorted COLMAP / nerfstudio OPENCV cameras), see below;
4. resize with ``cv2.INTER_AREA`` (area averaging, the right filter for downscaling);
5. quantise to uint8 (the sources are 8-bit; this also keeps memory and cache size down).

Undistortion choice: ``cv2.getOptimalNewCameraMatrix(K, dist, size, alpha=0, newImgSize=size)``
followed by ``cv2.initUndistortRectifyMap`` + ``cv2.remap`` (bilinear, border replicated). With
``alpha = 0`` the new pinhole camera sees only valid source pixels, so the undistorted image has
no black borders to be learnt as scene content; the image keeps its size and the new intrinsics
(fx, fy may differ slightly; the principal point may move) become the pinhole ``Camera``.
OpenCV puts the centre of the upper-left pixel at (0, 0), COLMAP and nerfstudio-style
intrinsics at (0.5, 0.5) (see ``colmap.py``), so principal points are shifted by 0.5 pixel on
the way into OpenCV and back.

On-disk cache: processed images (only those that were undistorted or resized — anything else is
as fast to decode from the source) are stored as lossless PNG under
``<cache root>/images-v1/<k[:2]>/<k>.png`` where ``k`` is the SHA-256 of the source file's
resolved path, mtime (ns) and size and of every processing parameter (``ImageSpec``). The cache
root is ``$SPLATDISTILL_CACHE`` if set, else ``~/.cache/splatdistill``. Nothing is ever written
next to the dataset. Writes are atomic; a cache that cannot be written is skipped with a warning.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from splatdistill.cameras.camera import Camera
from splatdistill.errors import UserError
from splatdistill.fileio import atomic_path

CACHE_ENV = "SPLATDISTILL_CACHE"
CACHE_VERSION = 1
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # compare lower-cased


def default_cache_dir() -> Path:
    """The root of the processed-image cache: ``$SPLATDISTILL_CACHE``, else ``~/.cache/splatdistill``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "splatdistill"


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to produce one processed image from its source file.

    Args:
        path: The source image file.
        source_size: ``(width, height)`` of the source image.
        size: ``(width, height)`` of the output.
        intrinsics: ``(fx, fy, cx, cy)`` of the *source* image (COLMAP pixel convention).
        dist: OpenCV coefficients k1, k2, p1, p2[, k3] of the source image; empty or all zero means
            no undistortion.
        background: RGB in [0, 1] that transparency is composited on.
    """

    path: Path
    source_size: tuple[int, int]
    size: tuple[int, int]
    intrinsics: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    dist: tuple[float, ...] = ()
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def undistorts(self) -> bool:
        """Whether the image is undistorted (some coefficient is non-zero)."""
        return any(d != 0.0 for d in self.dist)

    @property
    def resizes(self) -> bool:
        """Whether the output size differs from the source's."""
        return tuple(self.size) != tuple(self.source_size)


# ----------------------------------------------------------------------------------------------
# decoding


def read_image_size(path: str | Path, listed_in: str | Path | None = None) -> tuple[int, int]:
    """The size of an image from the file header only.

    Args:
        path: The image file.
        listed_in: The file that lists it, for the error message.

    Returns:
        ``(width, height)``. A missing or unreadable image raises ``UserError`` naming it.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except FileNotFoundError:
        where = f" (listed in {listed_in})" if listed_in else ""
        raise UserError(f"image not found{where}", path) from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"cannot read image: {e}", path) from None


def decode_image(path: str | Path) -> np.ndarray:
    """Decode an image file.

    Args:
        path: The image file (PNG, JPEG, ...; 8 or 16 bits).

    Returns:
        [H, W, 3 or 4] float32 in [0, 1]; 4 channels when the file has transparency.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32) / 65535.0
                arr = np.repeat(arr[..., None], 3, axis=2)
            elif mode == "F":
                arr = np.repeat(np.asarray(im, dtype=np.float32)[..., None], 3, axis=2)
            else:
                has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
                arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise UserError("image not found", path) from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"cannot decode image: {e}", path) from None
    return np.clip(arr, 0.0, 1.0)


def composite(image: np.ndarray, background: tuple[float, float, float]) -> np.ndarray:
    """RGB of an RGB(A) float image; RGBA is composited as rgb * a + bg * (1 - a).

    Args:
        image: [H, W, 3 or 4] float32 in [0, 1].
        background: RGB in [0, 1].

    Returns:
        [H, W, 3] float32.
    """
    if image.shape[2] == 3:
        return image
    rgb, a = image[..., :3], image[..., 3:4]
    return rgb * a + np.asarray(background, dtype=np.float32).reshape(1, 1, 3) * (1.0 - a)


# ----------------------------------------------------------------------------------------------
# undistortion and resizing


def _opencv_K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    # COLMAP-convention principal point -> OpenCV convention (pixel centres at integers).
    return np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]])


def undistorted_intrinsics(
    intrinsics: tuple[float, float, float, float], dist, size: tuple[int, int]
) -> tuple[float, float, float, float]:
    """Pinhole intrinsics of the undistorted image of the same size (OpenCV alpha = 0: no black border).

    Args:
        intrinsics: ``(fx, fy, cx, cy)`` of the distorted image.
        dist: OpenCV distortion coefficients.
        size: ``(width, height)``.

    Returns:
        ``(fx, fy, cx, cy)`` of the undistorted image.
    """
    dist = np.asarray(dist, dtype=np.float64)
    if not np.any(dist):
        return tuple(float(v) for v in intrinsics)  # type: ignore[return-value]
    w, h = int(size[0]), int(size[1])
    new_K, _ = cv2.getOptimalNewCameraMatrix(_opencv_K(*intrinsics), dist, (w, h), 0.0, (w, h))
    return float(new_K[0, 0]), float(new_K[1, 1]), float(new_K[0, 2]) + 0.5, float(new_K[1, 2]) + 0.5


def undistort_image(image: np.ndarray, intrinsics, dist, new_intrinsics) -> np.ndarray:
    """Undistort an image with OpenCV (``initUndistortRectifyMap`` + bilinear ``remap``).

    Args:
        image: [H, W, C] float32.
        intrinsics: ``(fx, fy, cx, cy)`` of the distorted image.
        dist: OpenCV distortion coefficients.
        new_intrinsics: ``(fx, fy, cx, cy)`` of the output, from ``undistorted_intrinsics``.

    Returns:
        [H, W, C] float32.
    """
    h, w = image.shape[:2]
    K = _opencv_K(*intrinsics)
    new_K = _opencv_K(*new_intrinsics)
    map1, map2 = cv2.initUndistortRectifyMap(K, np.asarray(dist, dtype=np.float64), None, new_K, (w, h), cv2.CV_32FC1)
    return cv2.remap(image, map1, map2, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def resize_area(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize with area averaging (``cv2.INTER_AREA``); the image itself when the size already matches.

    Args:
        image: [H, W, C] float32.
        size: ``(width, height)`` of the output.

    Returns:
        [h, w, C] float32.
    """
    w, h = int(size[0]), int(size[1])
    if (image.shape[1], image.shape[0]) == (w, h):
        return image
    out = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return out if out.ndim == 3 else out[..., None]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Round a float image in [0, 1] to 8 bits.

    Args:
        image: Any shape, float.

    Returns:
        The same shape, uint8.
    """
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def process_image(spec: ImageSpec) -> np.ndarray:
    """The processed image of ``spec``: decoded, composited, undistorted, resized.

    Args:
        spec: The image spec.

    Returns:
        [H, W, 3] uint8 at ``spec.size``.
    """
    img = decode_image(spec.path)
    got = (img.shape[1], img.shape[0])
    if got != tuple(spec.source_size):
        raise UserError(
            f"image is {got[0]}x{got[1]} but was {spec.source_size[0]}x{spec.source_size[1]} "
            "when the dataset was loaded (changed on disk?)",
            spec.path,
        )
    img = composite(img, spec.background).astype(np.float32, copy=False)
    if spec.undistorts:
        new = undistorted_intrinsics(spec.intrinsics, spec.dist, spec.source_size)
        img = undistort_image(img, spec.intrinsics, spec.dist, new)
    img = resize_area(img, spec.size)
    return to_uint8(np.ascontiguousarray(img))


# ----------------------------------------------------------------------------------------------
# views: the pinhole camera and the image spec of one source image


def prepare_view(
    camera: Camera,
    dist,
    path: str | Path,
    source_size: tuple[int, int],
    factor: float,
    background: tuple[float, float, float],
) -> tuple[Camera, ImageSpec]:
    """Pinhole camera and image spec for a source image.

    The result is undistorted (if needed) and then scaled by ``factor``.

    Args:
        camera: The source intrinsics at ``source_size`` (its ``model`` the source model) and pose.
        dist: Its OpenCV distortion coefficients.
        path: The source image file.
        source_size: ``(width, height)`` of the source image.
        factor: Image scale, e.g. 0.25 for downscale 4, 1 for an ``images_4/`` file.
        background: RGB in [0, 1] that transparency is composited on.

    Returns:
        ``(camera, spec)``: the pinhole ``Camera`` of the processed image and its ``ImageSpec``.
    """
    sw, sh = int(source_size[0]), int(source_size[1])
    if (camera.width, camera.height) != (sw, sh):
        # e.g. an images_N/ file, or images resized after calibration: scale the intrinsics
        # (distortion coefficients act on normalised coordinates and do not change), but only
        # if the aspect ratio agrees up to rounding.
        if abs(sw / camera.width - sh / camera.height) > 1.0 / min(sw, sh) + 0.005:
            raise UserError(
                f"image is {sw}x{sh} but its camera is {camera.width}x{camera.height} (different aspect ratio)",
                path,
            )
        camera = camera.with_size(sw, sh)
    dist_t = tuple(float(d) for d in np.asarray(dist, dtype=np.float64).reshape(-1)) if dist is not None else ()
    if not any(dist_t):
        dist_t = ()
    intr = (camera.fx, camera.fy, camera.cx, camera.cy)
    new_intr = undistorted_intrinsics(intr, dist_t, (sw, sh)) if dist_t else intr
    pinhole = replace(camera, fx=new_intr[0], fy=new_intr[1], cx=new_intr[2], cy=new_intr[3])
    if factor != 1.0:
        pinhole = pinhole.scaled(factor)
    spec = ImageSpec(
        path=Path(path),
        source_size=(sw, sh),
        size=(pinhole.width, pinhole.height),
        intrinsics=tuple(float(v) for v in intr) if dist_t else (0.0, 0.0, 0.0, 0.0),
        dist=dist_t,
        background=tuple(float(b) for b in background),
    )
    return pinhole, spec


# ----------------------------------------------------------------------------------------------
# on-disk cache


class ImageCache:
    """Processed images on disk, keyed by source file identity and processing parameters.

    Args:
        root: The cache folder; ``default_cache_dir()`` when None.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self._warned = False

    def key(self, spec: ImageSpec) -> str:
        """The cache key of ``spec``: a SHA-256 over the source's path, mtime and size and the spec.

        Args:
            spec: The image spec.

        Returns:
            The hex digest.
        """
        p = Path(spec.path).resolve()
        st = p.stat()
        params = asdict(spec)
        params["path"] = str(p)
        payload = {"version": CACHE_VERSION, "mtime_ns": st.st_mtime_ns, "bytes": st.st_size, "spec": params}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def file(self, spec: ImageSpec) -> Path:
        """The PNG file that holds (or will hold) the processed image of ``spec``.

        Args:
            spec: The image spec.

        Returns:
            The path under ``root``.
        """
        k = self.key(spec)
        return self.root / f"images-v{CACHE_VERSION}" / k[:2] / f"{k}.png"

    def load(self, spec: ImageSpec) -> np.ndarray:
        """The processed image of ``spec``, from the cache when possible.

        Args:
            spec: The image spec.

        Returns:
            [H, W, 3] uint8.
        """
        if not (spec.undistorts or spec.resizes):
            return process_image(spec)
        try:
            f = self.file(spec)
        except FileNotFoundError:
            raise UserError("image not found", spec.path) from None
        if f.is_file():
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
                if (arr.shape[1], arr.shape[0]) == tuple(spec.size):
                    return arr
            except (OSError, UnidentifiedImageError, ValueError):
                pass  # a damaged entry: rebuild it below
        arr = process_image(spec)
        self._store(f, arr)
        return arr

    def _store(self, f: Path, arr: np.ndarray) -> None:
        try:
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
            with atomic_path(f) as tmp:
                tmp.write_bytes(buf.getvalue())
        except OSError as e:
            if not self._warned:
                warnings.warn(f"image cache {self.root} not writable ({e}); continuing without it", stacklevel=3)
                self._warned = True
