"""Distillation: every loss term reaches the student's parameters; importance; targets; pipeline."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli
from splatdistill.data.dataset import load_dataset
from splatdistill.distill.student import StudentConfig, StudentTrainer, prune_schedule
from splatdistill.distill.targets import build_soft_targets, make_pseudo_cameras
from splatdistill.ops.importance import accumulated_weights, importance, top_k_mask
from splatdistill.render import render
from splatdistill.scene.gaussians import GaussianScene


@pytest.fixture(scope="module")
def dataset(demo_scene_dir):
    return load_dataset(demo_scene_dir)


def toy_teacher(n=600, seed=0, shift=0.0):
    s = GaussianScene.random_in_box(n, [-0.6] * 3, [0.6] * 3, sh_degree=1, seed=seed, init_opacity=0.6)
    s.params["means"] = s.means + shift
    return s


def test_accumulated_weights_equal_the_sum_of_alpha_times_transmittance(dataset):
    """The gradient trick against the dense reference's explicit weights."""

    scene = toy_teacher(40)
    cam = dataset.split("train")[0].camera.with_size(24, 24)
    w_grad = accumulated_weights(scene, [cam], backend="reference")
    # explicit: render each Gaussian's weight as a one-hot feature
    feats = torch.eye(40)
    out = render(scene, [cam], features=feats, backend="reference")
    w_explicit = out.features[0].sum(dim=(0, 1))
    assert torch.allclose(w_grad, w_explicit, rtol=1e-4, atol=1e-6)
    w_cpu = accumulated_weights(scene, [cam], backend="cpu")
    assert torch.allclose(w_cpu, w_grad, rtol=1e-4, atol=1e-6)


def test_top_k_keeps_exactly_k_even_with_ties():
    scores = torch.zeros(100)
    scores[:3] = 1.0
    m = top_k_mask(scores, 10)
    assert int(m.sum()) == 10 and m[:3].all()


def test_soft_targets_are_the_weighted_mean_of_teacher_renders(dataset, tmp_path):
    cams = [v.camera for v in dataset.split("train")[:3]]
    a, b = toy_teacher(seed=1), toy_teacher(seed=2)
    t = build_soft_targets([a, b], cams, 3, (1.0, 1.0, 1.0), "cpu", weights=[3.0, 1.0], progress=False)
    ra = render(a, [cams[1]], background=(1.0, 1.0, 1.0)).rgb[0].clamp(0, 1)
    rb = render(b, [cams[1]], background=(1.0, 1.0, 1.0)).rgb[0].clamp(0, 1)
    assert torch.allclose(t.image(1), 0.75 * ra + 0.25 * rb, atol=2e-3)  # fp16 storage
    # spilled to disk when over the memory budget: same values
    t2 = build_soft_targets(
        [a, b],
        cams,
        3,
        (1.0, 1.0, 1.0),
        "cpu",
        weights=[3.0, 1.0],
        memory_budget_mb=1e-3,
        spill_dir=tmp_path,
        progress=False,
    )
    assert isinstance(t2.store, np.memmap)
    assert torch.allclose(t.image(2), t2.image(2), atol=2e-3)


def test_pseudo_cameras_keep_orientation(dataset):
    train = [v.camera for v in dataset.split("train")]
    ps = make_pseudo_cameras(train, 10, dataset.extent)
    assert len(ps) == 10
    rots = {tuple(np.round(c.world_to_camera[:3, :3], 6).ravel()) for c in train}
    jittered = ps[:5]
    assert all(tuple(np.round(c.world_to_camera[:3, :3], 6).ravel()) in rots for c in jittered)


