"""Every SH degree (0-3) through every command, at the CLI: info, convert to every format and back,
render, eval, compress (every preset, every --sh-degree) and distill --teachers; and models with no
Gaussians. Tiny models, few iterations, small images: the whole file runs in about a minute."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli
from splatdistill.formats.io import load_model
from splatdistill.formats.ply import read_ply, write_ply
from splatdistill.scene.gaussians import GaussianScene

DEGREES = [0, 1, 2, 3]
N = 300  # enough for the colour VQ of every preset to run (>= 32 VQ'd Gaussians after pruning)


def tiny_model(degree: int, n: int = N, seed: int = 0) -> GaussianScene:
    """Random anisotropic Gaussians in the demo scene's box, with non-zero SH bands of ``degree``."""
    g = torch.Generator().manual_seed(100 * degree + seed)
    s = GaussianScene.random_in_box(n, [-0.7] * 3, [0.7] * 3, sh_degree=degree, seed=degree + seed, init_opacity=0.6)
    s.params["shN"] = torch.randn(s.shN.shape, generator=g) * 0.2
    s.params["quats"] = torch.randn(n, 4, generator=g)
    s.params["scales"] = s.scales + torch.randn(n, 3, generator=g) * 0.3
    return s


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[int, Path]:
    d = tmp_path_factory.mktemp("sh_models")
    out = {}
    for deg in DEGREES:
        out[deg] = d / f"sh{deg}.ply"
        write_ply(tiny_model(deg), out[deg])
    return out


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    from splatdistill.data.demo_scene import make_demo_scene

    return make_demo_scene(tmp_path_factory.mktemp("tiny_scene"), resolution=32, train_views=6, test_views=2, seed=1)


def info_json(capsys, path) -> dict:
    code, out, err = run_cli(capsys, "info", path, "--json")
    assert code == 0, err
    return json.loads(out)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("degree", DEGREES)
