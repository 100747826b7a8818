"""Dataset loading on the real data in ../shared/data, and the UserErrors of bad inputs."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers import assert_close
from splatdistill.data import colmap
from splatdistill.data.dataset import detect_format, load_dataset
from splatdistill.errors import UserError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LEGO = DATA / "nerf_synthetic" / "lego"
BEER = DATA / "colmap" / "beer"

needs_lego = pytest.mark.skipif(not LEGO.is_dir(), reason=f"real data absent: {LEGO} (NeRF-synthetic lego)")
needs_beer = pytest.mark.skipif(not BEER.is_dir(), reason=f"real data absent: {BEER} (COLMAP beer)")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPLATDISTILL_CACHE", str(cache))
    return cache


def _snapshot(root: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


# ----------------------------------------------------------------------------------------------
# real data


@needs_lego
def test_lego_loads_as_blender():
    before = _snapshot(LEGO)
    ds = load_dataset(LEGO)
    assert ds.format == "blender" == detect_format(LEGO)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 100, "test": 200, "val": 100}
    angle = json.loads((LEGO / "transforms_train.json").read_text())["camera_angle_x"]
    focal = 0.5 * 400 / math.tan(0.5 * angle)
    for v in ds.split("train") + ds.split("test") + ds.split("val"):
        c = v.camera
        assert (c.width, c.height) == (400, 400)
        assert c.fx == pytest.approx(focal) and c.fy == pytest.approx(focal)
        assert (c.cx, c.cy) == (200.0, 200.0)
    assert ds.points is None and ds.camera_models == ["PINHOLE"]
    assert np.allclose(ds.normalization.center, 0) and ds.normalization.scale == 1.0
    assert not ds._memo  # nothing decoded yet

    img = ds.image(ds.split("train")[0])
    assert img.shape == (400, 400, 3) and img.dtype.__str__() == "torch.float32"
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    assert np.allclose(img[0, 0].numpy(), 1.0)  # transparent corner on the white background
    assert _snapshot(LEGO) == before  # nothing written into the dataset


@needs_lego
def test_lego_cameras_look_at_the_object():
    ds = load_dataset(LEGO)
    for v in ds.split("train"):
        c = v.camera
        x = c.world_to_camera[:3, :3] @ np.zeros(3) + c.world_to_camera[:3, 3]  # the origin
        assert x[2] > 0, v.camera.image_name
        u, w = c.fx * x[0] / x[2] + c.cx, c.fy * x[1] / x[2] + c.cy
        assert 0 <= u < c.width and 0 <= w < c.height
        # and roughly at the centre (the cameras aim at the object)
        assert abs(u - c.cx) < 0.25 * c.width and abs(w - c.cy) < 0.25 * c.height


@needs_lego
def test_lego_black_background_and_downscale():
    ds = load_dataset(LEGO, downscale=2, background=(0.0, 0.0, 0.0))
    v = ds.split("test")[0]
    assert (v.camera.width, v.camera.height) == (200, 200)
    img = ds.image(v).numpy()
    assert img.shape == (200, 200, 3) and np.allclose(img[0, 0], 0.0)
    rgba = np.asarray(Image.open(v.image_path), dtype=np.float32) / 255.0
    ref = cv2.resize(rgba[..., :3] * rgba[..., 3:], (200, 200), interpolation=cv2.INTER_AREA)
    assert_close(img, ref, rtol=0, atol=1.0 / 255 + 1e-6, what="image")


@needs_beer
def test_beer_loads_as_colmap_undistorted(_cache):
    before = _snapshot(BEER)
    ds = load_dataset(BEER, downscale=4)
    assert ds.format == "colmap" == detect_format(BEER)
    assert ds.camera_models == ["SIMPLE_RADIAL"]
    assert len(ds.split("train")) == 62 and len(ds.split("test")) == 9
    names = sorted(v.camera.image_name for v in ds.split("train") + ds.split("test"))
    assert [v.camera.image_name for v in ds.split("test")] == names[::8]
    assert ds.points.shape == (4414, 3) and ds.points.dtype == np.float32
    assert ds.point_colors.shape == (4414, 3) and ds.point_colors.dtype == np.uint8
    # normalised frame: camera centres within the unit ball, one on its surface
    centers = np.stack([v.camera.center for v in ds.split("train") + ds.split("test")])
    assert np.allclose(centers.mean(0), 0, atol=1e-9)
    assert np.linalg.norm(centers, axis=1).max() == pytest.approx(1.0)
    assert ds.extent == pytest.approx(
        1.1
        * np.linalg.norm(
            np.stack([v.camera.center for v in ds.split("train")])
            - np.stack([v.camera.center for v in ds.split("train")]).mean(0),
            axis=1,
        ).max()
    )
    assert not ds._memo and not _cache.exists()  # lazy: nothing decoded or cached yet

    model = colmap.read_model(BEER / "sparse" / "0")
    by_name = {im.name: im for im in model.images.values()}
    row = {int(pid): i for i, pid in enumerate(model.points.ids)}

    def sample(img, xy):
        mx = xy[:, 0].astype(np.float32).reshape(-1, 1)
        my = xy[:, 1].astype(np.float32).reshape(-1, 1)
        return np.stack(
            [cv2.remap(np.ascontiguousarray(img[..., c]), mx, my, cv2.INTER_LINEAR)[:, 0] for c in range(3)], 1
        )

    for v in ds.split("test")[:3]:
        cam = v.camera
        assert cam.model == "SIMPLE_RADIAL" and (cam.width, cam.height) == (180, 320)
        im = by_name[cam.image_name]
        seen = im.point3D_ids >= 0
        xys = im.xys[seen]  # observations in the distorted full-resolution image
        f, cx, cy, k = model.cameras[im.camera_id].params  # one SIMPLE_RADIAL camera per image
        P = ds.points[[row[int(p)] for p in im.point3D_ids[seen]]].astype(np.float64)
        # 1. our poses + normalisation, pushed through COLMAP's SIMPLE_RADIAL model written out
        #    here independently, reproduce the observations (COLMAP's reprojection error).
        Xw = P * ds.normalization.scale + ds.normalization.center
        Xc = Xw @ im.rotation().T + im.tvec
        x, y = Xc[:, 0] / Xc[:, 2], Xc[:, 1] / Xc[:, 2]
        radial = 1 + k * (x * x + y * y)
        reproj = np.hypot(f * x * radial + cx - xys[:, 0], f * y * radial + cy - xys[:, 1])
        assert np.median(reproj) < 1.5
        # 2. the undistorted image seen through the pinhole camera shows the same colours as the
        #    raw image at the observations, and clearly better than if it were not undistorted.
        Xn = P @ cam.world_to_camera[:3, :3].T + cam.world_to_camera[:3, 3]
        assert np.all(Xn[:, 2] > 0)
        uv = np.stack([cam.fx * Xn[:, 0] / Xn[:, 2] + cam.cx, cam.fy * Xn[:, 1] / Xn[:, 2] + cam.cy], 1)
        proc = ds.image(v).numpy()
        raw = np.asarray(Image.open(v.image_path).convert("RGB"), dtype=np.float32) / 255.0
        ref = sample(cv2.resize(raw, (180, 320), interpolation=cv2.INTER_AREA), xys / 4 - 0.5)
        err_good = np.abs(sample(proc, uv - 0.5) - ref).mean()
        err_raw_geometry = np.abs(sample(proc, xys / 4 - 0.5) - ref).mean()
        assert err_good < 0.02 and err_good < err_raw_geometry

    cached = list(_cache.rglob("*.png"))
    assert len(cached) == 3  # processed images cached outside the dataset
    assert _snapshot(BEER) == before


# ----------------------------------------------------------------------------------------------
# bad inputs: a UserError whose text names the file


def _lego_like(root: Path, frames: list | None = None, n: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train").mkdir(exist_ok=True)
    if frames is None:
        frames = []
        for i in range(n):
            Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(root / "train" / f"r_{i}.png")
            frames.append({"file_path": f"./train/r_{i}", "transform_matrix": np.eye(4).tolist()})
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames}))
    return root


def _raises(path_part: str, fn, *args, match: str | None = None, **kw) -> UserError:
    with pytest.raises(UserError) as ei:
        fn(*args, **kw)
    assert path_part in str(ei.value), str(ei.value)
    if match:
        assert match in str(ei.value), str(ei.value)
    return ei.value


def test_json_without_frames(tmp_path):
    root = _lego_like(tmp_path / "ds")
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.7}))
    e = _raises("transforms_train.json", load_dataset, root, match="frames")
    assert e.path.endswith("transforms_train.json")


def test_malformed_json(tmp_path):
    root = _lego_like(tmp_path / "ds")
    (root / "transforms_train.json").write_text('{"camera_angle_x": 0.7, "frames": [')
    _raises("transforms_train.json", load_dataset, root, match="malformed JSON")


def test_image_listed_but_missing(tmp_path):
    root = _lego_like(tmp_path / "ds")
    (root / "train" / "r_1.png").unlink()
    e = _raises("r_1.png", load_dataset, root, match="not found")
    assert "transforms_train.json" in str(e)


@pytest.mark.parametrize("model", ["FISHEYE", "THIN_PRISM_FISHEYE", "OPENCV_FISHEYE"])
def test_unsupported_camera_model_text(tmp_path, model):
    sparse = tmp_path / "ds" / "sparse" / "0"
    sparse.mkdir(parents=True)
    (tmp_path / "ds" / "images").mkdir()
    (sparse / "cameras.txt").write_text(f"# cameras\n1 {model} 64 48 50 50 32 24 0.1 0.01 0 0 0 0 0 0 0 0\n")
    (sparse / "images.txt").write_text("")
    e = _raises("cameras.txt", load_dataset, tmp_path / "ds", match=f"unsupported camera model '{model}'")
    assert "PINHOLE" in str(e) and "OPENCV" in str(e)  # lists what is supported


def test_unsupported_camera_model_binary(tmp_path):
    sparse = tmp_path / "sparse" / "0"
    sparse.mkdir(parents=True)
    params = np.arange(12, dtype="<f8").tobytes()
    (sparse / "cameras.bin").write_bytes(struct.pack("<QIiQQ", 1, 1, 10, 64, 48) + params)  # 10: THIN_PRISM_FISHEYE
    _raises("cameras.bin", colmap.read_cameras_binary, sparse / "cameras.bin", match="'THIN_PRISM_FISHEYE'")


def test_truncated_cameras_bin(tmp_path):
    sparse = tmp_path / "ds" / "sparse" / "0"
    cams = [
        colmap.ColmapCamera(1, "OPENCV", 64, 48, np.arange(8.0)),
        colmap.ColmapCamera(2, "PINHOLE", 64, 48, np.arange(4.0)),
    ]
    colmap.write_model(sparse, cams, [])
    data = (sparse / "cameras.bin").read_bytes()
    for cut in (3, 20, len(data) - 5):
        (sparse / "cameras.bin").write_bytes(data[:cut])
        _raises("cameras.bin", load_dataset, tmp_path / "ds", match="truncated")


def test_truncated_images_and_points_bin(tmp_path):
    sparse = tmp_path / "sparse"
    im = colmap.ColmapImage(1, [1, 0, 0, 0], [0, 0, 0], 1, "a.png", np.ones((5, 2)), np.arange(5))
    colmap.write_images_binary([im], sparse / "images.bin")
    data = (sparse / "images.bin").read_bytes()
    (sparse / "images.bin").write_bytes(data[:-7])
    _raises("images.bin", colmap.read_images_binary, sparse / "images.bin", match="truncated")
    pts = colmap.ColmapPoints.from_arrays(np.ones((3, 3)), np.ones((3, 3)), tracks=[[(1, 0)], [], [(1, 2), (1, 3)]])
    colmap.write_points3D_binary(pts, sparse / "points3D.bin")
    data = (sparse / "points3D.bin").read_bytes()
    (sparse / "points3D.bin").write_bytes(data[:-4])
    _raises("points3D.bin", colmap.read_points3D_binary, sparse / "points3D.bin", match="truncated")


def test_malformed_text_model(tmp_path):
    p = tmp_path / "cameras.txt"
    p.write_text("1 PINHOLE 64 48 50 50 32\n")  # one parameter short
    _raises("cameras.txt", colmap.read_cameras_text, p, match="line 1")
    p = tmp_path / "images.txt"
    p.write_text("1 1 0 0 0 0 0 zero 1 a.png\n\n")
    _raises("images.txt", colmap.read_images_text, p, match="line 1")


def test_not_a_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    e = _raises("empty", load_dataset, tmp_path / "empty", match="not a dataset")
    for looked_for in ("sparse/0/cameras", "transforms_train.json", "transforms.json"):
        assert looked_for in str(e)
    _raises("nowhere", detect_format, tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    _raises("file.txt", detect_format, tmp_path / "file.txt")


def test_bad_arguments_and_unknown_split(tmp_path):
    root = _lego_like(tmp_path / "ds")
    with pytest.raises(UserError, match="downscale"):
        load_dataset(root, downscale=0)
    with pytest.raises(UserError, match="background"):
        load_dataset(root, background=(1, 1))
    ds = load_dataset(root)
    assert ds.split("test") == [] and "val" not in ds.splits
    with pytest.raises(UserError, match="unknown split 'val'"):
        ds.split("val")


def test_cache_root_from_environment(tmp_path, monkeypatch):
    root = _lego_like(tmp_path / "ds", n=1)
    monkeypatch.setenv("SPLATDISTILL_CACHE", str(tmp_path / "elsewhere"))
    ds = load_dataset(root, downscale=2)
    assert ds.cache_dir == tmp_path / "elsewhere"
    ds.image(ds.split("train")[0])
    assert len(list((tmp_path / "elsewhere").rglob("*.png"))) == 1
    monkeypatch.delenv("SPLATDISTILL_CACHE")
    assert load_dataset(root).cache_dir == Path.home() / ".cache" / "splatdistill"
    assert os.listdir(root / "train") == ["r_0.png"]