def test_every_loss_term_passes_gradient_to_the_student(dataset, tmp_path):
    teacher = toy_teacher(800)
    train = [v.camera for v in dataset.split("train")]
    # the demo scene is RGBA: the default student trains on random backgrounds, on targets with alpha
    targets = build_soft_targets(
        [teacher, toy_teacher(800, seed=5)],
        train,
        len(train),
        dataset.background,
        "cpu",
        progress=False,
        with_alpha=True,
    )
    cfg = StudentConfig(iterations=10, keep=0.5, struct="joint", lambda_struct=0.1, lambda_kd=0.4)
    st = StudentTrainer(dataset, targets, teacher, cfg, tmp_path / "student", "cpu", progress=False)
    st.params["means"].data += 0.05  # the student differs from the teacher, so the structure term is live
    terms = st.losses(0, True, 0, {})
    terms.pop("_mse")
    assert set(terms) == {"gt", "kd", "struct"}
    expected = {
        "gt": ["means", "quats", "scales", "opacities", "sh0", "shN"],
        "kd": ["means", "quats", "scales", "opacities", "sh0", "shN"],
        "struct": ["means"],
    }
    for name, term in terms.items():
        grads = torch.autograd.grad(term, [st.params[k] for k in expected[name]], allow_unused=True, retain_graph=True)
        for k, g in zip(expected[name], grads):
            assert g is not None and g.abs().sum() > 0, (name, k)


def test_prune_schedule_reaches_target(dataset, tmp_path):
    teacher = toy_teacher(1000)
    cfg = StudentConfig(iterations=30, keep=0.1, struct="none", lambda_kd=0.0, prune_steps=3)
    assert sorted(prune_schedule(cfg)) == [0, 4, 8]
    st = StudentTrainer(dataset, None, teacher, cfg, tmp_path / "s", "cpu", progress=False)
    scene, _ = st.run()
    assert len(scene) == 100
    assert (tmp_path / "s" / "point_cloud.ply").exists()


def test_importance_scores(dataset):
    scene = toy_teacher(300)
    cams = [v.camera for v in dataset.split("train")[:4]]
    for score in ("significance", "blend", "opacity"):
        s = importance(scene, cams, score)
        assert s.shape == (300,) and (s >= 0).all()
    # a Gaussian moved far out of every view has zero blending weight
    scene.params["means"][0] = torch.tensor([100.0, 100.0, 100.0])
    assert importance(scene, cams, "blend")[0] == 0


def test_distill_pipeline_end_to_end(demo_scene_dir, tmp_path, capsys):
    from splatdistill.cli import main

    code = main(
        [
            "distill",
            str(demo_scene_dir),
            "--out",
            str(tmp_path / "d"),
            "--teacher-iterations",
            "60",
            "--iterations",
            "40",
            "--keep",
            "0.2",
            "--pseudo-views",
            "8",
            "--teacher-init-points",
            "1500",
        ]
    )
    assert code == 0
    s = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert [t["variant"] for t in s["teachers"]] == ["vanilla", "noise", "dropout"]
    for t in s["teachers"]:
        assert set(t) >= {"variant", "num_gaussians", "psnr", "ssim", "lpips_vgg"}
    st = s["student"]
    assert set(st) >= {"num_gaussians", "psnr", "ssim", "lpips_vgg", "wall_s"}
    vanilla = s["teachers"][0]["num_gaussians"]
    assert st["num_gaussians"] == round(0.2 * vanilla)
    for f in ("student/point_cloud.ply", "report.md", "views.png", "psnr_vs_gaussians.png"):
        assert (tmp_path / "d" / f).exists(), f
    # it prints the `view` command comparing the teachers and the student, and that command's models open
    import shlex

    line = [l for l in capsys.readouterr().out.splitlines() if "splatdistill view" in l]
    assert len(line) == 1, line
    words = shlex.split(line[0].split(": ", 1)[1])
    assert words[:2] == ["splatdistill", "view"] and words[-2:] == ["--data", str(demo_scene_dir)]
    assert words[2:-2] == [t["path"] for t in s["teachers"]] + [str(tmp_path / "d" / "student" / "point_cloud.ply")]
    assert all(os.path.isfile(w) for w in words[2:-2])
    # the next call reuses the teachers
    mtime = (tmp_path / "d" / "teachers" / "vanilla" / "point_cloud.ply").stat().st_mtime
    main(
        [
            "distill",
            str(demo_scene_dir),
            "--out",
            str(tmp_path / "d"),
            "--teacher-iterations",
            "60",
            "--iterations",
            "20",
            "--keep",
            "0.2",
            "--pseudo-views",
            "8",
            "--teacher-init-points",
            "1500",
        ]
    )
    assert (tmp_path / "d" / "teachers" / "vanilla" / "point_cloud.ply").stat().st_mtime == mtime


