"""COLMAP models written and read back (binary and text), and COLMAP datasets built by the test."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers import assert_close
from splatdistill.data import colmap
from splatdistill.data.dataset import load_dataset
from splatdistill.errors import UserError

PARAMS = {  # plausible parameters of each supported model for a 64x48 image
    "SIMPLE_PINHOLE": [60.0, 32.0, 24.0],
    "PINHOLE": [60.0, 58.5, 31.5, 24.5],
    "SIMPLE_RADIAL": [60.0, 32.0, 24.0, 0.05],
    "RADIAL": [60.0, 32.0, 24.0, -0.04, 0.01],
    "OPENCV": [60.0, 61.0, 32.5, 23.5, -0.05, 0.01, 0.001, -0.002],
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLATDISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _random_model(rng: np.random.Generator, n_images: int = 12):
    cameras = []
    for cid, (model, params) in enumerate(PARAMS.items(), start=1):
        jitter = np.asarray(params) * (1 + 0.01 * rng.standard_normal(len(params)))
        cameras.append(colmap.ColmapCamera(cid * 7, model, 64, 48, jitter))
    images = []
    for i in range(n_images):
        q = rng.standard_normal(4)
        q /= np.linalg.norm(q)
        n_pts = int(rng.integers(0, 6))
        images.append(
            colmap.ColmapImage(
                image_id=100 + 3 * i,
                qvec=q,
                tvec=rng.normal(0, 2, 3),
                camera_id=cameras[i % len(cameras)].camera_id,
                name=f"img_{(i * 5) % n_images:03d}.png",
                xys=rng.uniform(0, 48, (n_pts, 2)),
                point3D_ids=np.where(rng.random(n_pts) < 0.3, -1, rng.integers(1, 50, n_pts)),
            )
        )
    m = 20
    tracks = [
        [(int(rng.integers(100, 140)), int(rng.integers(0, 9))) for _ in range(int(rng.integers(0, 4)))]
        for _ in range(m)
    ]
    points = colmap.ColmapPoints.from_arrays(
        rng.normal(0, 3, (m, 3)),
        rng.integers(0, 256, (m, 3)),
        ids=rng.permutation(1000)[:m] + 1,
        error=rng.random(m),
        tracks=tracks,
    )
    return cameras, images, points


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
def test_roundtrip_exact(tmp_path, binary):
    rng = np.random.default_rng(3)
    cameras, images, points = _random_model(rng)
    colmap.write_model(tmp_path, cameras, images, points, binary=binary)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{s}.{'bin' if binary else 'txt'}" for s in ("cameras", "images", "points3D")
    )
    model = colmap.read_model(tmp_path)
    assert set(model.cameras) == {c.camera_id for c in cameras}
    for c in cameras:
        r = model.cameras[c.camera_id]
        assert (r.model, r.width, r.height) == (c.model, c.width, c.height)
        assert np.array_equal(r.params, c.params)  # bit-exact, also through text
    assert set(model.images) == {im.image_id for im in images}
    for im in images:
        r = model.images[im.image_id]
        assert (r.name, r.camera_id) == (im.name, im.camera_id)
        assert np.array_equal(r.qvec, im.qvec) and np.array_equal(r.tvec, im.tvec)
        assert np.array_equal(r.xys, im.xys) and np.array_equal(r.point3D_ids, im.point3D_ids)
        assert np.allclose(r.world_to_camera()[:3, :3], colmap.qvec_to_rotmat(im.qvec))
    p = model.points
    for name in ("ids", "xyz", "rgb", "error", "track_lengths", "track_image_ids", "track_point2D_idxs"):
        assert np.array_equal(getattr(p, name), getattr(points, name)), name


def test_quaternion_matrix_conversions():
    rng = np.random.default_rng(0)
    for _ in range(200):
        q = rng.standard_normal(4)
        q /= np.linalg.norm(q)
        R = colmap.qvec_to_rotmat(q)
        assert np.allclose(R @ R.T, np.eye(3)) and np.linalg.det(R) == pytest.approx(1.0)
        q2 = colmap.rotmat_to_qvec(R)
        assert np.allclose(q2, q * np.sign(q[0]))
    # Hamilton convention: 90 degrees about z maps x to y
    q = np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    assert np.allclose(colmap.qvec_to_rotmat(q) @ [1, 0, 0], [0, 1, 0])


def test_images_txt_keeps_empty_point_lines(tmp_path):
    p = tmp_path / "images.txt"
    p.write_text("# header\n1 1 0 0 0 0 0 0 1 a b.png\n\n2 1 0 0 0 1 2 3 1 c.png\n1.5 2.5 -1 3 4 7\n")
    ims = colmap.read_images_text(p)
    assert ims[1].name == "a b.png" and ims[1].xys.shape == (0, 2)
    assert ims[2].tvec.tolist() == [1, 2, 3] and ims[2].point3D_ids.tolist() == [-1, 7]


def _write_dataset(root: Path, binary: bool, model: str = "OPENCV", n: int = 10, size=(64, 48), seed: int = 0):
    """A COLMAP dataset with textured random images and cameras on a ring looking inwards."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    w, h = size
    cam = colmap.ColmapCamera(1, model, w, h, PARAMS[model])
    images = []
    for i in range(n):
        ang = 2 * np.pi * i / n
        eye = np.array([5 * np.cos(ang), 5 * np.sin(ang), 1.0]) + [10.0, -4.0, 2.0]
        z = np.array([10.0, -4.0, 2.0]) - eye
        z /= np.linalg.norm(z)
        x = np.cross(z, [0, 0, 1.0])
        x /= np.linalg.norm(x)
        R = np.stack([x, np.cross(z, x), z])
        images.append(colmap.ColmapImage(i + 1, colmap.rotmat_to_qvec(R), -R @ eye, 1, f"{(7 * i) % n:04d}.png"))
        img = cv2.resize(
            rng.integers(0, 256, (h // 4, w // 4, 3)).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC
        )
        Image.fromarray(img).save(root / "images" / images[-1].name)
    pts = colmap.ColmapPoints.from_arrays(rng.normal([10, -4, 2], 1, (30, 3)), rng.integers(0, 256, (30, 3)))
    colmap.write_model(root / "sparse" / "0", [cam], images, pts, binary=binary)
    return cam, images, pts


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
@pytest.mark.parametrize("model", list(PARAMS))
def test_colmap_dataset_poses_and_points(tmp_path, binary, model):
    cam, images, pts = _write_dataset(tmp_path / "ds", binary, model)
    ds = load_dataset(tmp_path / "ds", test_every=4)
    assert ds.format == "colmap" and ds.camera_models == [model]
    names = sorted(im.name for im in images)
    assert [v.camera.image_name for v in ds.split("test")] == names[::4]
    assert len(ds.split("train")) == len(images) - len(names[::4])
    norm = ds.normalization
    by_name = {im.name: im for im in images}
    for v in ds.split("train") + ds.split("test"):
        im = by_name[v.camera.image_name]
        c = v.camera
        assert c.model == model and (c.width, c.height) == (64, 48)
        # pose: the same world-to-camera after undoing the normalisation
        R = c.world_to_camera[:3, :3]
        assert np.allclose(R, colmap.qvec_to_rotmat(im.qvec))
        assert np.allclose(c.center * norm.scale + norm.center, -colmap.qvec_to_rotmat(im.qvec).T @ im.tvec)
        fx, fy, cx, cy, dist = cam.pinhole_and_distortion()
        if not np.any(dist):
            assert (c.fx, c.fy, c.cx, c.cy) == (fx, fy, cx, cy)
        else:  # undistorted: a new pinhole camera that sees only valid pixels (zoomed in)
            assert c.fx != fx
        img = ds.image(v)
        assert tuple(img.shape) == (48, 64, 3)
    assert np.allclose(ds.points * norm.scale + norm.center, pts.xyz, atol=1e-5)
    assert np.array_equal(ds.point_colors, pts.rgb)


def test_downscale_uses_images_n_or_resizes(tmp_path, _cache):
    _write_dataset(tmp_path / "ds", True, "PINHOLE", n=4)
    full = load_dataset(tmp_path / "ds")
    ds = load_dataset(tmp_path / "ds", downscale=2)
    v = ds.split("train")[0]
    assert (v.camera.width, v.camera.height) == (32, 24)
    assert v.camera.fx == pytest.approx(full.split("train")[0].camera.fx / 2)
    src = np.asarray(Image.open(v.image_path), dtype=np.float32)
    ref = cv2.resize(src, (32, 24), interpolation=cv2.INTER_AREA)
    assert_close(ds.image(v).numpy() * 255, ref, rtol=0, atol=0.51, what="image")
    assert len(list(_cache.rglob("*.png"))) == 1
    # a cache hit returns the same pixels without decoding the source again
    ds2 = load_dataset(tmp_path / "ds", downscale=2)
    assert np.array_equal(ds2.image(ds2.split("train")[0]).numpy(), ds.image(v).numpy())

    # images_2/ present: its files are used as they are (here: deliberately different content)
    (tmp_path / "ds" / "images_2").mkdir()
    for p in (tmp_path / "ds" / "images").iterdir():
        Image.fromarray(np.full((24, 32, 3), 77, np.uint8)).save(tmp_path / "ds" / "images_2" / p.name)
    ds = load_dataset(tmp_path / "ds", downscale=2)
    v = ds.split("train")[0]
    assert v.image_path.parent.name == "images_2" and (v.camera.width, v.camera.height) == (32, 24)
    assert np.allclose(ds.image(v).numpy(), 77 / 255)


def test_test_names_and_missing_image(tmp_path):
    _, images, _ = _write_dataset(tmp_path / "ds", False, "SIMPLE_PINHOLE", n=6)
    ds = load_dataset(tmp_path / "ds", test_names=["0001.png", "0003"])
    assert [v.camera.image_name for v in ds.split("test")] == ["0001.png", "0003.png"]
    assert len(ds.split("train")) == 4
    with pytest.raises(UserError, match="nope"):
        load_dataset(tmp_path / "ds", test_names=["nope.png"])
    (tmp_path / "ds" / "images" / "0002.png").unlink()
    with pytest.raises(UserError) as ei:
        load_dataset(tmp_path / "ds")
    assert "0002.png" in str(ei.value) and "images.txt" in str(ei.value)


def test_sparse_directly_and_camera_reference(tmp_path):
    _write_dataset(tmp_path / "ds", True, "PINHOLE", n=3)
    (tmp_path / "ds" / "sparse" / "0").rename(tmp_path / "ds" / "sparse_tmp")
    (tmp_path / "ds" / "sparse").rmdir()
    (tmp_path / "ds" / "sparse_tmp").rename(tmp_path / "ds" / "sparse")
    assert len(load_dataset(tmp_path / "ds", test_every=0).split("train")) == 3
    ims = colmap.read_images_binary(tmp_path / "ds" / "sparse" / "images.bin")
    ims[1].camera_id = 99
    colmap.write_images_binary(ims, tmp_path / "ds" / "sparse" / "images.bin")
    with pytest.raises(UserError, match="camera 99"):
        load_dataset(tmp_path / "ds")


# ---- LLFF layout: images_N/ named image000.png, ... while the model names IMG_4026.JPG, ... ---------------
def _llff_colour(k: int) -> np.ndarray:
    return np.array([(40 * k + 20) % 256, 255 - (25 * k) % 200, (90 + 55 * k) % 256], dtype=np.uint8)


def _write_llff(root: Path, n: int = 8, size=(256, 192), factors=(4, 8), seed: int = 1, unregistered=None):
    """The layout of the LLFF captures (fern, flower, ...): COLMAP names ``IMG_40xx.JPG`` (in
    ``images/`` at full size), ``images_4/`` and ``images_8/`` hold ``image000.png``, ... in the same
    sorted order. The model's images are listed in a shuffled order; each image is one flat colour
    (its sorted position's), so the test can tell which file a camera got."""
    rng = np.random.default_rng(seed)
    w, h = size
    cam = colmap.ColmapCamera(1, "PINHOLE", w, h, [0.8 * w, 0.8 * w, w / 2, h / 2])
    names = [f"IMG_{4026 + 3 * i}.JPG" for i in range(n)]
    images = []
    for i, name in enumerate(names):
        ang = 2 * np.pi * i / n
        eye = np.array([4 * np.cos(ang), 4 * np.sin(ang), 1.0])
        z = -eye / np.linalg.norm(eye)
        x = np.cross(z, [0, 0, 1.0])
        x /= np.linalg.norm(x)
        R = np.stack([x, np.cross(z, x), z])
        images.append(colmap.ColmapImage(100 + i, colmap.rotmat_to_qvec(R), -R @ eye, 1, name))
    for d in ["images"] + [f"images_{f}" for f in factors]:
        (root / d).mkdir(parents=True)
    for k, name in enumerate(sorted(names)):
        Image.fromarray(np.broadcast_to(_llff_colour(k), (h, w, 3)).copy()).save(root / "images" / name, quality=95)
        for f in factors:
            Image.fromarray(np.broadcast_to(_llff_colour(k), (h // f, w // f, 3)).copy()).save(
                root / f"images_{f}" / f"image{k:03d}.png"
            )
    order = [i for i in rng.permutation(n) if i != unregistered]  # COLMAP may not register every image
    pts = colmap.ColmapPoints.from_arrays(rng.normal(0, 0.5, (200, 3)), rng.integers(0, 256, (200, 3)))
    colmap.write_model(root / "sparse" / "0", [cam], [images[i] for i in order], pts, binary=True)
    return names


@pytest.mark.parametrize("factor", [4, 8])
def test_llff_layout_matches_images_n_by_sorted_order(tmp_path, capsys, factor):
    from conftest import run_cli

    names = _write_llff(tmp_path / "ds")
    ds = load_dataset(tmp_path / "ds", downscale=factor, test_every=4)
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("splatdistill: warning: ") and "sorted order" in lines[0]
    assert f"images_{factor}" in lines[0] and "image000.png = IMG_4026.JPG" in lines[0]
    rank = {nm: k for k, nm in enumerate(sorted(names))}
    views = ds.split("train") + ds.split("test")
    assert len(views) == len(names)
    for v in views:
        k = rank[v.camera.image_name]
        assert v.image_path == tmp_path / "ds" / f"images_{factor}" / f"image{k:03d}.png"
        assert (v.camera.width, v.camera.height) == (256 // factor, 192 // factor)
        assert v.camera.fx == pytest.approx(0.8 * 256 / factor)
        img = ds.image(v).numpy()  # the camera's own image
        assert_close(img * 255, np.broadcast_to(_llff_colour(k), img.shape), rtol=0, atol=0.51, what=v.image_path.name)
    # ... and the whole training command on it
    code, out, err = run_cli(
        capsys,
        "train",
        tmp_path / "ds",
        "--out",
        tmp_path / f"run{factor}",
        "--downscale",
        factor,
        "--iterations",
        6,
        "--init-points",
        200,
        "--checkpoint-every",
        1000,
        "--no-eval",
    )
    assert code == 0, err
    assert (tmp_path / f"run{factor}" / "point_cloud.ply").is_file()


def test_llff_layout_mismatches_fail_in_one_line(tmp_path, capsys):
    from conftest import assert_one_line_error, run_cli

    _write_llff(tmp_path / "ds", factors=(8,))
    (tmp_path / "ds" / "images_8" / "image003.png").unlink()  # 7 files for 8 cameras
    code, _, err = run_cli(capsys, "info", tmp_path / "ds")  # full size: images/ is complete
    assert code == 0, err
    code, _, err = run_cli(capsys, "train", tmp_path / "ds", "--out", tmp_path / "run", "--downscale", 8)
    assert_one_line_error(code, err, "images_8", "holds 7 images, not 8", "sorted order")
    assert not (tmp_path / "run").exists()
    # as many files, but not the 1/8-size images of these cameras
    Image.fromarray(np.zeros((96, 128, 3), np.uint8)).save(tmp_path / "ds" / "images_8" / "image003.png")
    for p in (tmp_path / "ds" / "images_8").iterdir():
        Image.fromarray(np.zeros((96, 128, 3), np.uint8)).save(p)
    code, _, err = run_cli(capsys, "train", tmp_path / "ds", "--out", tmp_path / "run", "--downscale", 8)
    assert_one_line_error(code, err, "image000.png", "is 128x96", "32x24")


def test_llff_layout_with_an_unregistered_image_maps_through_images(tmp_path, capsys):
    """COLMAP registered 7 of the 8 photos: images_8/ still holds 8 files; they are matched through
    the sorted files of images/ (gsplat's convention), so every camera still gets its own image."""
    names = _write_llff(tmp_path / "ds", factors=(8,), unregistered=2)  # IMG_4032.JPG (sorted position 2)
    ds = load_dataset(tmp_path / "ds", downscale=8, test_every=0)
    assert "sorted order" in capsys.readouterr().err
    rank = {nm: k for k, nm in enumerate(sorted(names))}
    views = ds.split("train")
    assert len(views) == 7 and names[2] not in {v.camera.image_name for v in views}
    for v in views:
        k = rank[v.camera.image_name]
        assert v.image_path.name == f"image{k:03d}.png"
        img = ds.image(v).numpy()
        assert_close(img * 255, np.broadcast_to(_llff_colour(k), img.shape), rtol=0, atol=0.51, what=v.image_path.name)
