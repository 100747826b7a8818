"""The procedural demo dataset: determinism, variety, coverage, and poses in the Blender convention."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from PIL import Image

from helpers import assert_close
from splatdistill.cameras.camera import look_at
from splatdistill.data.demo_scene import make_demo_scene
from splatdistill.errors import UserError

RES, TRAIN, TEST = 32, 6, 3


def gen(path, seed=0):
    return make_demo_scene(path, resolution=RES, train_views=TRAIN, test_views=TEST, seed=seed)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return gen(tmp_path_factory.mktemp("demo") / "scene")


def all_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def images(root, split):
    doc = json.loads((root / f"transforms_{split}.json").read_text())
    return [np.asarray(Image.open(root / (f["file_path"] + ".png"))) for f in doc["frames"]]


def test_layout(scene):
    files = all_files(scene)
    expected = {f"train/r_{i}.png" for i in range(TRAIN)} | {f"test/r_{i}.png" for i in range(TEST)}
    expected |= {"transforms_train.json", "transforms_test.json", "transforms_val.json", "scene.json"}
    assert set(files) == expected  # no temp files left behind
    for split, n in (("train", TRAIN), ("test", TEST), ("val", TEST)):
        doc = json.loads(files[f"transforms_{split}.json"])
        assert doc["camera_angle_x"] == pytest.approx(0.7)
        assert len(doc["frames"]) == n
        folder = "train" if split == "train" else "test"
        assert [f["file_path"] for f in doc["frames"]] == [f"./{folder}/r_{i}" for i in range(n)]
    im = Image.open(scene / "train/r_0.png")
    assert im.mode == "RGBA" and im.size == (RES, RES)


def test_deterministic(scene, tmp_path):
    again = gen(tmp_path / "again")
    assert all_files(scene) == all_files(again)


def test_seed_changes_images(scene, tmp_path):
    other = gen(tmp_path / "other", seed=1)
    a, b = images(scene, "train"), images(other, "train")
    assert all(not np.array_equal(x, y) for x, y in zip(a, b))


def test_views_differ_and_are_covered(scene):
    ims = images(scene, "train") + images(scene, "test")
    for x, y in itertools.combinations(ims, 2):
        assert np.abs(x.astype(int) - y.astype(int)).mean() > 2.0
    for im in ims:
        alpha = im[..., 3]
        assert (alpha == 0).any() and (alpha == 255).any()
        assert ((alpha > 0) & (alpha < 255)).any()  # antialiased, soft edges
        assert 0.12 < (alpha > 0).mean() < 0.7
        border = np.concatenate([alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]])
        assert (border == 0).all()  # nothing cropped
        rgb = im[..., :3][alpha > 0]
        assert rgb.std(axis=0).mean() > 20  # textured, not flat
        assert (im[..., :3][alpha == 0] == 0).all()


def test_poses_project_origin_to_centre(scene):
    for split in ("train", "test"):
        doc = json.loads((scene / f"transforms_{split}.json").read_text())
        f = 0.5 * RES / math.tan(0.5 * doc["camera_angle_x"])
        centres = []
        for frame in doc["frames"]:
            c2w = np.array(frame["transform_matrix"], dtype=np.float64)
            assert c2w.shape == (4, 4)
            assert np.allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-9)
            # OpenGL -> OpenCV: invert, then flip the camera's y and z axes
            w2c = np.diag([1.0, -1.0, -1.0, 1.0]) @ np.linalg.inv(c2w)
            p = w2c @ np.array([0.0, 0.0, 0.0, 1.0])
            assert p[2] > 2.5  # in front of the camera
            u, v = f * p[0] / p[2] + RES / 2, f * p[1] / p[2] + RES / 2
            assert abs(u - RES / 2) < 1.0 and abs(v - RES / 2) < 1.0
            # camera above the ground, world z up appears as image up (-y in OpenCV)
            assert c2w[2, 3] > 0.5
            assert (w2c[:3, :3] @ np.array([0.0, 0.0, 1.0]))[1] < 0
            centres.append(c2w[:3, 3])
        for a, b in itertools.combinations(centres, 2):
            assert np.linalg.norm(a - b) > 0.1


def test_test_views_differ_from_train(scene):
    train = [
        np.array(f["transform_matrix"]) for f in json.loads((scene / "transforms_train.json").read_text())["frames"]
    ]
    test = [np.array(f["transform_matrix"]) for f in json.loads((scene / "transforms_test.json").read_text())["frames"]]
    for a in train:
        for b in test:
            assert np.linalg.norm(a[:3, 3] - b[:3, 3]) > 0.05


def test_poses_are_the_cameras_modules_look_at(scene):
    """The demo's own look-at (plain Python floats, for bit-for-bit reproducible poses) is the same matrix
    as ``cameras.look_at`` of the camera's centre and the origin."""
    for split in ("train", "test"):
        for frame in json.loads((scene / f"transforms_{split}.json").read_text())["frames"]:
            # Blender -> OpenCV: flip the camera's y and z axes; then the rigid inverse
            c2w = np.array(frame["transform_matrix"], dtype=np.float64) * np.array([1.0, -1.0, -1.0, 1.0])
            eye = c2w[:3, 3]
            w2c = np.eye(4)
            w2c[:3, :3] = c2w[:3, :3].T
            w2c[:3, 3] = -c2w[:3, :3].T @ eye
            assert_close(w2c, look_at(eye, np.zeros(3)), rtol=0, atol=1e-12, what=frame["file_path"])


def test_reuse_and_repair(scene, tmp_path):
    d = gen(tmp_path / "s")
    stamp = {p: p.stat().st_mtime_ns for p in d.rglob("*.png")}
    assert gen(d) == d  # complete and verified: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in d.rglob("*.png")} == stamp
    (d / "train/r_2.png").write_bytes(b"damaged")
    gen(d)
    assert all_files(d) == all_files(scene)
    # other parameters: regenerated, files of the old scene removed
    make_demo_scene(d, resolution=RES, train_views=2, test_views=1, seed=0)
    assert not (d / "train/r_5.png").exists() and (d / "train/r_1.png").exists()
    meta = json.loads((d / "scene.json").read_text())
    assert meta["params"]["train_views"] == 2


def test_refuses_foreign_dataset(tmp_path):
    (tmp_path / "transforms_train.json").write_text("{}")
    with pytest.raises(UserError, match="not a splatdistill demo scene"):
        gen(tmp_path)
    with pytest.raises(UserError):
        make_demo_scene(tmp_path / "x", resolution=2)
