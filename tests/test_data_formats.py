"""Blender and nerfstudio datasets built by the test: intrinsics, poses, compositing, splits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers import assert_close
from splatdistill.data import colmap
from splatdistill.data.dataset import load_dataset
from splatdistill.errors import UserError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLATDISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _c2w_gl(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world in OpenGL axes (x right, y up, looking down -z) at ``eye`` facing ``target``."""
    eye = np.asarray(eye, float)
    back = eye - np.asarray(target, float)
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, np.cross(back, right), back, eye
    return m


def test_blender_rgba_composite_and_pose(tmp_path):
    root = tmp_path / "lego"
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (12, 16, 4)).astype(np.uint8)
    Image.fromarray(rgba).save(root / "train" / "r_0.png")
    Image.fromarray(rgba[..., :3]).save(root / "train" / "r_1.jpg")  # explicit extension, no alpha
    eye = [0.5, -4.0, 1.5]
    frames = [
        {"file_path": "./train/r_0", "transform_matrix": _c2w_gl(eye).tolist()},
        {"file_path": "train/r_1.jpg", "transform_matrix": _c2w_gl([4, 0, 0])[:3].tolist()},
    ]
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.9, "frames": frames}))
    bg = (0.2, 0.4, 0.6)
    ds = load_dataset(root, background=bg)
    c = ds.split("train")[0].camera
    assert c.fx == pytest.approx(0.5 * 16 / math.tan(0.45)) and c.fy == c.fx
    assert (c.cx, c.cy, c.width, c.height) == (8.0, 6.0, 16, 12)
    assert np.allclose(c.center, eye)
    # the target is straight ahead: on the optical axis, in front of the camera
    x = c.world_to_camera[:3, :3] @ np.zeros(3) + c.world_to_camera[:3, 3]
    assert x[2] > 0 and np.allclose(x[:2], 0, atol=1e-9)
    # world up (+z) points to the top of the image (-y in OpenCV)
    assert (c.world_to_camera[:3, :3] @ [0, 0, 1.0])[1] < 0
    a = rgba[..., 3:] / 255.0
    expected = rgba[..., :3] / 255.0 * a + np.asarray(bg) * (1 - a)
    assert_close(ds.image(ds.split("train")[0]).numpy(), expected, rtol=0, atol=0.5 / 255 + 1e-6, what="image")
    assert ds.split("train")[1].image_path.name == "r_1.jpg"


