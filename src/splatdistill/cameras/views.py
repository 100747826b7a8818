"""Extra cameras for later stages: pseudo views, interpolated views, orbits, spheres.

* ``pseudo_views``: training camera centres perturbed by Gaussian noise, orientation kept — the
  pseudo-view augmentation used for distillation by LightGaussian (Fan et al. 2023) and
  Distilled-3DGS, with the noise std a fraction of the scene extent.
* ``interpolated_views``: between a training camera and one of its nearest neighbours (centre
  linear, rotation by spherical linear interpolation).
* ``orbit_cameras`` / ``sphere_cameras``: cameras on a circle / a Fibonacci sphere around a
  bounding sphere, all looking at its centre, for data-free compression.
* ``bounding_sphere``: a robust (quantile) sphere around a point cloud.
* ``camera_extent``: 1.1 x the largest distance of camera centres from their mean (3DGS).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from splatdistill.cameras.camera import Camera, look_at


def camera_extent(cameras: list[Camera]) -> float:
    """3DGS scene extent (``getNerfppNorm``): 1.1 x max distance of centres from their mean.

    Args:
        cameras: The (training) cameras.

    Returns:
        The extent, a float in world units.
    """
    if not cameras:
        raise ValueError("camera_extent needs at least one camera")
    centers = np.stack([c.center for c in cameras])
    return 1.1 * float(np.linalg.norm(centers - centers.mean(axis=0), axis=1).max())


def _with_center(cam: Camera, center: np.ndarray, R: np.ndarray | None = None, name: str = "") -> Camera:
    R = cam.world_to_camera[:3, :3] if R is None else R
    m = np.eye(4)
    m[:3, :3] = R
    m[:3, 3] = -R @ np.asarray(center, dtype=np.float64)
    return replace(cam, world_to_camera=m, image_name=name or cam.image_name)


def _balanced_choice(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """``n`` indices into ``k`` items, each used equally often (concatenated permutations)."""
    reps = -(-n // k) if k else 0
    return np.concatenate([rng.permutation(k) for _ in range(reps)])[:n] if reps else np.zeros(0, int)


def pseudo_views(
    cameras: list[Camera], n: int, sigma_fraction: float = 0.05, extent: float | None = None, seed: int = 0
) -> list[Camera]:
    """Pseudo views: training cameras with jittered centres (Distilled-3DGS).

    Each of the ``n`` cameras is a training camera (drawn evenly over them) whose centre moves by
    N(0, (sigma_fraction * extent)^2) per axis; rotation and intrinsics are kept.

    Args:
        cameras: The training cameras.
        n: Number of views.
        sigma_fraction: Standard deviation of the jitter as a fraction of the extent.
        extent: Scene extent; ``camera_extent(cameras)`` when None.
        seed: Seed (deterministic).

    Returns:
        A list of ``n`` cameras.
    """
    if not cameras:
        raise ValueError("pseudo_views needs at least one camera")
    rng = np.random.default_rng(seed)
    sigma = sigma_fraction * (camera_extent(cameras) if extent is None else float(extent))
    out = []
    for i, idx in enumerate(_balanced_choice(rng, len(cameras), int(n))):
        cam = cameras[int(idx)]
        center = cam.center + rng.normal(0.0, sigma, size=3)
        out.append(_with_center(cam, center, name=f"pseudo_{i:05d}"))
    return out


def interpolated_views(cameras: list[Camera], n: int, seed: int = 0, neighbours: int = 3) -> list[Camera]:
    """``n`` cameras between a training camera and one of its ``neighbours`` nearest ones.

    Centres are interpolated linearly, rotations by slerp, at a uniform random fraction in (0, 1);
    intrinsics and size are the first camera's.

    Args:
        cameras: The training cameras.
        n: Number of views.
        seed: Seed (deterministic).
        neighbours: How many nearest cameras a partner is drawn from.

    Returns:
        A list of ``n`` cameras.
    """
    from scipy.spatial.transform import Rotation, Slerp  # deferred: only this helper needs scipy

    if not cameras:
        raise ValueError("interpolated_views needs at least one camera")
    rng = np.random.default_rng(seed)
    centers = np.stack([c.center for c in cameras])
    k = min(neighbours, len(cameras) - 1)
    d = np.linalg.norm(centers[:, None] - centers[None], axis=2)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :k] if k > 0 else None
    out = []
    for i, a in enumerate(_balanced_choice(rng, len(cameras), int(n))):
        first = cameras[int(a)]
        if nearest is None:
            out.append(replace(first, image_name=f"interp_{i:05d}"))
            continue
        second = cameras[int(nearest[a, rng.integers(k)])]
        t = float(rng.uniform(0.0, 1.0))
        rots = Rotation.from_matrix(np.stack([first.world_to_camera[:3, :3], second.world_to_camera[:3, :3]]))
        R = Slerp([0.0, 1.0], rots)([t]).as_matrix()[0]
        center = (1.0 - t) * first.center + t * second.center
        out.append(_with_center(first, center, R, name=f"interp_{i:05d}"))
    return out


def _basis(up) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormal (a, b, u) with u along ``up``."""
    u = np.asarray(up, dtype=np.float64)
    u = u / np.linalg.norm(u)
    helper = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    a = np.cross(helper, u)
    a /= np.linalg.norm(a)
    b = np.cross(u, a)
    return a, b, u