def test_info_convert_render_eval(models, tiny_scene, tmp_path, capsys, degree):
    src = models[degree]
    ref = read_ply(src)
    d = info_json(capsys, src)
    assert (d["num_gaussians"], d["sh_degree"]) == (N, degree)
    for ext in ("ply", "spz", "sdz"):
        mid = tmp_path / f"m.{ext}"
        code, out, err = run_cli(capsys, "convert", src, mid)
        assert code == 0, err
        assert f"SH degree {degree}" in out
        d = info_json(capsys, mid)
        assert (d["num_gaussians"], d["sh_degree"], d["format"]) == (N, degree, ext)
        back = tmp_path / f"back_{ext}.ply"
        code, _, err = run_cli(capsys, "convert", mid, back)
        assert code == 0, err
        b = read_ply(back)
        assert (len(b), b.sh_degree) == (N, degree)
        if ext == "ply":  # lossless: bit for bit
            for k, v in ref.items():
                assert torch.equal(v, b.params[k]), k
        else:  # lossy, reordered: the sorted values of each channel stay close to the original's

            def close(x, y, tol):
                x, y = x.reshape(N, -1).numpy(), y.reshape(N, -1).numpy()
                assert np.abs(np.sort(x, 0) - np.sort(y, 0)).max() < tol

            close(b.means, ref.means, 2e-2)
            close(b.activated_opacities(), ref.activated_opacities(), 2e-2)
            close(b.sh0, ref.sh0, 5e-2)
    code, out, err = run_cli(
        capsys,
        "render",
        src,
        "--out",
        tmp_path / "orbit",
        "--orbit",
        2,
        "--width",
        24,
        "--height",
        16,
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert len(list((tmp_path / "orbit").glob("*.png"))) == 2
    code, out, err = run_cli(
        capsys, "render", tmp_path / "m.sdz", "--out", tmp_path / "views", "--data", tiny_scene, "--device", "cpu"
    )
    assert code == 0, err
    assert len(list((tmp_path / "views").glob("*.png"))) == 2
    code, out, err = run_cli(
        capsys, "eval", tmp_path / "m.spz", "--data", tiny_scene, "--no-lpips", "--json", "--device", "cpu"
    )
    assert code == 0, err
    m = json.loads(out)
    assert m["num_gaussians"] == N and m["psnr"] > 0


# (input degree, preset, --sh-degree or None: the preset's, capped at the input's, R-VQ stages).
# Every preset on every input degree, every --sh-degree 0..3, and the residual VQ on SH 0 and SH 3.
COMPRESS_RUNS = [
    (0, "high", None, 0),
    (0, "balanced", 0, 2),
    (0, "small", None, 0),
    (1, "high", 0, 0),
    (1, "balanced", None, 0),
    (1, "small", 1, 0),
    (2, "high", None, 0),
    (2, "balanced", 0, 0),
    (2, "small", 1, 0),
    (3, "high", 0, 0),
    (3, "balanced", 1, 0),
    (3, "small", 2, 2),
    (3, "high", 3, 0),
]


@pytest.mark.parametrize(
    "degree,quality,sh,rvq", COMPRESS_RUNS, ids=[f"sh{d}-{q}-to{s}-rvq{r}" for d, q, s, r in COMPRESS_RUNS]
)
def test_compress_every_degree_and_preset(models, tmp_path, capsys, degree, quality, sh, rvq):
    from splatdistill.compress.pipeline import PRESETS

    out = tmp_path / "c"
    args = [
        "compress",
        models[degree],
        "--out",
        out,
        "--quality",
        quality,
        "--iterations",
        2,
        "--views",
        2,
        "--resolution",
        16,
        "--no-lpips",
        "--device",
        "cpu",
        "--no-training-free",
    ]
    if sh is not None:
        args += ["--sh-degree", sh]
    if rvq:
        args += ["--rvq-stages", rvq, "--rvq-size", 4]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    want = min(PRESETS[quality].sh_degree, degree) if sh is None else sh
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sh_degree"] == want and summary["sh_degree_input"] == degree
    assert summary["stages"]["vq"].get("skipped") is not True  # the colour VQ ran
    assert summary["stages"]["preflight"] == {"sdz": True, "ply": True, "spz": True}
    n = summary["num_gaussians"]
    for name in ("model.sdz", "model.ply", "model.spz"):
        d = info_json(capsys, out / name)
        assert (d["num_gaussians"], d["sh_degree"]) == (n, want), name
    assert leftovers(out) == []


@pytest.mark.parametrize(
    "degree,quality,sh,_",
    [r for r in COMPRESS_RUNS if not r[3]],
    ids=[f"sh{d}-{q}-to{s}" for d, q, s, r in COMPRESS_RUNS if not r],
)
def test_training_free_compress_every_degree_and_preset(models, tmp_path, capsys, degree, quality, sh, _):
    """The default without a dataset (training-free) on every input degree, preset and --sh-degree."""
    from splatdistill.compress.pipeline import PRESETS

    out = tmp_path / "c"
    args = [
        "compress",
        models[degree],
        "--out",
        out,
        "--quality",
        quality,
        "--importance-views",
        2,
        "--resolution",
        16,
        "--no-lpips",
    ]
    if sh is not None:
        args += ["--sh-degree", sh]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    want = min(PRESETS[quality].sh_degree, degree) if sh is None else sh
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "training-free"
    assert summary["sh_degree"] == want and summary["sh_degree_input"] == degree
    n = summary["num_gaussians"]
    assert 0 < n < N
    for name in ("model.sdz", "model.ply", "model.spz"):
        d = info_json(capsys, out / name)
        assert (d["num_gaussians"], d["sh_degree"]) == (n, want), name
    assert leftovers(out) == []


def test_compress_sh_degree_above_the_input_is_refused_at_once(models, tmp_path, capsys):
    code, _, err = run_cli(capsys, "compress", models[1], "--out", tmp_path / "c", "--sh-degree", 2)
    assert_one_line_error(code, err, "--sh-degree 2", "SH degree 1")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("teachers,student_degree", [([0, 1, 2, 3], 0), ([3, 1], 3)])
def test_distill_with_given_teachers_of_every_degree(models, tiny_scene, tmp_path, capsys, teachers, student_degree):
    code, out, err = run_cli(
        capsys,
        "distill",
        tiny_scene,
        "--out",
        tmp_path / "d",
        "--teachers",
        *[models[t] for t in teachers],
        "--iterations",
        4,
        "--device",
        "cpu",
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert [t["num_gaussians"] for t in summary["teachers"]] == [N] * len(teachers)
    student = load_model(tmp_path / "d" / "student" / "point_cloud.ply")
    assert student.sh_degree == student_degree and 0 < len(student) < N


# ---- no Gaussians -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("degree", [0, 3])
def test_models_without_gaussians(tiny_scene, tmp_path, capsys, degree):
    """Round trips and renders of a dataset's views work; what needs Gaussians says so in one line."""
    empty = tmp_path / "empty.ply"
    write_ply(tiny_model(degree, n=4)[:0], empty)
    for ext in ("spz", "sdz", "ply"):
        mid = tmp_path / f"e.{ext}"
        code, _, err = run_cli(capsys, "convert", empty, mid)
        assert code == 0, err
        d = info_json(capsys, mid)
        assert (d["num_gaussians"], d["sh_degree"]) == (0, degree)
        code, _, err = run_cli(capsys, "convert", mid, tmp_path / f"e_{ext}.sdz")
        assert code == 0, err
        assert info_json(capsys, tmp_path / f"e_{ext}.sdz")["num_gaussians"] == 0
    code, _, err = run_cli(
        capsys, "render", tmp_path / "e.sdz", "--out", tmp_path / "r", "--data", tiny_scene, "--device", "cpu"
    )
    assert code == 0, err  # the background
    code, _, err = run_cli(capsys, "render", tmp_path / "e.sdz", "--out", tmp_path / "o", "--orbit", 2)
    assert_one_line_error(code, err, "e.sdz", "no Gaussians")
    code, _, err = run_cli(capsys, "compress", empty, "--out", tmp_path / "c")
    assert_one_line_error(code, err, "empty.ply", "no Gaussians")
    code, _, err = run_cli(capsys, "distill", tiny_scene, "--out", tmp_path / "d", "--teachers", empty)
    assert_one_line_error(code, err, "empty.ply", "no Gaussians")
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").rglob("*.ply"))
