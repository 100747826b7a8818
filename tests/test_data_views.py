"""Pseudo, interpolated, orbit and sphere views; bounding spheres."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import ring_cameras
from splatdistill.cameras.camera import Camera
from splatdistill.cameras.views import (
    bounding_sphere,
    camera_extent,
    fibonacci_directions,
    interpolated_views,
    orbit_cameras,
    pseudo_views,
    sphere_cameras,
)


def _project(cam: Camera, x: np.ndarray) -> tuple[np.ndarray, float]:
    p = cam.world_to_camera[:3, :3] @ x + cam.world_to_camera[:3, 3]
    return np.array([cam.fx * p[0] / p[2] + cam.cx, cam.fy * p[1] / p[2] + cam.cy]), p[2]


def test_camera_extent_is_inria_convention():
    cams = ring_cameras(8, 4.0)
    assert camera_extent(cams) == pytest.approx(1.1 * 4.0)


def test_pseudo_views_keep_orientation_and_spread_centres():
    cams = ring_cameras(8)
    n = 4000
    views = pseudo_views(cams, n, sigma_fraction=0.05, seed=1)
    assert len(views) == n
    sigma = 0.05 * camera_extent(cams)
    R_views = np.stack([v.world_to_camera[:3, :3] for v in views])  # (n, 3, 3)
    R_cams = np.stack([c.world_to_camera[:3, :3] for c in cams])  # (8, 3, 3)
    same = np.all(np.abs(R_views[:, None] - R_cams[None]) < 1e-12, axis=(2, 3))  # (n, 8)
    # orientation of exactly one training camera, unchanged
    assert np.all(same.sum(1) == 1)
    src = same.argmax(1)
    assert np.all(np.bincount(src, minlength=8) == n // 8)  # every training camera used equally
    for v, i in zip(views[:50], src[:50]):
        c = cams[i]
        assert (v.fx, v.fy, v.cx, v.cy, v.width, v.height) == (c.fx, c.fy, c.cx, c.cy, c.width, c.height)
    offsets = [v.center - cams[i].center for v, i in zip(views, src)]
    offsets = np.stack(offsets)
    assert np.allclose(offsets.mean(0), 0, atol=4 * sigma / np.sqrt(n))
    assert np.allclose(offsets.std(0), sigma, rtol=0.06)
    # explicit extent, reproducible with a seed
    v2 = pseudo_views(cams, 10, sigma_fraction=0.1, extent=2.0, seed=5)
    v3 = pseudo_views(cams, 10, sigma_fraction=0.1, extent=2.0, seed=5)
    assert all(np.array_equal(a.world_to_camera, b.world_to_camera) for a, b in zip(v2, v3))


def test_interpolated_views_lie_between_neighbours():
    cams = ring_cameras(12)
    centers = np.stack([c.center for c in cams])
    views = interpolated_views(cams, 50, seed=0, neighbours=2)
    assert len(views) == 50
    step = np.linalg.norm(centers[1] - centers[0])
    for v in views:
        R = v.world_to_camera[:3, :3]
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-9)
        # on the chord between two adjacent ring cameras
        d = np.sort(np.linalg.norm(centers - v.center, axis=1))
        assert d[0] + d[1] == pytest.approx(step)
        # still looking roughly at the ring centre
        uv, z = _project(v, np.zeros(3))
        assert z > 0 and abs(uv[0] - v.cx) < 5 and abs(uv[1] - v.cy) < 20
    single = interpolated_views(cams[:1], 3)
    assert all(np.array_equal(s.world_to_camera, cams[0].world_to_camera) for s in single)


@pytest.mark.parametrize("up", [(0.0, 0.0, 1.0), (0.0, -1.0, 0.0)])
def test_orbit_cameras_look_at_centre(up):
    center = np.array([1.0, -2.0, 0.5])
    cams = orbit_cameras(center, 2.0, 16, 64, 48, fov_deg=50, elevation_deg=20, up=up)
    assert len(cams) == 16
    dists = [np.linalg.norm(c.center - center) for c in cams]
    assert np.allclose(dists, 2.0 / np.sin(np.radians(25)))
    for c in cams:
        uv, z = _project(c, center)
        assert z > 0 and np.allclose(uv, [32, 24], atol=1e-9)
        # elevation above the orbit plane, and the world up points up in the image
        direction = (c.center - center) / np.linalg.norm(c.center - center)
        assert np.dot(direction, up) == pytest.approx(np.sin(np.radians(20)))
        assert (c.world_to_camera[:3, :3] @ np.asarray(up))[1] < 0
        # the bounding sphere fits in the image: points on it project inside
        for d in np.eye(3):
            uv, _ = _project(c, center + 2.0 * d)
            assert 0 <= uv[0] <= 64 and 0 <= uv[1] <= 48


def test_sphere_cameras_cover_the_sphere():
    center = np.zeros(3)
    cams = sphere_cameras(center, 1.0, 100, 32, 32)
    dirs = np.stack([(c.center - center) / np.linalg.norm(c.center - center) for c in cams])
    assert np.allclose(dirs.mean(0), 0, atol=0.02)  # evenly spread
    assert np.allclose(np.linalg.norm(fibonacci_directions(7), axis=1), 1)
    for c in cams:
        uv, z = _project(c, center)
        assert z > 0 and np.allclose(uv, [16, 16], atol=1e-9)


def test_bounding_sphere_ignores_outliers():
    rng = np.random.default_rng(0)
    pts = rng.normal([3.0, 1.0, -2.0], 1.0, (5000, 3))
    pts[:20] = 1e4  # stray SfM points
    center, radius = bounding_sphere(pts, quantile=0.98)
    assert np.allclose(center, [3, 1, -2], atol=0.1)
    assert 2.5 < radius < 3.5  # chi(3) 98% quantile ~ 3.1
    c2, r2 = bounding_sphere(torch.tensor(pts, dtype=torch.float32))
    assert np.allclose(c2, center, atol=1e-3) and r2 == pytest.approx(radius, rel=1e-4)
    with pytest.raises(ValueError):
        bounding_sphere(np.zeros((0, 3)))
