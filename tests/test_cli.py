"""The command line: reports, round trips, and one-line errors with exit code 2 for bad inputs."""

import json
import struct

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli, shared_path
from helpers import random_scene
from splatdistill.cli import main
from splatdistill.formats.ply import read_ply, write_ply


def test_info_lego(capsys):
    lego = shared_path("nerf_synthetic", "lego")
    code, out, _ = run_cli(capsys, "info", lego, "--json")
    assert code == 0
    d = json.loads(out)
    assert (d["kind"], d["format"], d["num_train"], d["num_test"], d["width"], d["height"]) == (
        "dataset",
        "blender",
        100,
        200,
        400,
        400,
    )


def test_info_beer(capsys):
    beer = shared_path("colmap", "beer")
    code, out, _ = run_cli(capsys, "info", beer, "--json")
    d = json.loads(out)
    assert code == 0
    assert (d["format"], d["camera_models"], d["num_train"], d["num_test"]) == ("colmap", ["SIMPLE_RADIAL"], 62, 9)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_info_and_convert_ply_bit_exact(capsys, tmp_path, degree):
    scene = random_scene(50, degree)
    src, dst = tmp_path / "in.ply", tmp_path / "out.ply"
    write_ply(scene, src)
    code, out, _ = run_cli(capsys, "info", src, "--json")
    d = json.loads(out)
    assert (d["kind"], d["num_gaussians"], d["sh_degree"], d["bytes"]) == ("model", 50, degree, src.stat().st_size)
    assert np.allclose(d["bbox_min"], scene.means.min(0).values.numpy())
    assert run_cli(capsys, "convert", src, dst)[0] == 0
    back = read_ply(dst)
    for k, v in scene.items():
        assert torch.equal(v.view(torch.int32), back.params[k].view(torch.int32)), k


def test_truncated_ply(capsys, tmp_path):
    p = tmp_path / "t.ply"
    write_ply(random_scene(), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "info", p)
    assert_one_line_error(code, err, str(p))


def test_ply_with_nan(capsys, tmp_path):
    p = tmp_path / "nan.ply"
    write_ply(random_scene(), p)
    raw = bytearray(p.read_bytes())
    header_end = raw.index(b"end_header\n") + len(b"end_header\n")
    raw[header_end + 4 * 7 : header_end + 4 * 8] = struct.pack("<f", float("nan"))  # f_dc_1 of vertex 0
    p.write_bytes(bytes(raw))
    code, _, err = run_cli(capsys, "convert", p, tmp_path / "o.ply")
    assert_one_line_error(code, err, str(p), "f_dc_1")


def test_json_without_frames(capsys, tmp_path):
    (tmp_path / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.7}))
    code, _, err = run_cli(capsys, "info", tmp_path)
    assert_one_line_error(code, err, "transforms_train.json", "frames")


def test_unsupported_camera_model(capsys, tmp_path):
    sparse = tmp_path / "sparse" / "0"
    sparse.mkdir(parents=True)
    (tmp_path / "images").mkdir()
    (sparse / "cameras.txt").write_text("1 FISHEYE 100 100 50 50 50 0\n")
    (sparse / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n")
    (sparse / "points3D.txt").write_text("")
    code, _, err = run_cli(capsys, "info", tmp_path)
    assert_one_line_error(code, err, "cameras.txt", "FISHEYE")


def test_image_listed_but_missing(capsys, demo_scene_dir, tmp_path):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(demo_scene_dir, ds)
    (ds / "train" / "r_3.png").unlink()
    code, _, err = run_cli(capsys, "info", ds)
    assert_one_line_error(code, err, "r_3.png")
    write_ply(random_scene(), tmp_path / "m.ply")
    code, _, err = run_cli(capsys, "eval", tmp_path / "m.ply", "--data", ds, "--no-lpips")
    assert_one_line_error(code, err, "r_3.png")


def test_make_scene_render_orbit_and_rerender_same_cameras(capsys, tmp_path):
    scene = random_scene(200, 1, log_scales=(-4.0, -2.0))
    m = tmp_path / "m.ply"
    write_ply(scene, m)
    code, _, _ = run_cli(
        capsys,
        "render",
        m,
        "--orbit",
        "3",
        "--width",
        "32",
        "--height",
        "24",
        "--out",
        tmp_path / "a",
        "--backend",
        "cpu",
    )
    assert code == 0
    cams = json.loads((tmp_path / "a" / "cameras.json").read_text())["cameras"]
    assert len(cams) == 3
    code, _, _ = run_cli(
        capsys, "render", m, "--cameras", tmp_path / "a" / "cameras.json", "--out", tmp_path / "b", "--backend", "cpu"
    )
    assert code == 0
    a = sorted((tmp_path / "a").glob("*.png"))
    b = sorted((tmp_path / "b").glob("*.png"))
    assert [p.name for p in a] == [p.name for p in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    from PIL import Image

    imgs = [np.asarray(Image.open(p)) for p in a]
    assert imgs[0].shape == (24, 32, 3)
    assert not np.array_equal(imgs[0], imgs[1])  # the views differ


def test_render_needs_exactly_one_camera_source(capsys, tmp_path):
    m = tmp_path / "m.ply"
    write_ply(random_scene(), m)
    code, _, err = run_cli(capsys, "render", m, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "--orbit")


def test_metrics_lpips_reference_values(capsys):
    ref = shared_path("lpips_reference")
    code, out, _ = run_cli(capsys, "metrics", ref / "ex_ref.png", ref / "ex_p0.png", "--json")
    assert code == 0
    d = json.loads(out)
    assert abs(d["lpips_alex"] - 0.722) <= 0.001
    code, out, _ = run_cli(capsys, "metrics", ref / "ex_ref.png", ref / "ex_p1.png", "--json")
    assert abs(json.loads(out)["lpips_alex"] - 0.138) <= 0.001
    code, out, _ = run_cli(capsys, "metrics", ref / "ex_ref.png", ref / "ex_ref.png", "--json")
    d = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    # strict JSON has no Infinity: an infinite PSNR (identical images) is null, the reason beside it
    assert d["psnr"] is None and "identical" in d["psnr_note"]
    assert d["ssim"] == pytest.approx(1.0) and d["lpips_alex"] == 0.0
    assert d["lpips_vgg"] == 0.0


def test_help_on_every_command(capsys):
    from splatdistill.cli import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "usage" in out.lower()


def test_outputs_get_ordinary_file_permissions(tmp_path):
    import os
    import stat

    from splatdistill.fileio import write_bytes_atomic

    old = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "x.bin", b"abc")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.bin").stat().st_mode) == 0o644
    assert (tmp_path / "x.bin").read_bytes() == b"abc"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]  # no temporary left behind


@pytest.mark.parametrize(
    "exc",
    [
        MemoryError(),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1"),
        type("OutOfMemoryError", (RuntimeError,), {})("boom"),
    ],
)
def test_out_of_memory_is_one_line(capsys, monkeypatch, exc):
    import splatdistill.commands.info as info_mod

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(info_mod, "describe", boom)
    code, _, err = run_cli(capsys, "info", "anything")
    assert_one_line_error(code, err, "out of memory")


def test_other_errors_are_not_hidden(monkeypatch):
    import splatdistill.commands.info as info_mod
    from splatdistill.cli import main

    def boom(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(info_mod, "describe", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["info", "anything"])
