"""A corpus of hostile inputs and faults at the command line.

Every case is something anyone can type (or do: kill -9, Ctrl-C, two jobs on one folder, a closed
pipe, a read-only disk). Each asserts: exit code 2 (130 for SIGINT), exactly one line on stderr,
no traceback, and no half-written or mixed output. In-process (``run_cli``) wherever possible;
subprocesses only for signals, concurrency, pipes and read-only mounts.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, run_cli
from helpers import random_scene
from splatdistill.formats.ply import write_ply

TINY = dict(resolution=24, train_views=4, test_views=2, seed=0)
TRAIN = ["--iterations", "40", "--init-points", "200", "--no-eval"]
# the teacher term on (--lambda-kd 0.4), so every stage of a distillation runs: teachers, soft targets, student
DISTILL = [
    "--iterations",
    "6",
    "--teacher-iterations",
    "12",
    "--teacher-init-points",
    "100",
    "--pseudo-views",
    "2",
    "--device",
    "cpu",
    "--lambda-kd",
    "0.4",
]
COMPRESS = ["--iterations", "6", "--views", "4", "--resolution", "16", "--no-lpips", "--device", "cpu"]


def visible_lines(err: str) -> list[str]:
    """The lines a terminal shows: a progress bar redrawn with carriage returns (and cleared) is not one."""
    return [seg for line in err.split("\n") if (seg := line.split("\r")[-1].strip())]


def assert_one_visible_error(code, err, *needles):
    assert code == 2, err[-2000:]
    lines = visible_lines(err)
    assert len(lines) == 1 and lines[0].startswith("splatdistill: error: "), err[-2000:]
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def strict_json(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


# the workspace's models: the shared factory's Gaussians, near the origin
SMALL_MODEL = {"n": 60, "degree": 1, "extent": 0.3, "log_scales": (-4.0, -2.0)}


class W:
    """The shared workspace: a tiny dataset, a model, and the files built from them."""

    def __init__(self, root: Path):
        from splatdistill.data.demo_scene import make_demo_scene

        self.root = root
        self.scene = make_demo_scene(root / "scene", **TINY)
        self.model = root / "model.ply"
        write_ply(random_scene(**SMALL_MODEL), self.model)
        self.png = self.scene / "train" / "r_0.png"


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> W:
    return W(tmp_path_factory.mktemp("hostile"))


# --- file builders -----------------------------------------------------------------------------------
def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def nerfstudio(ws: W, tmp: Path, frame=None, **top) -> Path:
    """A one-frame nerfstudio dataset with the given top-level (intrinsics) keys."""
    d = tmp / "ns"
    (d / "images").mkdir(parents=True, exist_ok=True)
    shutil.copy(ws.png, d / "images" / "a.png")
    doc = {
        "fl_x": 30.0,
        "fl_y": 30.0,
        "cx": 12.0,
        "cy": 12.0,
        "w": 24,
        "h": 24,
        **top,
        "frames": [frame or {"file_path": "images/a.png", "transform_matrix": np.eye(4).tolist()}],
    }
    _write(d / "transforms.json", json.dumps(doc))
    return d


def colmap(
    w: W, tmp: Path, cameras="1 PINHOLE 24 24 30 30 12 12\n", images="1 1 0 0 0 0 0 4 1 a.png\n\n", points=""
) -> Path:
    d = tmp / "colmap"
    (d / "images").mkdir(parents=True, exist_ok=True)
    shutil.copy(w.png, d / "images" / "a.png")
    s = d / "sparse" / "0"
    s.mkdir(parents=True, exist_ok=True)
    if cameras is not None:
        _write(s / "cameras.txt", cameras)
    _write(s / "images.txt", images)
    _write(s / "points3D.txt", points)
    return d


def blender(w: W, tmp: Path, edit) -> Path:
    """A copy of the tiny dataset with transforms_train.json edited by ``edit(doc)``."""
    d = tmp / "bl"
    shutil.copytree(w.scene, d)
    j = d / "transforms_train.json"
    doc = json.loads(j.read_text())
    edit(doc)
    j.write_text(json.dumps(doc))
    return d


def _damaged(p: Path, data: bytes, kind: str, keep: int, garbage: int) -> Path | None:
    """The damage every file type gets: cut to ``keep`` bytes, random bytes, empty; None for others."""
    if kind == "truncated":
        return _write(p, data[:keep])
    if kind == "garbage":
        return _write(p, os.urandom(garbage))
    if kind == "empty":
        return _write(p, b"")
    return None


def bad_ply(w: W, tmp: Path, kind: str) -> Path:
    p = tmp / f"{kind}.ply"
    data = w.model.read_bytes()
    if (d := _damaged(p, data, kind, len(data) // 2, 300)) is not None:
        return d
    if kind == "header_only":
        return _write(p, data[: data.index(b"end_header\n") + 11])
    if kind == "nan":
        raw = bytearray(data)
        h = raw.index(b"end_header\n") + 11
        raw[h : h + 4] = np.float32(np.nan).tobytes()
        return _write(p, bytes(raw))
    raise ValueError(kind)


def bad_spz(w: W, tmp: Path, kind: str) -> Path:
    from splatdistill.formats.ply import read_ply
    from splatdistill.formats.spz import write_spz

    good = tmp / "good.spz"
    write_spz(read_ply(w.model), good)
    data = good.read_bytes()
    p = tmp / f"{kind}.spz"
    if (d := _damaged(p, data, kind, len(data) // 2, 200)) is not None:
        return d
    if kind == "bad_magic":  # a version-3 file (one gzip stream) whose inner header is not SPZ's
        write_spz(read_ply(w.model), good, version=3)
        raw = bytearray(gzip.decompress(good.read_bytes()))
        raw[0:4] = b"XXXX"
        return _write(p, gzip.compress(bytes(raw)))
    if kind == "bad_magic_v4":  # a version-4 file whose plain header does not start with 'NGSP'
        return _write(p, b"XXXX" + data[4:])
    raise ValueError(kind)


def bad_sdz(w: W, tmp: Path, kind: str) -> Path:
    from splatdistill.formats.ply import read_ply
    from splatdistill.formats.sdz import save_sdz

    good = tmp / "good.sdz"
    save_sdz(read_ply(w.model), good)
    data = good.read_bytes()
    p = tmp / f"{kind}.sdz"
    if (d := _damaged(p, data, kind, len(data) - 40, 200)) is not None:
        return d
    raise ValueError(kind)


def file_at(tmp: Path, name="afile") -> Path:
    return _write(tmp / name, "not a folder")


# --- the table: (id, args(w, tmp), needles) ------------------------------------------------------------
M, S = "MODEL", "SCENE"  # placeholders replaced by the workspace's model and dataset


def _a(*args):
    return lambda w, tmp: [w.model if a == M else w.scene if a == S else a for a in args]


CASES = [
    # flags tyro rejects: one line, choices listed, nearest flag suggested
    ("float_for_int", _a("train", S, "--out", "o", "--downscale", "3.5"), ["--downscale", "integer", "3.5"]),
    (
        "bad_choice_background",
        _a("train", S, "--out", "o", "--background", "nonsense"),
        ["nonsense", "dataset, random"],
    ),
    ("bad_choice_backend", _a("render", M, "--out", "o", "--backend", "foo"), ["--backend", "foo", "gsplat"]),
    ("bad_choice_device", _a("eval", M, "--data", S, "--device", "tpu"), ["--device", "tpu", "cuda"]),
    ("bad_choice_quality", _a("compress", M, "--out", "o", "--quality", "ultra"), ["--quality", "ultra", "balanced"]),
    ("unknown_flag", _a("info", M, "--jsn"), ["--jsn", "did you mean --json"]),
    ("misspelt_flag", _a("train", S, "--out", "o", "--iteratons", "5"), ["--iteratons", "--iterations"]),
    ("missing_out", _a("train", S), ["--out", "missing"]),
    ("missing_positional", _a("convert", M), ["DST", "missing"]),
    ("unknown_command", _a("trian", S), ["unknown command", "trian", "did you mean train"]),
    ("no_command", _a(), ["missing command", "info"]),
    ("flag_before_command", _a("--jsn"), ["--jsn"]),
    ("text_for_int", _a("render", M, "--out", "o", "--width", "abc"), ["--width", "integer", "abc"]),
    ("text_for_float", _a("distill", S, "--out", "o", "--keep", "lots"), ["--keep", "number", "lots"]),
    ("flag_without_value", _a("train", S, "--out", "o", "--iterations"), ["--iterations"]),
    ("extra_positional", _a("info", M, "extra"), ["unexpected", "extra"]),
    # values checked against their meaning, before any work
    ("width_zero", _a("render", M, "--out", "o", "--orbit", "2", "--width", "0"), ["--width", "at least 1", "0"]),
    ("width_negative", _a("render", M, "--out", "o", "--orbit", "2", "--width", "-5"), ["--width", "-5"]),
    ("height_zero", _a("render", M, "--out", "o", "--orbit", "2", "--height", "0"), ["--height"]),
    ("orbit_zero", _a("render", M, "--out", "o", "--orbit", "0"), ["--orbit"]),
    ("lambda_kd_nan", _a("distill", S, "--out", "o", "--lambda-kd", "nan"), ["--lambda-kd", "finite"]),
    ("lambda_gt_negative", _a("distill", S, "--out", "o", "--lambda-gt", "-1"), ["--lambda-gt"]),
    ("keep_zero", _a("distill", S, "--out", "o", "--keep", "0"), ["--keep", "(0, 1]"]),
    ("keep_inf", _a("distill", S, "--out", "o", "--keep", "inf"), ["--keep", "finite"]),
    ("target_gaussians_zero", _a("distill", S, "--out", "o", "--target-gaussians", "0"), ["--target-gaussians"]),
    ("teacher_iterations_zero", _a("distill", S, "--out", "o", "--teacher-iterations", "0"), ["--teacher-iterations"]),
    ("iterations_zero", _a("train", S, "--out", "o", "--iterations", "0"), ["--iterations", "at least 1"]),
    ("iterations_negative", _a("train", S, "--out", "o", "--iterations", "-3"), ["--iterations"]),
    ("checkpoint_every_zero", _a("train", S, "--out", "o", "--checkpoint-every", "0"), ["--checkpoint-every"]),
    ("init_points_zero", _a("train", S, "--out", "o", "--init-points", "0"), ["--init-points"]),
    ("downscale_zero", _a("eval", M, "--data", S, "--downscale", "0"), ["--downscale"]),
    ("seed_negative", _a("train", S, "--out", "o", "--seed", "-1"), ["--seed"]),
    ("prune_one", _a("compress", M, "--out", "o", "--prune", "1.0"), ["--prune", "[0, 1)"]),
    ("sh_degree_four", _a("compress", M, "--out", "o", "--sh-degree", "4"), ["--sh-degree", "0..3"]),
    ("vq_ratio_two", _a("compress", M, "--out", "o", "--vq-ratio", "2"), ["--vq-ratio"]),
    ("resolution_tiny", _a("compress", M, "--out", "o", "--resolution", "4"), ["--resolution"]),
    ("scene_resolution_zero", _a("make-scene", "o", "--resolution", "0"), ["--resolution"]),
    ("resume_and_overwrite", _a("train", S, "--out", "o", "--resume", "--overwrite"), ["--resume", "--overwrite"]),
    ("two_camera_sources", _a("render", M, "--out", "o", "--orbit", "2", "--data", S), ["exactly one"]),
    # output paths: a file where a folder is needed, a folder where a file is, a path under a file
    ("train_out_is_file", lambda w, t: ["train", w.scene, "--out", file_at(t), *TRAIN], ["afile", "not a folder"]),
    ("render_out_is_file", lambda w, t: ["render", w.model, "--out", file_at(t), "--orbit", "1"], ["afile"]),
    ("distill_out_is_file", lambda w, t: ["distill", w.scene, "--out", file_at(t)], ["afile", "not a folder"]),
    ("compress_out_is_file", lambda w, t: ["compress", w.model, "--out", file_at(t)], ["afile"]),
    ("scene_out_under_file", lambda w, t: ["make-scene", file_at(t) / "s"], ["afile", "not a folder"]),
    (
        "eval_out_under_file",
        lambda w, t: ["eval", w.model, "--data", w.scene, "--out", file_at(t) / "m.json"],
        ["afile", "not a folder"],
    ),
    ("eval_out_is_dir", lambda w, t: ["eval", w.model, "--data", w.scene, "--out", t], ["is a folder"]),
    ("convert_to_dir", lambda w, t: ["convert", w.model, t], ["is a folder"]),
    ("convert_under_file", lambda w, t: ["convert", w.model, file_at(t) / "x.ply"], ["afile"]),
    ("convert_unknown_format", lambda w, t: ["convert", w.model, t / "x.obj"], [".obj"]),
    # malformed models: PLY, SPZ, .sdz, unknown
    ("ply_truncated", lambda w, t: ["info", bad_ply(w, t, "truncated")], ["truncated.ply"]),
    ("ply_garbage", lambda w, t: ["info", bad_ply(w, t, "garbage")], ["garbage.ply"]),
    ("ply_empty", lambda w, t: ["info", bad_ply(w, t, "empty")], ["empty.ply"]),
    ("ply_header_only", lambda w, t: ["info", bad_ply(w, t, "header_only")], ["header_only.ply"]),
    ("ply_nan", lambda w, t: ["convert", bad_ply(w, t, "nan"), t / "o.ply"], ["nan.ply"]),
    ("spz_garbage", lambda w, t: ["info", bad_spz(w, t, "garbage")], ["garbage.spz"]),
    ("spz_truncated", lambda w, t: ["info", bad_spz(w, t, "truncated")], ["truncated.spz"]),
    ("spz_empty", lambda w, t: ["info", bad_spz(w, t, "empty")], ["empty.spz"]),
    ("spz_bad_magic", lambda w, t: ["info", bad_spz(w, t, "bad_magic")], ["bad_magic.spz"]),
    ("spz_bad_magic_v4", lambda w, t: ["info", bad_spz(w, t, "bad_magic_v4")], ["bad_magic_v4.spz"]),
    ("sdz_garbage", lambda w, t: ["info", bad_sdz(w, t, "garbage")], ["garbage.sdz"]),
    ("sdz_truncated", lambda w, t: ["info", bad_sdz(w, t, "truncated")], ["truncated.sdz"]),
    ("sdz_empty", lambda w, t: ["convert", bad_sdz(w, t, "empty"), t / "o.ply"], ["empty.sdz"]),
    ("model_unknown_suffix", lambda w, t: ["info", _write(t / "m.xyz", "x")], ["m.xyz", "format"]),
    ("model_missing", lambda w, t: ["eval", t / "nope.ply", "--data", w.scene], ["nope.ply"]),
    # datasets: transforms.json (nerfstudio / blender), COLMAP, images
    ("ns_width_zero", lambda w, t: ["info", nerfstudio(w, t, w=0)], ["transforms.json", "1x1"]),
    ("ns_focal_zero", lambda w, t: ["info", nerfstudio(w, t, fl_x=0, fl_y=0)], ["transforms.json", "focal"]),
    (
        "ns_angle_zero",
        lambda w, t: ["info", nerfstudio(w, t, fl_x=None, fl_y=None, camera_angle_x=0)],
        ["transforms.json", "camera_angle_x"],
    ),
    ("ns_focal_text", lambda w, t: ["info", nerfstudio(w, t, fl_x="wide")], ["transforms.json", "fl_x"]),
    (
        "ns_malformed_json",
        lambda w, t: ["info", _write(nerfstudio(w, t) / "transforms.json", '{"frames": [') and t / "ns"],
        ["transforms.json", "JSON"],
    ),
    (
        "ns_matrix_nan",
        lambda w, t: [
            "info",
            nerfstudio(w, t, frame={"file_path": "images/a.png", "transform_matrix": [[float("nan")] * 4] * 4}),
        ],
        ["transforms.json", "transform_matrix"],
    ),
    (
        "ns_frame_without_matrix",
        lambda w, t: ["info", nerfstudio(w, t, frame={"file_path": "images/a.png"})],
        ["transforms.json", "transform_matrix"],
    ),
    ("blender_no_frames", lambda w, t: ["info", blender(w, t, lambda d: d.pop("frames"))], ["transforms_train.json"]),
    (
        "blender_angle_zero",
        lambda w, t: ["info", blender(w, t, lambda d: d.update(camera_angle_x=0))],
        ["transforms_train.json", "camera_angle_x"],
    ),
    (
        "blender_singular_matrix",
        lambda w, t: ["info", blender(w, t, lambda d: d["frames"][0].update(transform_matrix=[[0.0] * 4] * 4))],
        ["transforms_train.json", "singular"],
    ),
    ("colmap_fisheye", lambda w, t: ["info", colmap(w, t, cameras="1 FISHEYE 24 24 30 12 12 0\n")], ["FISHEYE"]),
    (
        "colmap_camera_text",
        lambda w, t: ["info", colmap(w, t, cameras="1 PINHOLE wide 24 30 30 12 12\n")],
        ["cameras.txt"],
    ),
    (
        "colmap_missing_camera_id",
        lambda w, t: ["info", colmap(w, t, images="1 1 0 0 0 0 0 4 7 a.png\n\n")],
        ["images.txt"],
    ),
    ("colmap_truncated_bin", lambda w, t: ["info", _bin_colmap(w, t)], ["cameras.bin"]),
    ("image_missing", lambda w, t: ["info", _dataset_with(w, t, "missing")], ["r_1.png"]),
    ("image_garbage", lambda w, t: ["info", _dataset_with(w, t, "garbage")], ["r_1.png"]),
    ("image_empty", lambda w, t: ["info", _dataset_with(w, t, "empty")], ["r_1.png"]),
    ("dataset_missing", lambda w, t: ["train", t / "nothing", "--out", t / "o", *TRAIN], ["nothing"]),
    ("split_missing", lambda w, t: ["eval", w.model, "--data", w.scene, "--split", "nope", "--no-lpips"], ["nope"]),
    (
        "cameras_json_malformed",
        lambda w, t: ["render", w.model, "--out", t / "r", "--cameras", _write(t / "c.json", "[")],
        ["c.json"],
    ),
    (
        "cameras_json_width_zero",
        lambda w, t: ["render", w.model, "--out", t / "r", "--cameras", _cameras(t, width=0)],
        ["cameras.json", "1x1"],
    ),
    (
        "cameras_json_focal_zero",
        lambda w, t: ["render", w.model, "--out", t / "r", "--cameras", _cameras(t, fx=0.0)],
        ["cameras.json", "focal"],
    ),
    ("metrics_missing", lambda w, t: ["metrics", t / "a.png", w.png], ["a.png"]),
    ("metrics_size_mismatch", lambda w, t: ["metrics", w.png, _small_png(t)], ["small.png"]),
    ("metrics_folder_vs_file", lambda w, t: ["metrics", w.scene / "train", w.png], ["r_0.png"]),
]


def _bin_colmap(w: W, t: Path) -> Path:
    d = colmap(w, t, cameras=None)
    for name in ("images.txt", "points3D.txt"):
        (d / "sparse" / "0" / name).unlink()
    _write(d / "sparse" / "0" / "cameras.bin", b"\x01\x00\x00")
    _write(d / "sparse" / "0" / "images.bin", b"\x00" * 8)
    _write(d / "sparse" / "0" / "points3D.bin", b"\x00" * 8)
    return d


def _dataset_with(w: W, t: Path, kind: str) -> Path:
    d = t / "ds"
    shutil.copytree(w.scene, d)
    img = d / "train" / "r_1.png"
    if kind == "missing":
        img.unlink()
    elif kind == "garbage":
        img.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    else:
        img.write_bytes(b"")
    return d


def _cameras(t: Path, **change) -> Path:
    from splatdistill.cameras.camera import Camera

    c = Camera(30.0, 30.0, 12.0, 12.0, 24, 24, np.eye(4)).to_dict()
    c["world_to_camera"][2][3] = 3.0
    c.update(change)
    return _write(t / "cameras.json", json.dumps({"cameras": [c]}))


def _small_png(t: Path) -> Path:
    from PIL import Image

    p = t / "small.png"
    Image.new("RGB", (5, 7)).save(p)
    return p


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input(capsys, w, tmp_path, monkeypatch, case):
    _, make_args, needles = case
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # relative outputs ("o") land here: nothing may be created
    args = make_args(w, tmp_path)
    before = sorted(p.name for p in work.iterdir())
    code, out, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, *needles)
    assert sorted(p.name for p in work.iterdir()) == before, "an output was created before the error"
    assert not list(tmp_path.rglob("*.tmp")), "a temporary file was left behind"


# --- mid-run OS errors: one line naming the file, nothing half-written ------------------------------------
@pytest.mark.parametrize("err_no", [errno.ENOSPC, errno.EACCES, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR])
def test_os_errors_mid_run_are_one_line(capsys, w, tmp_path, monkeypatch, err_no):
    import splatdistill.commands.render as images

    calls = []

    def failing_save(rgb, path, alpha=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(err_no, os.strerror(err_no), str(path))
        return orig(rgb, path, alpha)

    orig = images.save_png
    monkeypatch.setattr(images, "save_png", failing_save)
    out = tmp_path / "r"
    code, _, err = run_cli(
        capsys, "render", w.model, "--out", out, "--orbit", "3", "--width", "8", "--height", "8", "--backend", "cpu"
    )
    assert_one_visible_error(code, err, "0001_orbit_0001.png", os.strerror(err_no).lower())
    assert not (out / "0001_orbit_0001.png").exists()
    assert not list(out.glob("*.tmp")) and not (out / ".splatdistill.lock").exists()


def test_fallback_flattens_tyro_boxes(capsys, monkeypatch):
    """Where tyro's error hook gives an event this CLI does not know, tyro's box becomes one line."""
    import splatdistill.cli as cli

    monkeypatch.setattr(cli, "parse_error_message", lambda event, args: None)
    for args, needle in (
        (["train", "x", "--out", "y", "--downscale", "3.5"], "3.5"),
        (["render", "m", "--out", "o", "--backend", "foo"], "foo"),
        (["info", "x", "--jsn"], "--jsn"),
        (["train", "x"], "--out"),
        ([], "info"),
    ):
        code, _, err = run_cli(capsys, *args)
        assert_one_line_error(code, err, needle)
        assert not set(err) & set("╭╮╰╯│"), err


def test_help_stays_rich(capsys):
    from splatdistill.cli import main

    with pytest.raises(SystemExit) as e:
        main(["render", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--width" in out and "(default: None)" in out and "--overwrite" in out


# --- strict JSON and labels ----------------------------------------------------------------------------------
def test_json_is_strict_everywhere(capsys, w, tmp_path):
    code, out, _ = run_cli(capsys, "metrics", w.png, w.png, "--json")
    d = strict_json(out)
    assert code == 0 and d["psnr"] is None and "identical" in d["psnr_note"]
    assert d["per_image"][0]["psnr"] is None
    from splatdistill.fileio import dumps_json, write_json_atomic

    write_json_atomic(tmp_path / "x.json", {"a": float("nan"), "b": [float("inf")], "psnr": float("inf")})
    d = strict_json((tmp_path / "x.json").read_text())
    assert d == {"a": None, "a_note": "not a number", "b": [None], "psnr": None, "psnr_note": d["psnr_note"]}
    with pytest.raises(ValueError):
        json.dumps({"x": float("nan")}, allow_nan=False)  # what the helper avoids
    assert "NaN" not in dumps_json({"x": np.float32("nan")})


def test_eval_labels_the_split_it_measured(capsys, w, tmp_path):
    m = tmp_path / "m.json"
    code, out, err = run_cli(
        capsys, "eval", w.model, "--data", w.scene, "--split", "val", "--no-lpips", "--backend", "cpu", "--out", m
    )
    assert code == 0, err
    assert out.startswith("val PSNR") and "test" not in out
    assert strict_json(m.read_text())["split"] == "val"


# --- run folders: refuse mixing, --overwrite, locks ---------------------------------------------------------
def test_render_refuses_a_folder_of_another_render_and_overwrite_replaces_it(capsys, w, tmp_path):
    out = tmp_path / "r"
    base = ["render", w.model, "--out", out, "--backend", "cpu", "--width", "8", "--height", "8"]
    assert run_cli(capsys, *base, "--orbit", "3")[0] == 0
    assert run_cli(capsys, *base, "--orbit", "3")[0] == 0  # the same render again: redone in place
    code, _, err = run_cli(capsys, *base, "--orbit", "2")
    assert_one_line_error(code, err, str(out), "--overwrite")
    assert len(list(out.glob("*.png"))) == 3  # untouched
    assert run_cli(capsys, *base, "--orbit", "2", "--overwrite")[0] == 0
    assert len(list(out.glob("*.png"))) == 2  # no image of the old run is left beside the new ones
    assert len(json.loads((out / "cameras.json").read_text())["cameras"]) == 2


def test_a_held_lock_refuses_and_a_stale_one_is_taken_over(capsys, w, tmp_path):
    from splatdistill.commands.runs import LOCK_NAME, FolderLock

    out = tmp_path / "r"
    out.mkdir()
    args = ["render", w.model, "--out", out, "--orbit", "1", "--width", "8", "--height", "8", "--backend", "cpu"]
    with FolderLock(out):
        code, _, err = run_cli(capsys, *args)
        assert_one_line_error(code, err, str(out), f"pid {os.getpid()}")
    assert not list(out.glob("*.png"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(f"{dead.pid}\n")  # left by a process that died
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert not (out / LOCK_NAME).exists()


def test_train_refuses_a_folder_holding_an_earlier_run(capsys, w, tmp_path):
    out = tmp_path / "t"
    assert (
        run_cli(
            capsys,
            "train",
            w.scene,
            "--out",
            out,
            "--iterations",
            "10",
            "--checkpoint-every",
            "5",
            "--init-points",
            "100",
            "--no-eval",
        )[0]
        == 0
    )
    old = sorted(p.name for p in (out / "ckpt").iterdir())
    code, _, err = run_cli(
        capsys, "train", w.scene, "--out", out, "--iterations", "30", "--init-points", "100", "--no-eval"
    )
    assert_one_line_error(code, err, str(out), "--resume", "--overwrite")
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == old
    code, _, err = run_cli(
        capsys,
        "train",
        w.scene,
        "--out",
        out,
        "--iterations",
        "6",
        "--checkpoint-every",
        "2",
        "--init-points",
        "100",
        "--no-eval",
        "--overwrite",
    )
    assert code == 0, err
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == [
        "ckpt_0000004.pt",
        "ckpt_0000006.pt",
    ]  # none of the old run
    log = [json.loads(l)["iteration"] for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1] == 6 and log == sorted(log)


# --- read-only file systems (a real read-only mount in a user namespace) -----------------------------------------
_RO_SCRIPT = r"""
import contextlib, io, json, sys
from splatdistill.cli import main
res = {}
for name, args in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    res[name] = [code, err.getvalue()]
print(json.dumps(res))
"""


def _can_mount_read_only() -> bool:
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return r.returncode == 0


def test_read_only_outputs_and_read_only_teachers(w, tmp_path):
    """Outputs on a read-only file system fail before any work, in one line naming the path;
    distill --teachers from a read-only folder works and writes nothing there."""
    if not _can_mount_read_only():
        pytest.skip("needs unshare (user and mount namespaces) for a read-only mount")
    ro, teachers = tmp_path / "ro", tmp_path / "teachers"
    ro.mkdir()
    for v in ("vanilla", "noise", "dropout"):
        (teachers / v).mkdir(parents=True)
        write_ply(random_scene(**SMALL_MODEL, seed=len(v)), teachers / v / "point_cloud.ply")
    (teachers / "vanilla" / "config.json").write_text(json.dumps({"variant": "vanilla"}))
    listing = sorted((str(p), p.stat().st_mtime_ns) for p in teachers.rglob("*"))
    ds = str(w.scene)
    cases = {
        "train": ["train", ds, "--out", str(ro / "t"), *TRAIN],
        "render": ["render", str(w.model), "--out", str(ro / "r"), "--orbit", "1"],
        "convert": ["convert", str(w.model), str(ro / "x.ply")],
        "compress": ["compress", str(w.model), "--out", str(ro / "c")],
        "eval": ["eval", str(w.model), "--data", ds, "--out", str(ro / "m.json")],
        "make_scene": ["make-scene", str(ro / "s")],
        "distill_teachers": [
            "distill",
            ds,
            "--out",
            str(tmp_path / "d"),
            "--teachers",
            *[str(teachers / v) for v in ("vanilla", "noise", "dropout")],
            *DISTILL,
        ],
    }
    mount = (
        f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && "
        f"mount --bind {teachers} {teachers} && mount -o remount,bind,ro {teachers} && "
    )
    env = _env()
    r = subprocess.run(
        ["unshare", "-rm", "sh", "-c", mount + f'exec "{sys.executable}" -c "$0" "$1"', _RO_SCRIPT, json.dumps(cases)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    for name in cases:
        code, err = res[name]
        if name == "distill_teachers":
            assert code == 0, err[-2000:]
            continue
        assert_one_line_error(code, err, str(ro), "read-only")
    assert sorted((str(p), p.stat().st_mtime_ns) for p in teachers.rglob("*")) == listing
    assert list(ro.iterdir()) == []
    assert (tmp_path / "d" / "summary.json").exists()


# --- closed pipes --------------------------------------------------------------------------------------------
def _env():
    return {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
    }


def test_closed_pipe_is_quiet(w):
    r = subprocess.run(
        f'"{sys.executable}" -m splatdistill info "{w.model}" --json | head -c1',
        shell=True,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert r.stdout == "{" and r.stderr == "", r.stderr


# --- signals and concurrency: kill -9, SIGINT, two jobs on one folder ------------------------------------------
# A job is stopped at a chosen point by patching one function of the real CLI to signal its own
# process there (so the test does not depend on timing on a loaded machine).
_QUIET = r"""
import tqdm.std
_init = tqdm.std.tqdm.__init__
def _quiet_init(self, *a, **k):  # progress bars off: stderr then holds only the CLI's own lines
    k["disable"] = True
    _init(self, *a, **k)
