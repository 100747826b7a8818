"""``compress`` fails before the work, never after: the output folder and every writer are checked on
the input model first, and a failure at the end leaves no file under a final name."""

from __future__ import annotations

import os

import pytest
import torch

from conftest import assert_one_line_error, run_cli
from helpers import box_scene, write_model
from splatdistill.errors import UserError
from splatdistill.formats.ply import write_ply

# these tests are about the fine-tuning path's outputs (the training-free path has its own below)
FAST = ["--iterations", 2, "--views", 2, "--resolution", 16, "--no-lpips", "--device", "cpu", "--no-training-free"]
FINAL = ("model.sdz", "model.ply", "model.spz", "summary.json")


def tiny(tmp_path, degree=1, far=False):
    s = box_scene(300, degree, seed=3, half=0.7, opacity=0.6)
    if far:  # one Gaussian 10^6 away: positions relative to the median overflow float16
        s.params["means"][0] = torch.tensor([1e6, 0.0, 0.0])
    return write_model(tmp_path / ("far.ply" if far else "m.ply"), s)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if ``compress`` gets as far as rendering targets or pruning."""
    import splatdistill.compress.pipeline as pl

    def boom(*a, **k):
        raise AssertionError("compress started the work before finding the problem")

    monkeypatch.setattr(pl, "prepare_targets", boom)
    monkeypatch.setattr(pl, "prune_stage", boom)


def test_codec_problem_is_found_before_the_work(tmp_path, capsys, no_work):
    code, _, err = run_cli(capsys, "compress", tiny(tmp_path, far=True), "--out", tmp_path / "out", *FAST)
    assert_one_line_error(code, err, "model.sdz", "float16")
    assert not (tmp_path / "out").exists()  # nothing created: not a temporary file, not the folder


def test_output_path_problems_are_found_before_the_work(tmp_path, capsys, no_work):
    model = tiny(tmp_path)
    (tmp_path / "a_file").write_text("x")
    code, _, err = run_cli(capsys, "compress", model, "--out", tmp_path / "a_file" / "out", *FAST)
    assert_one_line_error(code, err, "a_file")
    code, _, err = run_cli(capsys, "compress", model, "--out", tmp_path / "a_file", *FAST)
    assert_one_line_error(code, err, "a_file", "not a folder")
    (tmp_path / "out" / "model.ply").mkdir(parents=True)
    code, _, err = run_cli(capsys, "compress", model, "--out", tmp_path / "out", *FAST)
    assert_one_line_error(code, err, "model.ply")  # a folder where an output goes: refused before any work


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write in read-only folders")
def test_read_only_output_folder_is_found_before_the_work(tmp_path, capsys, no_work):
    model = tiny(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = run_cli(capsys, "compress", model, "--out", ro / "out", *FAST)
        assert_one_line_error(code, err, "out")
        code, _, err = run_cli(capsys, "compress", model, "--out", ro, *FAST)
        assert_one_line_error(code, err, "ro", "cannot write")
    finally:
        ro.chmod(0o755)


def _fail_on_call(monkeypatch, module, name, n_ok: int, exc: BaseException):
    real = getattr(module, name)
    calls = []

    def wrapper(*a, **k):
        calls.append(1)
        if len(calls) > n_ok:
            raise exc
        return real(*a, **k)

    monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.mark.parametrize("where", ["ply writer", "spz writer", "evaluation", "summary"])
def test_a_failure_at_the_end_leaves_no_final_file(tmp_path, capsys, monkeypatch, where):
    """The pre-flight passes (each writer's first call), the work runs, then something fails: no
    model.* or summary.json appears (a user's own file in the folder stays), no temporary is left."""
    import splatdistill.compress.pipeline as pl
    import splatdistill.formats.ply as ply
    import splatdistill.formats.spz as spz

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    if where == "ply writer":
        calls = _fail_on_call(monkeypatch, ply, "write_ply", 1, OSError(28, "No space left on device"))
    elif where == "spz writer":  # not a UserError (those become spz_error in the summary)
        calls = _fail_on_call(monkeypatch, spz, "write_spz", 1, RuntimeError("encoder bug"))
    elif where == "evaluation":
        calls = _fail_on_call(monkeypatch, pl, "evaluate", 0, RuntimeError("renderer bug"))
    else:
        calls = _fail_on_call(monkeypatch, pl, "write_json_atomic", 0, OSError(28, "No space left on device"))
    if where in ("ply writer", "summary"):  # a full disk is the user's to fix: one line
        code, _, err = run_cli(capsys, "compress", tiny(tmp_path), "--out", out, *FAST)
        last = err.replace("\r", "\n").strip().splitlines()[-1]  # after the progress bars
        assert code == 2 and "Traceback" not in err
        assert last.startswith("splatdistill: error: ") and "out" in last and "No space left on device" in last
    else:  # a bug: the traceback
        with pytest.raises(RuntimeError, match="bug"):
            run_cli(capsys, "compress", tiny(tmp_path), "--out", out, *FAST)
    assert len(calls) >= 1  # it failed where it was meant to: at the end
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_successful_run_replaces_an_old_one_completely(tmp_path, capsys):
    model = tiny(tmp_path, degree=0)
    out = tmp_path / "out"
    for quality, again in (("high", []), ("small", ["--overwrite"])):  # other settings: --overwrite
        code, _, err = run_cli(capsys, "compress", model, "--out", out, "--quality", quality, *again, *FAST)
        assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted([*FINAL, "run.json"])  # run.json: the run's record
    import json

    assert json.loads((out / "summary.json").read_text())["settings"]["quality"] == "small"


# ---- antialiased models stay antialiased ------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["significance", "mask", "confidence"])
def test_compress_keeps_the_antialiased_flag(tmp_path, policy):
    """Every stage rebuilds the scene from its parameters; each keeps ``antialiased``, so the
    result (and the SPZ written from it) is still an antialiased model."""
    import json

    from splatdistill.compress.pipeline import CompressConfig, compress_model
    from splatdistill.formats.spz import read_spz_header

    aa = box_scene(300, 2, seed=4, half=0.7, opacity=0.6, antialiased=True)
    cfg = CompressConfig(
        quality="small",
        prune_policy=policy,
        iterations=4,
        views=2,
        resolution=16,
        lpips=False,
        training_free=False,
        rvq_stages=1,
        rvq_size=4,
        device="cpu",
        progress=False,
    )
    model = write_model(tmp_path / "aa.ply", aa)
    summary = compress_model(model, tmp_path / "out", cfg=cfg, scene=aa)
    assert summary["antialiased"] is True
    assert summary["stages"]["vq"].get("skipped") is not True and summary["stages"]["rvq"].get("skipped") is not True
    assert read_spz_header(tmp_path / "out" / "model.spz").antialiased
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["antialiased"] is True


def test_policies_student_and_trainer_keep_the_antialiased_flag(demo_scene_dir, tmp_path):
    from splatdistill.data.dataset import load_dataset
    from splatdistill.distill.student import StudentConfig, StudentTrainer
    from splatdistill.ops.policies import bake_gates, make_policy
    from splatdistill.train.config import TrainConfig
    from splatdistill.train.trainer import Trainer

    aa = box_scene(60, 1, seed=5, half=0.7, opacity=0.1, antialiased=True)
    for name in ("mask", "confidence"):
        pol = make_policy(name, len(aa))
        assert pol.render_inputs(aa)[0].antialiased and pol.bake(aa).antialiased
    assert bake_gates(aa, torch.full((60,), 0.5), torch.full((60,), 0.9)).antialiased
    ds = load_dataset(demo_scene_dir)
    st = StudentTrainer(ds, None, aa, StudentConfig(iterations=2, keep=0.5), tmp_path / "st", "cpu", progress=False)
    assert st.scene().antialiased
    scene, _ = st.run()
    assert scene.antialiased and len(scene) == 30
    tr = Trainer(ds, tmp_path / "t", TrainConfig(iterations=2, init_points=100, checkpoint_every=1), progress=False)
    tr.antialiased = True  # e.g. a run that trains with the 2D filter: checkpoints and the export keep it
    assert tr.run().scene.antialiased
    again = Trainer(
        ds, tmp_path / "t", TrainConfig(iterations=2, init_points=100, checkpoint_every=1), resume=True, progress=False
    )
    assert again.antialiased and again.scene().antialiased


def test_stages_and_codecs_handle_no_gaussians_left(tmp_path):
    """0 Gaussians after a prune (e.g. a learned gate that switched every one off): each later stage,
    the .sdz codec (with residual VQ), the SPZ and PLY writers and the evaluation still work."""
    from splatdistill.compress import pipeline as pl
    from splatdistill.formats.ply import read_ply
    from splatdistill.formats.sdz import load_sdz, save_sdz
    from splatdistill.formats.spz import read_spz, write_spz

    s = box_scene(200, 3, seed=1, half=0.7, opacity=0.6)
    cfg = pl.CompressConfig(views=2, resolution=16, lpips=False, progress=False, device="cpu")
    t = pl.prepare_targets(s, None, cfg, torch.device("cpu"))
    for policy in ("significance", "mask", "confidence"):
        assert len(pl.prune_stage(s[:0], t, 0.5, policy, 2, progress=False)[0]) == 0
    w, _ = pl.distill_sh_stage(s[:0], t, 1, 2, progress=False)
    assert (len(w), w.sh_degree) == (0, 1)
    w, vq, info = pl.vq_stage(w, t, 64, 0.6, 2, progress=False)
    assert vq is None and info["skipped"]
    w, rvq, _ = pl.rvq_stage(w, t, 2, 4, 1, progress=False)
    back = load_sdz(save_sdz(w, tmp_path / "e.sdz", rvq=rvq, bits={"opacities": 10, "shN": 6}))
    assert (len(back), back.sh_degree) == (0, 1)
    write_spz(back, tmp_path / "e.spz")
    write_ply(back, tmp_path / "e.ply")
    assert len(read_spz(tmp_path / "e.spz")) == 0 and len(read_ply(tmp_path / "e.ply")) == 0
    assert pl.evaluate(back, t, False, progress=False)["psnr"] is not None


def test_training_free_path_checks_its_outputs_before_the_work(tmp_path, capsys, monkeypatch):
    """The training-free default (no dataset) also finds a bad output path before any work."""
    import splatdistill.compress.trainingfree as tf

    def boom(*a, **k):
        raise AssertionError("compress started the work before finding the problem")

    monkeypatch.setattr(tf, "importance_scores", boom)
    model = tiny(tmp_path)
    (tmp_path / "a_file").write_text("x")
    code, _, err = run_cli(capsys, "compress", model, "--out", tmp_path / "a_file" / "out", "--no-lpips")
    assert_one_line_error(code, err, "a_file")
    from splatdistill.compress.pipeline import CompressConfig

    (tmp_path / "out" / "model.ply").mkdir(parents=True)
    with pytest.raises(UserError, match="model.ply"):
        tf.compress_training_free(model, tmp_path / "out", CompressConfig(lpips=False, progress=False))
