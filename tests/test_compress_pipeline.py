"""``compress``: the pipeline (data-free and with data), pruning policies with baked gates, SH
reduction, the CLI and its one-line errors for corrupt containers. Small scenes, few iterations."""

import json
import os

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli  # noqa: E402
from helpers import box_scene  # noqa: E402
from splatdistill.cameras.camera import stack_cameras
from splatdistill.compress.pipeline import CompressConfig, compress_model, prepare_targets, run_sweep
from splatdistill.compress.stages import finetune, finetune_lrs
from splatdistill.errors import UserError
from splatdistill.formats.container import read_container
from splatdistill.formats.ply import read_ply, write_ply
from splatdistill.formats.sdz import load_sdz
from splatdistill.ops.optim import adam, make_params, scene_of
from splatdistill.ops.policies import ConfidencePolicy, MaskPolicy, bake_gates, make_policy
from splatdistill.render import render
from splatdistill.scene.gaussians import GaussianScene

FAST = dict(
    iterations=4, views=6, eval_views=2, resolution=32, lpips=False, progress=False, training_free=False
)  # the fine-tuning path (training-free has its own tests)


@pytest.fixture(scope="module")
def model_ply(tmp_path_factory):
    p = tmp_path_factory.mktemp("model") / "scene.ply"
    write_ply(box_scene(3000, sh_std=0.1), p)
    return p


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from splatdistill.data.demo_scene import make_demo_scene

    return make_demo_scene(tmp_path_factory.mktemp("demo48"), resolution=48, train_views=6, test_views=2, seed=0)


@pytest.fixture(scope="module")
def fitted_ply(demo_data, tmp_path_factory):
    """A 2k-Gaussian scene fitted to the demo dataset for 30 steps (no densification; ~13 dB)."""
    from splatdistill.data.dataset import load_dataset

    ds = load_dataset(demo_data)
    views = ds.split("train")
    scene = GaussianScene.random_in_box(
        2000, [-0.2 * ds.extent] * 3, [0.2 * ds.extent] * 3, sh_degree=3, init_opacity=0.3
    )
    cfg = CompressConfig(**{**FAST, "background": (1.0, 1.0, 1.0)})  # fitted on the evaluation background
    t = prepare_targets(scene, demo_data, cfg, torch.device("cpu"))
    params = make_params(scene)
    opt = adam(params, finetune_lrs(t.extent) | {"means": 3e-4 * t.extent, "sh0": 0.05, "opacities": 0.05})
    finetune(
        lambda: scene_of(params),
        params,
        opt,
        30,
        lambda i: (t.train_cams[i % len(views)], t.image(t.train_images, i % len(views))),
        t,
        "fit",
        False,
    )
    p = tmp_path_factory.mktemp("fitted") / "fitted.ply"
    write_ply(scene_of(params).detach(), p)
    return p