def test_student_from_scratch_densifies_then_prunes_to_target(dataset, tmp_path):
    """--student-init sfm: trained from the dataset's initialisation, pruned by importance in training."""
    teacher = toy_teacher(2000)
    cfg = StudentConfig(iterations=60, keep=0.05, init="sfm", struct="none", lambda_kd=0.0, init_points=500)
    assert sorted(prune_schedule(cfg)) == [24, 30]
    st = StudentTrainer(dataset, None, teacher, cfg, tmp_path / "s", "cpu", progress=False)
    scene, _ = st.run()
    assert len(scene) == 100


def test_demo_runs_the_whole_pipeline_small(tmp_path, capsys):
    """What `make demo` runs, at a tiny size: scene, teachers, student, report, compressed package."""
    from splatdistill.demo import run_demo

    s = run_demo(
        tmp_path / "demo",
        teacher_iterations=30,
        student_iterations=20,
        resolution=24,
        compress_iterations=4,
        train_views=12,
        test_views=3,
        init_points=800,
    )
    out = capsys.readouterr().out
    assert "| student |" in out and "compressed student" in out
    assert s["student"]["num_gaussians"] == round(0.12 * s["teachers"][0]["num_gaussians"])
    assert (
        s["compressed"]["output_bytes"] < (tmp_path / "demo" / "distill" / "student" / "point_cloud.ply").stat().st_size
    )
    assert (tmp_path / "demo" / "compressed" / "model.sdz").exists()


@pytest.mark.parametrize("policy", ["mask", "confidence"])
def test_student_learned_gate_prunes_to_target_and_is_baked(dataset, tmp_path, policy):
    """--prune-policy mask|confidence: the gate trains with the student (its regulariser reaches the
    gate parameters), pruning ends at or below the target, and the exported PLY renders exactly the
    gated scene that was trained."""
    from splatdistill.formats.ply import read_ply

    teacher = toy_teacher(1000)
    cfg = StudentConfig(iterations=12, keep=0.2, struct="none", lambda_kd=0.0, prune_steps=2, prune_policy=policy)
    st = StudentTrainer(dataset, None, teacher, cfg, tmp_path / "s", "cpu", progress=False)
    st._prune(0, 2)  # the first pruning step creates the gate
    assert st.policy is not None and st.policy.name == policy
    terms = st.losses(0, True, 0, {})
    assert "gate" in terms
    for name in ("gt", "gate"):
        grads = torch.autograd.grad(terms[name], st.policy.parameters(), retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name
    st = StudentTrainer(dataset, None, teacher, cfg, tmp_path / "s", "cpu", progress=False)
    scene, _ = st.run()
    assert 0 < len(scene) <= 200
    assert st.policy_stats["policy"] == policy
    if policy == "confidence":
        assert 0.0 < st.policy_stats["mean_confidence"] < 1.0
    # the file holds the baked scene: it renders like the live scene with its gate applied
    live, opacity_scale = st.policy.render_inputs(st.scene().detach())
    cams = [v.camera for v in dataset.split("test")[:2]]
    with torch.no_grad():
        gated = render(live, cams, background=dataset.background, opacity_scale=opacity_scale).rgb
        baked = render(read_ply(tmp_path / "s" / "point_cloud.ply"), cams, background=dataset.background).rgb
    assert len(read_ply(tmp_path / "s" / "point_cloud.ply")) == len(scene)
    assert (gated - baked).abs().max() < 1e-4


def test_distill_cli_rejects_unknown_prune_policy(demo_scene_dir, tmp_path, capsys):
    from splatdistill.cli import main

    code = main(["distill", str(demo_scene_dir), "--out", str(tmp_path / "d"), "--prune-policy", "magic"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "magic" in err and "significance, mask, confidence" in err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--keep", "1.5"], "--keep"),
        (["--keep", "0"], "--keep"),
        (["--target-gaussians", "0"], "--target-gaussians"),
        (["--iterations", "0"], "--iterations"),
        (["--teacher-iterations", "0"], "--teacher-iterations"),
        (["--lambda-gt", "0", "--lambda-kd", "0"], "nothing to fit"),
    ],
)
def test_distill_rejects_bad_settings_before_training(demo_scene_dir, tmp_path, capsys, flags, needle):
    code, _, err = run_cli(capsys, "distill", demo_scene_dir, "--out", tmp_path / "d", *flags)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "d" / "teachers").exists()  # nothing was trained


