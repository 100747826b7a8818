"""Training: a short run learns the demo scene; variants; branching; kill -9 and --resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from splatdistill.train.config import TrainConfig
from splatdistill.train.trainer import Trainer, TrainingDiverged
from splatdistill.train.variants import dropout_probability, dropout_scale, perturb_candidates


def test_short_run_learns_and_writes_outputs(demo_scene_dir, tmp_path):
    cfg = TrainConfig(iterations=250, checkpoint_every=100, init_points=1500)
    tr = Trainer(demo_scene_dir, tmp_path / "run", cfg, progress=False)
    res = tr.run()
    log = [json.loads(l) for l in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["iteration"] == 250
    early = np.mean([r["psnr"] for r in log[:3]])
    late = np.mean([r["psnr"] for r in log[-3:]])
    assert late > early + 3.0, (early, late)
    for name in ("point_cloud.ply", "config.json", "train_log.jsonl"):
        assert (tmp_path / "run" / name).exists()
    assert len(res.scene) != 1500  # densification changed the count
    norm = json.loads((tmp_path / "run" / "config.json").read_text())["normalization"]
    assert norm == tr.dataset.normalization.to_dict()  # maps the model back to the input frame


def test_dropout_schedule_and_rescaling():
    assert dropout_probability(100, 100, 200, 0.2, 0.35) == pytest.approx(0.2)
    assert dropout_probability(200, 100, 200, 0.2, 0.35) == pytest.approx(0.35)
    s = dropout_scale(200_000, 0.3, torch.Generator().manual_seed(0))
    assert torch.unique(s).tolist() == pytest.approx([0.0, 1 / 0.7])
    assert s.mean().item() == pytest.approx(1.0, abs=0.01)  # unbiased in expectation


def test_noise_perturbs_only_candidates_and_resets_their_moments():
    params = {
        k: torch.nn.Parameter(torch.randn(10, *shape))
        for k, shape in {"means": (3,), "opacities": (), "scales": (3,), "quats": (4,)}.items()
    }
    opt = {k: torch.optim.Adam([p], lr=0.1) for k, p in params.items()}
    for p in params.values():
        p.grad = torch.ones_like(p)
    for o in opt.values():
        o.step()
    before = {k: p.detach().clone() for k, p in params.items()}
    cand = torch.zeros(10, dtype=torch.bool)
    cand[[2, 5]] = True
    assert perturb_candidates(params, opt, cand, 0.1, torch.Generator().manual_seed(0)) == 2
    for k, p in params.items():
        changed = (p.detach() != before[k]).reshape(10, -1).any(dim=1)
        assert changed.tolist() == cand.tolist(), k
        st = opt[k].state[p]
        assert (st["exp_avg"][cand] == 0).all() and (st["exp_avg"][~cand] != 0).all()


def test_variants_branch_from_a_shared_checkpoint(demo_scene_dir, tmp_path):
    """noise and dropout teachers start from the vanilla run's checkpoint and diverge from it."""
    base = TrainConfig(iterations=60, checkpoint_every=30, init_points=800, refine_stop=0.0)
    Trainer(demo_scene_dir, tmp_path / "vanilla", base, progress=False).run()
    ckpt = tmp_path / "vanilla" / "ckpt" / "ckpt_0000030.pt"
    assert ckpt.exists()
    v = base.variant_cfg
    v.noise_start, v.noise_end, v.noise_every = 0.5, 1.0, 0.1
    v.dropout_start = 0.5
    scenes = {}
    for variant in ("noise", "dropout"):
        cfg = TrainConfig(**{**base.__dict__, "variant": variant, "variant_cfg": v})
        tr = Trainer(demo_scene_dir, tmp_path / variant, cfg, branch_from=ckpt, progress=False)
        assert tr.start == 30
        log_start = tr.start
        scenes[variant] = tr.run().scene
        assert log_start == 30
    assert not torch.equal(scenes["noise"].means, scenes["dropout"].means)


def test_nan_loss_stops_with_clear_message(demo_scene_dir, tmp_path):
    cfg = TrainConfig(iterations=50, checkpoint_every=20, init_points=500)
    tr = Trainer(demo_scene_dir, tmp_path / "run", cfg, progress=False)
    orig = tr.step

    def poisoned(step, cache):
        if step == 30:
            with torch.no_grad():
                tr.params["sh0"][:] = float("nan")
        return orig(step, cache)

    tr.step = poisoned
    with pytest.raises(TrainingDiverged, match="iteration 30"):
        tr.run()
    # the last good checkpoint is kept
    assert (tmp_path / "run" / "ckpt" / "ckpt_0000020.pt").exists()


def test_kill_9_then_resume_finishes(demo_scene_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "splatdistill.cli",
        "train",
        str(demo_scene_dir),
        "--out",
        str(out),
        "--iterations",
        "200",
        "--checkpoint-every",
        "20",
        "--init-points",
        "800",
        "--no-eval",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    ck = out / "ckpt"
    while time.time() < deadline:
        if ck.exists() and any(p.name >= "ckpt_0000060.pt" for p in ck.glob("ckpt_*.pt")):
            break
        if proc.poll() is not None:
            pytest.fail("training ended before it could be killed")
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "point_cloud.ply").exists()
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    its = [x["iteration"] for x in log]
    assert its[-1] == 200 and its == sorted(its) and len(its) == len(set(its))
    assert (out / "point_cloud.ply").exists()