# ---- pipeline ---------------------------------------------------------------------------------------------
def test_data_free_compress(model_ply, tmp_path):
    out = tmp_path / "c"
    s = compress_model(model_ply, out, None, CompressConfig(**FAST))
    for name in ("model.sdz", "model.ply", "model.spz", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "data-free"
    assert summary["output_bytes"] == os.path.getsize(out / "model.sdz")
    assert summary["input_bytes"] == os.path.getsize(model_ply)
    assert summary["output_bytes"] < summary["input_bytes"] / 5
    assert summary["ratio"] == pytest.approx(summary["input_bytes"] / summary["output_bytes"])
    # balanced: 66 % pruned exactly, SH 3 -> 2
    assert summary["num_gaussians"] == 3000 - round(0.66 * 3000)
    assert summary["sh_degree"] == 2
    assert np.isfinite(summary["psnr"]) and summary["psnr"] > 20
    assert set(summary["timings_s"]) >= {"targets", "prune", "sh_distill", "vq", "encode", "evaluate", "total"}
    assert summary["settings"]["prune"] == 0.66
    decoded = load_sdz(out / "model.sdz")
    assert len(decoded) == s["num_gaussians"] and decoded.sh_degree == 2
    ply = read_ply(out / "model.ply")  # the decoded scene, bit for bit
    for k, v in ply.items():
        assert torch.equal(v, decoded.params[k]), k
    gsply = pytest.importorskip("gsply")
    assert len(gsply.read_spz(out / "model.spz").means) == s["num_gaussians"]


def test_compress_with_data(fitted_ply, demo_data, tmp_path):
    cfg = CompressConfig(**{**FAST, "quality": "small"})
    s = compress_model(fitted_ply, tmp_path / "c", demo_data, cfg)
    assert s["mode"] == "data" and s["evaluated_on"].startswith("2 dataset test views")
    assert s["stages"]["sh_distill"]["pseudo_views"] == 12  # 2 x the 6 training views
    assert s["settings"]["sh_degree"] == 1 and s["num_gaussians"] == 2000 - round(0.8 * 2000)
    assert np.isfinite(s["psnr"]) and np.isfinite(s["input_psnr"])
    # a short fine-tune keeps the (poor) quality of this tiny input within a few dB
    assert s["psnr"] > s["input_psnr"] - 3.0 and s["psnr"] > 10
    assert s["output_bytes"] < s["input_bytes"] / 5


def test_sh_reduction_3_to_1(model_ply, tmp_path):
    s = compress_model(
        model_ply, tmp_path / "c", None, CompressConfig(**{**FAST, "sh_degree": 1, "prune": 0.5, "vq_ratio": 0.0})
    )
    assert s["sh_degree"] == 1 and load_sdz(tmp_path / "c" / "model.sdz").sh_degree == 1
    assert s["stages"]["sh_distill"]["to"] == 1 and s["stages"]["vq"].get("skipped")
    assert s["num_gaussians"] == 1500 and s["psnr"] > 20


def test_sh_degree_above_input_is_an_error(tmp_path, capsys):
    p = tmp_path / "d1.ply"
    write_ply(box_scene(200, degree=1, sh_std=0.1), p)
    with pytest.raises(UserError, match="higher than the input"):
        compress_model(p, tmp_path / "c", None, CompressConfig(**{**FAST, "sh_degree": 2}))
    code, _, err = run_cli(capsys, "compress", p, "--out", tmp_path / "c2", "--sh-degree", "3")
    assert_one_line_error(code, err, "--sh-degree 3", "SH degree 1")
    # a preset's degree is capped at the input's: no error
    s = compress_model(p, tmp_path / "c3", None, CompressConfig(**{**FAST, "quality": "high", "iterations": 0}))
    assert s["sh_degree"] == 1


@pytest.mark.parametrize("policy", ["mask", "confidence"])
def test_learned_policies_in_the_pipeline(model_ply, tmp_path, policy):
    s = compress_model(model_ply, tmp_path / "c", None, CompressConfig(**{**FAST, "prune_policy": policy}))
    stats = s["stages"]["prune"]["policy_stats"]
    assert stats["policy"] == policy
    if policy == "confidence":
        assert 0.0 < stats["mean_confidence"] <= 1.0
    assert s["num_gaussians"] <= 3000 - round(0.66 * 3000) and s["psnr"] > 20


# ---- policies: gates are baked into what is exported -------------------------------------------------------
def _cams(scene, n=3, res=32):
    from splatdistill.compress.pipeline import sample_cameras

    return sample_cameras(scene, CompressConfig(views=n, eval_views=n, resolution=res))[1]


def _gated_vs_baked(scene, policy, keep):
    cams = stack_cameras(_cams(scene))
    with torch.no_grad():
        gscene, oscale = policy.render_inputs(scene)
        gated = render(gscene[keep], cams, opacity_scale=None if oscale is None else oscale[keep]).rgb
        baked = render(policy.bake(scene)[keep], cams).rgb
    return float((gated - baked).abs().max()), float(gated.abs().max())


def test_mask_gate_is_baked():
    scene = box_scene(600, sh_std=0.1)
    pol = MaskPolicy(len(scene))
    with torch.no_grad():  # a trained-looking mask: some below the 0.01 threshold
        pol.logits.copy_(torch.linspace(-8.0, 4.0, len(scene))[torch.randperm(len(scene))])
    keep = pol.keep_mask()
    assert 0 < int(keep.sum()) < len(scene)
    # the whole scene (masked ones invisible) and the pruned scene both render like the gated scene
    for k in (torch.ones(len(scene), dtype=torch.bool), keep):
        err, peak = _gated_vs_baked(scene, pol, k)
        assert peak > 0.05 and err <= 1e-5
    # mask loss: lambda * mean(sigmoid(m)); M is exactly 0/1 in the forward pass
    assert float(pol.loss().detach()) == pytest.approx(4e-3 * float(torch.sigmoid(pol.logits.detach()).mean()))
    m = pol.mask()
    assert set(torch.unique(m.detach()).tolist()) <= {0.0, 1.0}


def test_confidence_gate_is_baked_and_losses():
    scene = box_scene(600, sh_std=0.1)
    pol = ConfidencePolicy(len(scene))
    assert float(pol.confidence().detach().mean()) == pytest.approx(0.9, abs=1e-4)
    with torch.no_grad():
        pol.a.copy_(torch.randn(len(scene)) * 2)
        pol.b.copy_(torch.randn(len(scene)) * 2)
    keep = pol.keep_mask()  # c >= tau
    assert bool((pol.confidence()[keep] >= 0.1).all())
    for k in (torch.ones(len(scene), dtype=torch.bool), keep):
        err, peak = _gated_vs_baked(scene, pol, k)
        assert peak > 0.05 and err <= 1e-5
    top = pol.keep_mask(100)
    assert int(top.sum()) == 100
    c = pol.confidence().detach()
    assert float(c[top].min()) >= float(c[~top & keep].max())
    # ranking hinge: salient splats with a lower confidence than non-salient ones are penalised
    sal = torch.arange(len(scene), dtype=torch.float32)
    with torch.no_grad():
        pol.a.fill_(0.0)
        pol.b.fill_(0.0)
    assert float(pol.rank_loss(sal).detach()) == pytest.approx(0.1, abs=1e-6)  # all c = 0.5: margin only
    params = {
        "sh0": torch.nn.Parameter(torch.zeros(len(scene), 1, 3)),
        "shN": torch.nn.Parameter(torch.zeros(len(scene), 15, 3)),
    }
    params["sh0"].grad = sal.view(-1, 1, 1).expand(-1, 1, 3).clone()
    params["shN"].grad = torch.zeros(len(scene), 15, 3)
    pol.after_backward(24, params)  # step 25: the hinge runs
    assert pol.a.grad is not None and float(pol.a.grad[-1]) < 0 < float(pol.a.grad[0])


def test_bake_gates_identity_and_make_policy():
    scene = box_scene(50, sh_std=0.1)
    b = bake_gates(scene, torch.ones(50), torch.ones(50))
    assert torch.allclose(b.opacities, scene.opacities, atol=1e-5) and torch.equal(b.scales, scene.scales)
    assert make_policy("significance", 10).keep_mask(3, torch.zeros(10)).sum() == 3  # ties: exactly k
    with pytest.raises(ValueError):
        make_policy("nope", 3)


# ---- CLI ----------------------------------------------------------------------------------------------
def test_cli_compress_and_convert(model_ply, tmp_path, capsys):
    out = tmp_path / "c"
    code, stdout, err = run_cli(
        capsys,
        "compress",
        model_ply,
        "--out",
        out,
        "--iterations",
        "2",
        "--views",
        "4",
        "--resolution",
        "24",
        "--quality",
        "small",
        "--no-spz",
        "--no-lpips",
    )
    assert code == 0, err
    assert "PSNR" in stdout and (out / "model.sdz").is_file() and not (out / "model.spz").exists()
    assert f"splatdistill view {model_ply} {out / 'model.sdz'}\n" in stdout  # compares input and output
    code, stdout, err = run_cli(capsys, "convert", out / "model.sdz", tmp_path / "back.ply")
    assert code == 0, err
    assert len(read_ply(tmp_path / "back.ply")) == 600


def test_sweep(model_ply, tmp_path):
    cfg = CompressConfig(**{**FAST, "iterations": 0, "write_spz": False, "views": 4, "resolution": 24})
    res = run_sweep(model_ply, tmp_path / "sw", None, cfg)
    names = [r["name"] for r in res["runs"]]
    assert names[:3] == ["high", "balanced", "small"] and len(names) == 5
    sizes = {r["name"]: r["output_bytes"] for r in res["runs"]}
    assert sizes["small"] < sizes["balanced"] < sizes["high"]
    for f in ("sweep.json", "sweep.md", "rate_distortion.png"):
        assert (tmp_path / "sw" / f).stat().st_size > 0
    assert (tmp_path / "sw" / "rate_distortion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _corrupt_files(tmp_path):
    from splatdistill.formats.sdz import save_sdz
    from splatdistill.formats.spz import write_spz

    scene = box_scene(300, sh_std=0.1)
    sdz = save_sdz(scene, tmp_path / "ok.sdz").read_bytes()
    spz = write_spz(scene, tmp_path / "ok.spz").read_bytes()
    files = {
        "trunc.sdz": sdz[: len(sdz) // 2],
        "flip.sdz": sdz[:-40] + bytes([sdz[-40] ^ 0xFF]) + sdz[-39:],
        "trunc.spz": spz[: len(spz) // 2],
        "junk.spz": b"\x1f\x8b" + os.urandom(64),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return [tmp_path / n for n in files]


def test_corrupt_inputs_exit_2_one_line(tmp_path, capsys):
    for p in _corrupt_files(tmp_path):
        for args in (
            ("info", p),
            ("convert", p, tmp_path / "x.ply"),
            ("compress", p, "--out", tmp_path / "o", "--iterations", "0"),
        ):
            code, _, err = run_cli(capsys, *args)
            assert_one_line_error(code, err, p.name)
        assert not (tmp_path / "x.ply").exists()


@pytest.mark.parametrize("floor,collapses", [(1e-6, True), (1.0, False)])
def test_confidence_entropy_term_does_not_collapse_the_betas(floor, collapses):
    """The entropy of a Beta is unbounded below as a shape goes to 0: with the paper's 1e-6 floor,
    its regulariser alone drives every confidence to a point mass (c frozen, no gradient left);
    with our floor of 1 the confidences stay trainable."""
    pol = ConfidencePolicy(256, shape_floor=floor)
    for _ in range(400):
        pol.optimizer().zero_grad()
        pol.loss().backward()
        pol.optimizer().step()
    al, be = pol.alpha_beta()
    c = al / (al + be)
    (grad_a,) = torch.autograd.grad(c.sum(), pol.a)
    frozen = bool((torch.minimum(al, be) < 1e-3).all()) and float(grad_a.abs().max()) < 1e-4
    assert frozen == collapses
    if not collapses:
        assert 0.05 < float(c.detach().mean()) < 0.99


def test_rate_distortion_minor_ticks_label_only_2_3_5():
    from splatdistill.compress.sweep import minor_label

    assert [minor_label(x) for x in (0.02, 0.03, 0.05, 0.07, 0.09, 300.0, 400.0)] == [
        "0.02",
        "0.03",
        "0.05",
        "",
        "",
        "300",
        "",
    ]


def test_compress_with_residual_vq_of_scales_and_rotations(model_ply, tmp_path):
    """--rvq-stages: the .sdz stores scales and rotations as R-VQ indices, the fine-tune runs, and
    the viewer-ready PLY is the decoded scene."""
    s = compress_model(
        model_ply, tmp_path / "c", None, CompressConfig(**{**FAST, "prune": 0.5, "rvq_stages": 2, "rvq_size": 16})
    )
    info = s["stages"]["rvq"]
    assert info["stages"] == 2 and info["codebook_size_effective"] == 16 and info["loss"] is not None
    sections, meta = read_container(tmp_path / "c" / "model.sdz")
    assert meta["attributes"]["scales"]["encoding"] == "rvq" and "scales_rvq_index" in sections
    assert sections["quats_rvq_index"].shape == (1500, 2)
    decoded = load_sdz(tmp_path / "c" / "model.sdz")
    for k, v in read_ply(tmp_path / "c" / "model.ply").items():
        assert torch.equal(v, decoded.params[k]), k
    assert np.isfinite(s["psnr"]) and s["psnr"] > 20
    with pytest.raises(UserError, match="rvq"):
        CompressConfig(rvq_stages=-1).settings(3)