tqdm.std.tqdm.__init__ = _quiet_init
"""
_FAULT = (
    _QUIET
    + r"""
import importlib, os, signal, sys
mod, name, when, nth, sig = sys.argv[1:6]
m = importlib.import_module(mod)
owner, attr = (getattr(m, name.split(".")[0]), name.split(".")[1]) if "." in name else (m, name)
orig = getattr(owner, attr)
calls = [0]
def patched(*a, **k):
    calls[0] += 1
    hit = calls[0] == int(nth)
    if hit and when == "before":
        os.kill(os.getpid(), getattr(signal, sig))
    r = orig(*a, **k)
    if hit and when == "after":
        os.kill(os.getpid(), getattr(signal, sig))
    return r
setattr(owner, attr, patched)
from splatdistill.cli import main
sys.exit(main(sys.argv[6:]))
"""
)


def run_with_fault(target: str, when: str, nth: int, sig: str, *args) -> subprocess.CompletedProcess:
    mod, name = target.split(":")
    return subprocess.run(
        [sys.executable, "-c", _FAULT, mod, name, when, str(nth), sig, *map(str, args)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )


def assert_interrupted(r: subprocess.CompletedProcess, out: Path) -> None:
    assert r.returncode == 130, r.stderr[-2000:]
    assert visible_lines(r.stderr) == ["splatdistill: interrupted"], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not list(out.rglob("*.tmp")) and not (out / ".splatdistill.lock").exists()


def test_train_kill_9_concurrent_job_and_resume(capsys, w, tmp_path):
    out = tmp_path / "t"
    args = [
        "train",
        w.scene,
        "--out",
        out,
        "--iterations",
        "60",
        "--checkpoint-every",
        "10",
        "--init-points",
        "200",
        "--no-eval",
    ]
    # the first job stops itself (SIGSTOP) after its second checkpoint: it still holds the lock
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _FAULT,
            "splatdistill.train.checkpoint",
            "save_checkpoint",
            "after",
            "2",
            "SIGSTOP",
            *map(str, args),
        ],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (out / "ckpt" / "ckpt_0000020.pt").exists():
            assert proc.poll() is None, "training ended before it was stopped"
            time.sleep(0.2)
        time.sleep(0.5)
        code, _, err = run_cli(capsys, *args, "--resume")  # a second job on the same folder
        assert_one_line_error(code, err, str(out), f"pid {proc.pid}")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "point_cloud.ply").exists()
    code, _, err = run_cli(capsys, *args)  # without --resume: refused, the run is kept
    assert_one_line_error(code, err, "--resume")
    # the dead job's lock is taken over; this job is interrupted (Ctrl-C) after one more checkpoint
    r = run_with_fault("splatdistill.train.checkpoint:save_checkpoint", "after", 1, "SIGINT", *args, "--resume")
    assert_interrupted(r, out)
    assert not (out / "point_cloud.ply").exists() and (out / "ckpt" / "ckpt_0000030.pt").exists()
    code, _, err = run_cli(capsys, *args, "--resume")
    assert code == 0, err
    its = [json.loads(l)["iteration"] for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert its[-1] == 60 and its == sorted(its) and len(its) == len(set(its))
    assert not list(out.rglob("*.tmp"))


def _comparable(summary: dict) -> dict:
    def strip(d):
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items() if k not in ("wall_s",)}
        if isinstance(d, list):
            return [strip(v) for v in d]
        return d

    return strip(summary)


def test_distill_kill_9_at_each_stage_boundary_equals_an_uninterrupted_run(capsys, w, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "d"
    args = ["distill", w.scene, *DISTILL]
    code, _, err = run_cli(capsys, *args, "--out", ref)
    assert code == 0, err
    pipe = "splatdistill.distill.pipeline"
    stages = [
        ("evaluate_cached", 1, "SIGKILL"),  # teachers trained, none evaluated
        ("build_soft_targets", 1, "SIGINT"),  # teachers evaluated (Ctrl-C)
        ("evaluate_cached", 4, "SIGKILL"),  # the student's PLY written, not evaluated, no summary
        ("write_report", 1, "SIGKILL"),  # summary written, no report
    ]
    for name, nth, sig in stages:
        r = run_with_fault(f"{pipe}:{name}", "before", nth, sig, *args, "--out", out)
        if sig == "SIGINT":
            assert_interrupted(r, out)
        else:
            assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
        assert not list(out.rglob("*.tmp"))
    assert (out / "summary.json").exists() and not (out / "report.md").exists()
    student = out / "student" / "point_cloud.ply"
    mtime = student.stat().st_mtime_ns
    code, _, err = run_cli(capsys, *args, "--out", out)
    assert code == 0, err
    assert student.stat().st_mtime_ns == mtime  # the finished student was not trained again
    a = _comparable(json.loads((ref / "summary.json").read_text()))
    b = _comparable(json.loads((out / "summary.json").read_text()))
    for row in a["teachers"] + b["teachers"]:
        row.pop("path")
    assert a == b
    assert student.read_bytes() == (ref / "student" / "point_cloud.ply").read_bytes()
    for v in ("vanilla", "noise", "dropout"):
        assert (out / "teachers" / v / "point_cloud.ply").read_bytes() == (
            ref / "teachers" / v / "point_cloud.ply"
        ).read_bytes()
    # other settings into the same folder: refused, unless --resume (teachers reused) or --overwrite
    code, _, err = run_cli(capsys, *args, "--out", out, "--keep", "0.5")
    assert_one_line_error(code, err, str(out), "--resume", "--overwrite")


def test_compress_kill_9_and_sigint_leave_no_partial_outputs(capsys, w, tmp_path):
    out = tmp_path / "c"
    tf = run_with_fault(
        "splatdistill.compress.trainingfree:importance_scores",
        "before",
        1,
        "SIGINT",
        "compress",
        w.model,
        "--out",
        tmp_path / "tf",
        *COMPRESS,
    )  # the default without data
    assert tf.returncode == 130 and "Traceback" not in tf.stderr, tf.stderr[-2000:]
    assert visible_lines(tf.stderr)[-1] == "splatdistill: interrupted"  # after its stage progress lines
    assert not (tmp_path / "tf").exists() or not list((tmp_path / "tf").rglob("model*"))
    args = ["compress", w.model, "--out", out, *COMPRESS, "--no-training-free"]  # the fine-tuning stages
    r = run_with_fault("splatdistill.compress.pipeline:evaluate", "before", 1, "SIGKILL", *args)
    assert r.returncode == -signal.SIGKILL
    assert not [p for p in out.iterdir() if p.name.startswith(("model", "summary"))]  # only in staging
    r = run_with_fault("splatdistill.compress.pipeline:vq_stage", "before", 1, "SIGINT", *args)
    assert_interrupted(r, out)
    assert not [p for p in out.iterdir() if p.name.startswith(("model", "summary", ".incomplete"))]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert {"model.sdz", "model.ply", "model.spz", "summary.json"} <= {p.name for p in out.iterdir()}
    assert not (out / ".incomplete").exists()
    strict_json((out / "summary.json").read_text())
    code, _, err = run_cli(
        capsys, "compress", w.model, "--out", out, *COMPRESS, "--no-training-free", "--quality", "small"
    )
    assert_one_line_error(code, err, str(out), "--overwrite")


def test_corpus_size():
    """The table alone holds at least 60 hostile inputs (the fault tests above add more)."""
    assert len(CASES) >= 60, len(CASES)