def test_train_rejects_bad_settings(demo_scene_dir, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", demo_scene_dir, "--out", tmp_path / "t", "--iterations", "0")
    assert_one_line_error(code, err, "--iterations")


def test_teacher_wall_time_adds_up_resumed_segments(tmp_path):
    from splatdistill.distill.pipeline import teacher_wall_s

    ply = tmp_path / "point_cloud.ply"
    assert teacher_wall_s(ply) is None  # no log
    rows = [(10, 1.0), (20, 2.5), (30, 1.5), (40, 4.0)]  # killed after 2.5 s, resumed for 4.0 s
    (tmp_path / "train_log.jsonl").write_text(
        "\n".join(json.dumps({"iteration": i, "elapsed_s": e}) for i, e in rows) + "\n"
    )
    assert teacher_wall_s(ply) == pytest.approx(6.5)


def test_kd_on_pseudo_views_only(dataset, tmp_path):
    """--kd-views pseudo: training views see the ground truth alone, pseudo views the teachers."""
    teacher = toy_teacher(400)
    train = [v.camera for v in dataset.split("train")]
    cams = train + make_pseudo_cameras(train, 4, dataset.extent, seed=0)
    targets = build_soft_targets(
        [teacher], cams, len(train), dataset.background, "cpu", progress=False, with_alpha=True
    )
    cfg = StudentConfig(iterations=5, keep=0.5, struct="none", kd_views="pseudo", lambda_kd=0.4)
    st = StudentTrainer(dataset, targets, teacher, cfg, tmp_path / "s", "cpu", progress=False)
    on_train = st.losses(0, True, 0, {})
    on_pseudo = st.losses(len(train) + 1, False, 0, {})
    assert "kd" not in on_train and "gt" in on_train
    assert "kd" in on_pseudo and "gt" not in on_pseudo
    from splatdistill.errors import UserError

    with pytest.raises(UserError, match="training views without a loss"):
        StudentConfig(kd_views="pseudo", lambda_gt=0.0, lambda_kd=0.4).validate()


def test_student_resumes_after_a_crash_to_the_same_result(dataset, tmp_path, monkeypatch):
    """A student killed mid-run continues from its newest checkpoint and ends where an uninterrupted
    run ends; a finished run leaves no checkpoints behind."""
    teacher = toy_teacher(600)
    cfg = StudentConfig(
        iterations=30,
        keep=0.3,
        struct="none",
        lambda_kd=0.0,
        prune_steps=3,
        prune_policy="confidence",
        checkpoint_every=10,
    )
    ref, _ = StudentTrainer(dataset, None, teacher, cfg, tmp_path / "ref", "cpu", progress=False).run()
    assert not (tmp_path / "ref" / "ckpt").exists()

    calls = {"n": 0}
    real = StudentTrainer.losses

    def crashing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 26:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(StudentTrainer, "losses", crashing)
    with pytest.raises(KeyboardInterrupt):
        StudentTrainer(dataset, None, teacher, cfg, tmp_path / "s", "cpu", progress=False).run()
    assert sorted(p.name for p in (tmp_path / "s" / "ckpt").iterdir()) == ["ckpt_0000010.pt", "ckpt_0000020.pt"]
    monkeypatch.setattr(StudentTrainer, "losses", real)
    st = StudentTrainer(dataset, None, teacher, cfg, tmp_path / "s", "cpu", progress=False)
    scene, _ = st.run()
    log = [json.loads(l)["iteration"] for l in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    assert log == [10, 20, 30]
    for k in ("means", "opacities", "sh0"):
        torch.testing.assert_close(scene.params[k], ref.params[k], rtol=1e-5, atol=1e-6)


def test_ablation_trains_same_budget_students_and_writes_the_table(dataset, tmp_path):
    """--ablation: ground truth only, one teacher, three teachers, + joint structural loss, and the
    teacher term on pseudo views only; each at the configured student's budget, in summary.json
    and report.md (the configured student is one of them and is trained once)."""
    from splatdistill.distill.pipeline import run_distill
    from splatdistill.formats.ply import write_ply

    plys = []
    for i, variant in enumerate(("vanilla", "noise", "dropout")):
        run = tmp_path / "teachers" / variant
        run.mkdir(parents=True)
        write_ply(toy_teacher(500, seed=i), run / "point_cloud.ply")
        (run / "config.json").write_text(json.dumps({"variant": variant, "iterations": 1}))
        plys.append(run / "point_cloud.ply")
    cfg = StudentConfig(iterations=6, keep=0.2, prune_steps=2)
    s = run_distill(dataset, tmp_path / "d", teachers=plys, cfg=cfg, n_pseudo=4, ablation=True, progress=False)
    # the default student is ground truth only; the teacher rows get the paper's teacher weight
    assert set(s["ablation"]) == {
        "ground truth only (student)",
        "one teacher",
        "three teachers",
        "three teachers + joint",
        "three teachers, pseudo views only",
    }
    budget = round(0.2 * 500)
    for row in [*s["ablation"].values(), s["student"]]:
        assert row["num_gaussians"] == budget and np.isfinite(row["psnr"])
    assert s["ablation"]["ground truth only (student)"]["teachers"] == 0
    assert s["ablation"]["one teacher"]["teachers"] == 1
    assert s["ablation"]["ground truth only (student)"] == s["student"]
    assert s["ablation"]["three teachers"] != s["ablation"]["ground truth only (student)"]
    report = (tmp_path / "d" / "report.md").read_text()
    for label in s["ablation"]:
        assert f"| student: {label} |" in report


def test_interrupted_branched_teacher_resumes_its_own_run(demo_scene_dir, tmp_path, monkeypatch):
    """A noise teacher killed after its branch continues from its own checkpoint on the next
    `distill` call instead of starting again from the branch point."""
    from splatdistill.distill.pipeline import train_teachers
    from splatdistill.train import checkpoint as ck
    from splatdistill.train import trainer as trainer_mod

    ds = load_dataset(demo_scene_dir)
    out = tmp_path / "teachers"
    train_teachers(ds, out, 60, "cpu", progress=False, init_points=300)
    noise = out / "noise"
    own = ck.list_checkpoints(noise)
    assert own, "the noise teacher writes checkpoints of its own"
    (noise / "point_cloud.ply").unlink()  # as if it had been killed before finishing
    seen = {}
    real_init = trainer_mod.Trainer.__init__

    def spy(self, *a, **k):
        real_init(self, *a, **k)
        seen[Path(a[1]).name] = self.resumed_from

    monkeypatch.setattr(trainer_mod.Trainer, "__init__", spy)
    train_teachers(ds, out, 60, "cpu", progress=False, init_points=300)
    assert seen == {"noise": int(own[-1].stem.split("_")[1])}  # its newest checkpoint, not the branch
    assert (noise / "point_cloud.ply").exists()


def test_ablation_rows_are_valid_for_any_student_config():
    """Each --ablation row validates (the ground-truth row drops --lambda-depth, which needs the
    teachers), and the configured student is named "student" where it equals a row."""
    from pathlib import Path

    from splatdistill.distill.pipeline import ablation_runs

    plys, vanilla = [Path("v.ply"), Path("n.ply"), Path("d.ply")], Path("v.ply")
    for cfg in (
        StudentConfig(),
        StudentConfig(lambda_kd=0.4, lambda_depth=0.1),
        StudentConfig(lambda_kd=0.4, struct="joint"),
    ):
        runs = ablation_runs(cfg, plys, vanilla)
        for c, _ in runs.values():
            c.validate()
        assert runs["student"][0] == cfg and len(runs) == 5  # the student is one of the rows here
    runs = ablation_runs(StudentConfig(lambda_kd=0.4, lambda_depth=0.1), plys, vanilla)
    assert runs["gt_only"][0].lambda_depth == 0.0 and runs["gt_only"][1] == []
    assert set(ablation_runs(StudentConfig(), plys, vanilla)) == {
        "student",
        "one_teacher",
        "three_teachers",
        "three_teachers_joint",
        "three_teachers_pseudo",
    }
    assert "three_teachers_joint" not in ablation_runs(StudentConfig(lambda_kd=0.4, struct="joint"), plys, vanilla)