def _write_nerfstudio(root: Path, n: int = 9, per_frame: bool = False, distortion: bool = True, size=(40, 30)):
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    w, h = size
    meta = {"camera_model": "OPENCV", "fl_x": 35.0, "fl_y": 36.0, "cx": 20.5, "cy": 14.5, "w": w, "h": h}
    if distortion:
        meta.update({"k1": -0.05, "k2": 0.01, "p1": 0.001, "p2": -0.002})
    frames = []
    for i in range(n):
        name = f"images/frame_{i:05d}.png"
        img = cv2.resize(
            rng.integers(0, 256, (h // 3, w // 4, 3)).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC
        )
        Image.fromarray(img).save(root / name)
        ang = 2 * np.pi * i / n
        fr = {
            "file_path": name,
            "transform_matrix": _c2w_gl([3 * np.cos(ang) + 1, 3 * np.sin(ang) - 2, 0.7], (1, -2, 0)).tolist(),
        }
        if per_frame:
            fr.update({k: meta[k] for k in ("fl_x", "fl_y", "cx", "cy")})
        frames.append(fr)
    if per_frame:
        for k in ("fl_x", "fl_y", "cx", "cy"):
            meta.pop(k)
    # list the frames out of order: the split is by sorted file name
    meta["frames"] = frames[::-1]
    (root / "transforms.json").write_text(json.dumps(meta))
    return meta


@pytest.mark.parametrize("per_frame", [False, True])
def test_nerfstudio_matches_colmap_opencv(tmp_path, per_frame):
    meta = _write_nerfstudio(tmp_path / "ns", per_frame=per_frame)
    ds = load_dataset(tmp_path / "ns")
    assert ds.format == "nerfstudio" and ds.camera_models == ["OPENCV"]
    names = [f"images/frame_{i:05d}.png" for i in range(9)]
    assert [v.camera.image_name for v in ds.split("test")] == [names[0], names[8]]
    assert len(ds.split("train")) == 7
    # the same camera written as a COLMAP OPENCV model gives the same undistorted pinhole camera
    frames = sorted(meta["frames"], key=lambda f: f["file_path"])
    root = tmp_path / "colmap"
    (root / "images").mkdir(parents=True)
    cam = colmap.ColmapCamera(1, "OPENCV", 40, 30, [35.0, 36.0, 20.5, 14.5, -0.05, 0.01, 0.001, -0.002])
    images = []
    for i, fr in enumerate(frames):
        c2w = np.asarray(fr["transform_matrix"]) @ np.diag([1, -1, -1, 1.0])
        w2c = np.linalg.inv(c2w)
        name = Path(fr["file_path"]).name
        (root / "images" / name).write_bytes((tmp_path / "ns" / fr["file_path"]).read_bytes())
        images.append(colmap.ColmapImage(i + 1, colmap.rotmat_to_qvec(w2c[:3, :3]), w2c[:3, 3], 1, name))
    colmap.write_model(root / "sparse" / "0", [cam], images)
    ref = load_dataset(root)
    for a, b in zip(ds.split("train") + ds.split("test"), ref.split("train") + ref.split("test")):
        assert np.allclose(
            [a.camera.fx, a.camera.fy, a.camera.cx, a.camera.cy], [b.camera.fx, b.camera.fy, b.camera.cx, b.camera.cy]
        )
        assert np.allclose(a.camera.world_to_camera, b.camera.world_to_camera, atol=1e-9)
    assert np.allclose(ds.normalization.center, ref.normalization.center)
    assert np.array_equal(ds.image(ds.split("test")[1]).numpy(), ref.image(ref.split("test")[1]).numpy())


def test_nerfstudio_camera_angle_and_downscale(tmp_path):
    root = tmp_path / "ns"
    meta = _write_nerfstudio(root, n=3, distortion=False)
    for k in ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_model"):
        meta.pop(k)
    meta["camera_angle_x"] = 1.0
    (root / "transforms.json").write_text(json.dumps(meta))
    ds = load_dataset(root, downscale=2, test_every=0)
    c = ds.split("train")[0].camera
    assert c.model == "PINHOLE" and (c.width, c.height) == (20, 15)
    assert c.fx == pytest.approx(0.5 * 40 / math.tan(0.5) / 2) and c.fy == c.fx
    assert tuple(ds.image(ds.split("train")[0]).shape) == (15, 20, 3)
    # images_2/ is used when present (nerfstudio layout); intrinsics scaled to its files
    (root / "images_2").mkdir()
    for p in (root / "images").iterdir():
        Image.fromarray(np.zeros((15, 20, 3), np.uint8)).save(root / "images_2" / p.name)
    ds = load_dataset(root, downscale=2, test_every=0)
    v = ds.split("train")[0]
    assert v.image_path.parent.name == "images_2" and v.camera.fx == pytest.approx(c.fx)
    assert float(ds.image(v).max()) == 0.0


def test_nerfstudio_bad_inputs(tmp_path):
    root = tmp_path / "ns"
    meta = _write_nerfstudio(root, n=2)
    meta["camera_model"] = "OPENCV_FISHEYE"
    (root / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="unsupported camera model 'OPENCV_FISHEYE'") as ei:
        load_dataset(root)
    assert "transforms.json" in str(ei.value)
    (root / "transforms.json").write_text(json.dumps({"fl_x": 3}))
    with pytest.raises(UserError, match="frames") as ei:
        load_dataset(root)
    assert "transforms.json" in str(ei.value)
    meta["camera_model"] = "OPENCV"
    meta["frames"][0]["transform_matrix"] = [[1, 0], [0, 1]]
    (root / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="transform_matrix"):
        load_dataset(root)


def test_unwritable_cache_warns_and_still_loads(tmp_path):
    root = tmp_path / "ds"
    (root / "train").mkdir(parents=True)
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(root / "train" / "r_0.png")
    frames = [{"file_path": "train/r_0", "transform_matrix": _c2w_gl([0, -3, 1]).tolist()}]
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames}))
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    ds = load_dataset(root, downscale=2, cache_dir=blocker / "cache")
    with pytest.warns(UserWarning, match="not writable"):
        img = ds.image(ds.split("train")[0])
    assert tuple(img.shape) == (4, 4, 3) and np.allclose(img.numpy(), 200 / 255)
