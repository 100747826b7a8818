"""Datasets: one entry point (``load_dataset``) for COLMAP, Blender and nerfstudio folders.

Conventions:

* Splits. Blender: the ``transforms_{train,val,test}.json`` files. COLMAP and nerfstudio: the
  images sorted by name, every ``test_every``-th (indices 0, 8, 16, ... for 8) goes to ``test``
  (the Mip-NeRF 360 ``llffhold`` convention that 3DGS follows), or exactly ``test_names``.
* Normalisation. COLMAP / nerfstudio: ``center`` = mean of all camera centres, ``scale`` = their
  largest distance from it; poses and points are mapped to ``(world - center) / scale`` and the
  ``Normalization`` is kept to map results back. Blender: identity (the benchmark convention).
* ``extent``: 1.1 x the largest distance of the train camera centres from their mean (3DGS's
  ``getNerfppNorm`` radius), in the normalised frame.
* Images are decoded lazily (``Dataset.image``), processed as described in ``images.py``, cached
  on disk and memoised in memory as uint8 (a quarter of the float32 memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from splatdistill.cameras.camera import Camera, Normalization
from splatdistill.cameras.views import camera_extent
from splatdistill.data import colmap as colmap_io
from splatdistill.data.blender import load_blender
from splatdistill.data.images import ImageCache, ImageSpec, default_cache_dir, prepare_view, read_image_size
from splatdistill.data.nerfstudio import load_nerfstudio
from splatdistill.errors import UserError, warn

FORMATS = ("blender", "colmap", "nerfstudio")


@dataclass
class View:
    """One view of a dataset: its camera and where its image comes from.

    Args:
        camera: The pinhole camera, already scaled to the loaded resolution.
        image_path: The source image file.
        spec: How to process that image (decode, composite, undistort, resize); None for a view built
            by hand (its image is loaded at the camera's size).
    """

    camera: Camera  # already scaled to the loaded resolution, pinhole
    image_path: Path  # the source image
    spec: ImageSpec | None = field(default=None, repr=False, compare=False)  # how to process it


@dataclass
class Dataset:
    """A dataset: views per split, the SfM points, and how its world was normalised.

    Images are decoded only when asked for, and memoised and cached on disk.

    Args:
        format: ``"blender"``, ``"colmap"`` or ``"nerfstudio"``.
        root: The dataset folder.
        splits: Split name -> views: ``train``, ``test``, and ``val`` when present.
        points: [M, 3] float32 SfM points in the normalised frame, or None (Blender).
        point_colors: [M, 3] uint8 colours of the points.
        normalization: How the world was normalised (normalised = (world - center) / scale).
        background: RGB in [0, 1] the images are composited on.
        camera_models: The distinct source camera models.
        cache_dir: Root of the processed-image cache (None: the default).
    """

    format: str  # "blender" | "colmap" | "nerfstudio"
    root: Path
    splits: dict[str, list[View]]  # "train", "test", and "val" when present
    points: np.ndarray | None  # (M, 3) float32, normalised frame (None for blender)
    point_colors: np.ndarray | None  # (M, 3) uint8
    normalization: Normalization  # normalised = (world - center) / scale
    background: tuple[float, float, float]
    camera_models: list[str]  # distinct source camera models
    cache_dir: Path | None = None  # on-disk image cache root (None: the default)
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _cache: ImageCache | None = field(default=None, init=False, repr=False, compare=False)

    def split(self, name: str) -> list[View]:
        """The views of a split; an unknown name raises ``UserError`` listing the splits.

        Args:
            name: ``train``, ``test`` or ``val``.

        Returns:
            The list of ``View``.
        """
        if name not in self.splits:
            raise UserError(f"unknown split '{name}' (this dataset has: {', '.join(self.splits)})", self.root)
        return self.splits[name]

    def _spec(self, view: View) -> ImageSpec:
        if view.spec is not None:
            return view.spec
        # A view built by hand: load its image at the camera's size, no undistortion.
        w, h = read_image_size(view.image_path)
        c = view.camera
        return ImageSpec(
            path=Path(view.image_path), source_size=(w, h), size=(c.width, c.height), background=tuple(self.background)
        )

    def image_uint8(self, view: View, background: tuple[float, float, float] | None = None) -> np.ndarray:
        """A view's image, processed and memoised.

        Args:
            view: A view of this dataset.
            background: RGB in [0, 1] to composite on; the dataset's when None.

        Returns:
            [H, W, 3] uint8.
        """
        spec = self._spec(view)
        if background is not None:
            from dataclasses import replace as _replace

            spec = _replace(spec, background=tuple(float(b) for b in background))
        arr = self._memo.get(spec)
        if arr is None:
            if self._cache is None:
                self._cache = ImageCache(self.cache_dir)
            arr = self._cache.load(spec)
            arr.setflags(write=False)
            self._memo[spec] = arr
        return arr

    def image(self, view: View) -> torch.Tensor:
        """A view's image: composited, undistorted, resized.

        Args:
            view: A view of this dataset.

        Returns:
            [H, W, 3] float32 in [0, 1].
        """
        return self.image_on(view, None)

    def image_on(self, view: View, background: tuple[float, float, float] | None) -> torch.Tensor:
        """The view's image composited on another background (for random-background training).

        Args:
            view: A view of this dataset.
            background: RGB in [0, 1]; the dataset's when None.

        Returns:
            [H, W, 3] float32 in [0, 1].
        """
        return torch.from_numpy(self.image_uint8(view, background).astype(np.float32) / np.float32(255.0))

    def images(self, name: str) -> torch.Tensor:
        """The images of a whole split (all its views must share one size).

        Args:
            name: The split.

        Returns:
            [N, H, W, 3] float32 in [0, 1].
        """
        views = self.split(name)
        if not views:
            return torch.zeros((0, 0, 0, 3), dtype=torch.float32)
        sizes = {(v.camera.width, v.camera.height) for v in views}
        if len(sizes) > 1:
            raise UserError(f"split '{name}' mixes image sizes {sorted(sizes)}; load its images one by one", self.root)
        return torch.stack([self.image(v) for v in views])

    @property
    def extent(self) -> float:
        """The scene extent of the train cameras (``camera_extent``), in normalised units."""
        return camera_extent([v.camera for v in self.split("train")])

    def cameras(self, name: str) -> list[Camera]:
        """The cameras of a split.

        Args:
            name: The split.

        Returns:
            A list of ``Camera``.
        """
        return [v.camera for v in self.split(name)]


# ----------------------------------------------------------------------------------------------
# detection


def detect_format(path: str | Path) -> str:
    """The format of a dataset folder, from its contents.

    Args:
        path: The dataset folder.

    Returns:
        ``"colmap"``, ``"blender"`` or ``"nerfstudio"``. A missing path, a file, or a folder of no
        known format raises ``UserError``.
    """
    p = Path(path)
    if not p.exists():
        raise UserError("no such dataset folder", p)
    if not p.is_dir():
        raise UserError("a dataset is a folder, not a file", p)
    if colmap_io.find_model_dir(p) is not None:
        return "colmap"
    if (p / "transforms_train.json").is_file():
        return "blender"
    if (p / "transforms.json").is_file():
        return "nerfstudio"
    raise UserError(
        "not a dataset folder: looked for sparse/0/cameras.{bin,txt} or sparse/cameras.{bin,txt} "
        "(COLMAP), transforms_train.json (Blender / NeRF-synthetic) and transforms.json "
        "(nerfstudio / instant-ngp)",
        p,
    )


# ----------------------------------------------------------------------------------------------
# helpers


def _normalization(cameras: list[Camera]) -> Normalization:
    centers = np.stack([c.center for c in cameras])
    center = centers.mean(axis=0)
    scale = float(np.linalg.norm(centers - center, axis=1).max())
    if not np.isfinite(scale) or scale <= 1e-12:
        scale = 1.0  # a single camera (or all at one place): translate only
    return Normalization(center=center, scale=scale)


def _normalize_camera(cam: Camera, norm: Normalization) -> Camera:
    # x_cam = R x_world + t with x_world = s x_n + c  =>  x_cam / s = R x_n + (R c + t) / s; a
    # uniform scale of the camera frame leaves the projection unchanged.
    m = cam.world_to_camera.copy()
    R = m[:3, :3]
    m[:3, 3] = (R @ np.asarray(norm.center) + m[:3, 3]) / norm.scale
    return replace(cam, world_to_camera=m)


def _split_indices(names: list[str], test_every: int, test_names, root: Path) -> tuple[list[int], list[int]]:
    n = len(names)
    if test_names is not None:
        wanted = [str(t) for t in test_names]
        lookup: dict[str, int] = {}
        for i, nm in enumerate(names):
            for alias in (nm, Path(nm).name, Path(nm).stem):
                lookup.setdefault(alias, i)
        missing = [t for t in wanted if t not in lookup]
        if missing:
            raise UserError(f"test image(s) not in the dataset: {', '.join(missing[:10])}", root)
        test = sorted({lookup[t] for t in wanted})
    elif test_every and test_every > 0:
        test = list(range(0, n, int(test_every)))
    else:
        test = []
    tset = set(test)
    return [i for i in range(n) if i not in tset], test


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


def _image_files(directory: Path) -> list[str]:
    """The image files under ``directory`` (relative POSIX paths, hidden ones skipped), sorted."""
    out = []
    for p in directory.rglob("*"):
        rel = p.relative_to(directory)
        if p.suffix.lower() in _IMAGE_SUFFIXES and not any(part.startswith(".") for part in rel.parts) and p.is_file():
            out.append(rel.as_posix())
    return sorted(out)


def match_scaled_images(names: list[str], root: Path, scaled_dir: Path) -> dict[str, Path] | None:
    """The file in ``scaled_dir`` (``images_N/``) for each COLMAP image name.

    When the names differ (LLFF scenes: the model names ``IMG_4026.JPG``, ``images_8/`` holds
    ``image000.png``, ...) the files are matched by sorted order, the convention of gsplat's and
    nerfstudio's COLMAP parsers: the sorted files of ``images/`` (when it holds every model name
    and as many files) to the sorted files of ``images_N/``, else the sorted model names to them
    when the counts agree. Different counts: a ``UserError``.

    Args:
        names: The model's image names.
        root: The dataset folder.
        scaled_dir: The ``images_N/`` folder.

    Returns:
        Name -> file, or None when every name is in ``scaled_dir`` as it is.
    """
    if all((scaled_dir / nm).is_file() for nm in names):
        return None
    scaled = _image_files(scaled_dir)
    missing = [nm for nm in names if not (scaled_dir / nm).is_file()]
    full_dir = root / "images"
    full = _image_files(full_dir) if full_dir.is_dir() else []
    if full and len(full) == len(scaled) and set(names) <= set(full):
        by_full = dict(zip(full, scaled))
        return {nm: scaled_dir / by_full[nm] for nm in names}
    if len(scaled) == len(names):
        return {nm: scaled_dir / f for nm, f in zip(sorted(names), scaled)}
    raise UserError(
        f"{len(missing)} of the COLMAP model's {len(names)} image names (e.g. {missing[0]}) are not in "
        f"{scaled_dir.name}/, and it holds {len(scaled)} images, not {len(names)}: cannot match its files to the "
        f"cameras by sorted order",
        scaled_dir,
    )


def _colmap_views(root: Path, downscale: int, background) -> tuple[list, np.ndarray | None, np.ndarray | None]:
    model_dir = colmap_io.find_model_dir(root)
    assert model_dir is not None
    model = colmap_io.read_model(model_dir)
    if not model.images:
        raise UserError("the COLMAP model has no registered images", model_dir)
    images_dir = root / "images"
    factor = 1.0 / downscale
    if downscale > 1 and (root / f"images_{downscale}").is_dir():
        images_dir, factor = root / f"images_{downscale}", 1.0
    if not images_dir.is_dir():
        raise UserError(f"COLMAP dataset has no {images_dir.name}/ folder", root)
    listed_in = model_dir / ("images.bin" if (model_dir / "images.bin").is_file() else "images.txt")
    ordered = sorted(model.images.values(), key=lambda im: im.name)
    matched = None
    if images_dir.name != "images":
        matched = match_scaled_images([im.name for im in ordered], root, images_dir)
    if matched is not None:
        im = ordered[0]
        cc = model.cameras[im.camera_id]
        first = matched[im.name]
        sw, sh = read_image_size(first)
        ew, eh = cc.width / downscale, cc.height / downscale
        if abs(sw - ew) > 1 or abs(sh - eh) > 1:
            raise UserError(
                f"is {sw}x{sh}, but its camera ({im.name}, {cc.width}x{cc.height}) at 1/{downscale} is "
                f"{ew:g}x{eh:g}: {images_dir.name}/ does not hold the COLMAP images in sorted order",
                first,
            )
        warn(
            f"file names differ from the COLMAP model's; matched its {len(ordered)} images to the cameras by "
            f"sorted order ({first.relative_to(images_dir).as_posix()} = {im.name}, ...)",
            images_dir,
        )
    views = []
    for im in ordered:
        cc = model.cameras[im.camera_id]
        fx, fy, cx, cy, dist = cc.pinhole_and_distortion()
        cam = Camera(
            fx=fx,
            fy=fy,
            cx=cx,
            cy=cy,
            width=cc.width,
            height=cc.height,
            world_to_camera=im.world_to_camera(),
            image_name=im.name,
            model=cc.model,
        )
        path = images_dir / im.name if matched is None else matched[im.name]
        size = read_image_size(path, listed_in=listed_in)
        views.append(prepare_view(cam, dist, path, size, factor, background))
    pts = cols = None
    if model.points is not None:
        pts, cols = model.points.xyz, model.points.rgb
    return views, pts, cols


# ----------------------------------------------------------------------------------------------
# entry point


def load_dataset(
    path: str | Path,
    downscale: int = 1,
    background=(1.0, 1.0, 1.0),
    test_every: int = 8,
    test_names: list[str] | None = None,
    cache_dir: Path | None = None,
) -> Dataset:
    """Load a dataset folder (format detected); images are decoded only when asked for.

    Args:
        path: The dataset folder (COLMAP, Blender or nerfstudio).
        downscale: Integer downscale N: COLMAP uses ``images_N/`` when present (nerfstudio likewise),
            otherwise images are resized with INTER_AREA; cameras are scaled to match.
        background: RGB in [0, 1] that transparent images are composited on.
        test_every: Views sorted by name, every this-many-th (0, 8, 16, ... for 8) is a test view
            (COLMAP / nerfstudio; Blender has its own split files and ignores it).
        test_names: Image names of the test split, instead of ``test_every``.
        cache_dir: Root of the processed-image cache (default ``$SPLATDISTILL_CACHE`` or
            ``~/.cache/splatdistill``).

    Returns:
        A ``Dataset``. Any problem with the folder raises ``UserError`` naming the file.
    """
    root = Path(path)
    if isinstance(downscale, bool) or int(downscale) != downscale or int(downscale) < 1:
        raise UserError(f"downscale must be a positive integer, got {downscale!r}")
    downscale = int(downscale)
    try:
        bg = tuple(float(b) for b in background)
    except (TypeError, ValueError):
        bg = ()
    if len(bg) != 3 or not all(0.0 <= b <= 1.0 for b in bg):
        raise UserError(f"background must be three numbers in [0, 1], got {background!r}")
    fmt = detect_format(root)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    if fmt == "blender":
        raw = load_blender(root, downscale, bg)
        splits = {name: [View(c, s.path, s) for c, s in raw[name]] for name in ("train", "test", "val") if name in raw}
        splits.setdefault("test", [])
        models = sorted({c.model for vs in raw.values() for c, _ in vs})
        return Dataset("blender", root, splits, None, None, Normalization(), bg, models, cache_dir)

    if fmt == "colmap":
        views, pts, cols = _colmap_views(root, downscale, bg)
    else:
        views, pts, cols = load_nerfstudio(root, downscale, bg)
        views = sorted(views, key=lambda v: v[0].image_name)
    norm = _normalization([c for c, _ in views])
    views = [View(_normalize_camera(c, norm), s.path, s) for c, s in views]
    train_idx, test_idx = _split_indices([v.camera.image_name for v in views], test_every, test_names, root)
    splits = {"train": [views[i] for i in train_idx], "test": [views[i] for i in test_idx]}
    if not splits["train"]:
        raise UserError("no training images left after taking the test split", root)
    points = colors = None
    if pts is not None:
        points = ((np.asarray(pts, dtype=np.float64) - norm.center) / norm.scale).astype(np.float32)
        colors = np.asarray(cols, dtype=np.uint8)
    models = sorted({v.camera.model for v in views})
    return Dataset(fmt, root, splits, points, colors, norm, bg, models, cache_dir)


def with_train_views(dataset: Dataset, n: int | None) -> Dataset:
    """The dataset with ``n`` evenly spaced views of its train split (sparse-view training).

    The other splits are unchanged.

    Args:
        dataset: The dataset.
        n: Train views to keep; ``None`` or ``n`` >= the split's size: the dataset itself.

    Returns:
        A ``Dataset``.
    """
    if n is None:
        return dataset
    views = dataset.split("train")
    if isinstance(n, bool) or int(n) != n or int(n) < 1:
        raise UserError(f"--train-views must be a positive integer, got {n!r}", dataset.root)
    if int(n) >= len(views):
        return dataset
    idx = np.unique(np.round(np.linspace(0, len(views) - 1, int(n))).astype(int))
    return replace(dataset, splits={**dataset.splits, "train": [views[i] for i in idx]})