def _look_at_cameras(center, directions, radius, width, height, fov_deg, up, prefix) -> list[Camera]:
    """Cameras at ``center + d * dir`` looking at ``center``; the sphere fits the field of view.

    ``fov_deg`` is the field of view across the smaller image side; the distance
    ``d = radius / sin(fov / 2)`` makes the bounding sphere tangent to that view cone.
    """
    if not 0.0 < fov_deg < 180.0:
        raise ValueError("fov_deg must be in (0, 180)")
    center = np.asarray(center, dtype=np.float64).reshape(3)
    half = math.radians(fov_deg) / 2.0
    focal = 0.5 * min(width, height) / math.tan(half)
    dist = float(radius) / math.sin(half)
    cams = []
    for i, d in enumerate(directions):
        eye = center + dist * np.asarray(d, dtype=np.float64)
        cams.append(
            Camera(
                fx=focal,
                fy=focal,
                cx=0.5 * width,
                cy=0.5 * height,
                width=int(width),
                height=int(height),
                world_to_camera=look_at(eye, center, np.asarray(up, dtype=np.float64)),
                image_name=f"{prefix}_{i:04d}",
                model="PINHOLE",
            )
        )
    return cams


def orbit_cameras(
    center,
    radius: float,
    n: int,
    width: int,
    height: int,
    fov_deg: float = 50.0,
    elevation_deg: float = 20.0,
    up=(0.0, 0.0, 1.0),
) -> list[Camera]:
    """``n`` cameras evenly spaced on a circle at ``elevation_deg`` above the plane normal to ``up``.

    Args:
        center: [3] point looked at.
        radius: Radius of the sphere to frame; the cameras stand at ``radius / sin(fov / 2)``.
        n: Number of cameras.
        width, height: Image size in pixels.
        fov_deg: Field of view across the smaller image side, in degrees.
        elevation_deg: Elevation of the circle in degrees.
        up: [3] world up.

    Returns:
        A list of ``n`` cameras looking at ``center``.
    """
    a, b, u = _basis(up)
    el = math.radians(elevation_deg)
    dirs = [
        math.cos(el) * (math.cos(th) * a + math.sin(th) * b) + math.sin(el) * u
        for th in np.linspace(0.0, 2.0 * math.pi, int(n), endpoint=False)
    ]
    return _look_at_cameras(center, dirs, radius, width, height, fov_deg, u, "orbit")


def fibonacci_directions(n: int, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Unit vectors spread evenly over the sphere (golden-angle spiral along ``up``).

    Args:
        n: Number of directions.
        up: [3] axis of the spiral.

    Returns:
        [n, 3] float64 unit vectors.
    """
    a, b, u = _basis(up)
    i = np.arange(int(n)) + 0.5
    z = 1.0 - 2.0 * i / max(int(n), 1)
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, 1.0))
    phi = i * math.pi * (3.0 - math.sqrt(5.0))  # golden angle
    return (r * np.cos(phi))[:, None] * a + (r * np.sin(phi))[:, None] * b + z[:, None] * u


def sphere_cameras(
    center,
    radius: float,
    n: int,
    width: int,
    height: int,
    fov_deg: float = 50.0,
    up=(0.0, 0.0, 1.0),
) -> list[Camera]:
    """``n`` cameras in Fibonacci-sphere directions around the centre, looking at it.

    Args:
        center: [3] point looked at.
        radius: Radius of the sphere to frame; the cameras stand at ``radius / sin(fov / 2)``.
        n: Number of cameras.
        width, height: Image size in pixels.
        fov_deg: Field of view across the smaller image side, in degrees.
        up: [3] world up.

    Returns:
        A list of ``n`` cameras.
    """
    u = _basis(up)[2]
    return _look_at_cameras(center, fibonacci_directions(n, up), radius, width, height, fov_deg, u, "sphere")


def bounding_sphere(points, quantile: float = 0.98) -> tuple[np.ndarray, float]:
    """A sphere that holds most of the points: the per-axis median and a quantile of distances from it.

    Robust to outliers: SfM clouds have far-away stray points that would blow up a minimal sphere.

    Args:
        points: [N, 3] positions (array or tensor).
        quantile: Share of the points inside the sphere.

    Returns:
        ``(center, radius)``: a [3] float64 array and a float.
    """
    if hasattr(points, "detach"):
        points = points.detach().cpu().numpy()
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    p = p[np.all(np.isfinite(p), axis=1)]
    if p.shape[0] == 0:
        raise ValueError("bounding_sphere needs at least one finite point")
    center = np.median(p, axis=0)
    radius = float(np.quantile(np.linalg.norm(p - center, axis=1), quantile))
    return center, radius
