"""Training backgrounds: ``auto`` picks random for RGBA data and the dataset's for RGB; the
random-background student, its soft targets and the compress fine-tunes composite everything on the
same colour; sparse training views."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from splatdistill.data.dataset import load_dataset, with_train_views
from splatdistill.distill.student import StudentConfig, StudentTrainer
from splatdistill.distill.targets import build_soft_targets, make_pseudo_cameras
from splatdistill.ops.background import dataset_has_alpha, resolve_background
from splatdistill.ops.losses import photometric_loss
from splatdistill.render import render
from splatdistill.scene.gaussians import GaussianScene
from splatdistill.train.config import TrainConfig
from splatdistill.train.trainer import Trainer


@pytest.fixture(scope="module")
def rgba(demo_scene_dir):
    return load_dataset(demo_scene_dir)


@pytest.fixture(scope="module")
def rgb_dir(demo_scene_dir, tmp_path_factory):
    """The demo scene with every image flattened to RGB by PIL (no alpha channel left)."""
    out = tmp_path_factory.mktemp("rgb_scene")
    shutil.copytree(demo_scene_dir, out, dirs_exist_ok=True)
    for png in out.rglob("*.png"):
        im = Image.open(png).convert("RGBA")
        flat = Image.new("RGB", im.size, (255, 255, 255))
        flat.paste(im, mask=im.getchannel("A"))
        flat.save(png)
    return out


def teacher(seed, n=300):
    # colours inside [0, 1] (degree-0 SH of a colour in [0.1, 0.9]) so no render needs clamping
    s = GaussianScene.random_in_box(n, [-0.6] * 3, [0.6] * 3, sh_degree=1, seed=seed, init_opacity=0.5)
    g = torch.Generator().manual_seed(seed)
    s.params["sh0"] = ((torch.rand(n, 1, 3, generator=g) * 0.8 + 0.1) - 0.5) / 0.28209479177387814
    s.params["shN"] = torch.zeros_like(s.shN)
    return s


def test_auto_background_is_random_for_rgba_and_the_datasets_for_rgb(rgba, rgb_dir, tmp_path):
    rgb = load_dataset(rgb_dir)
    assert dataset_has_alpha(rgba) and not dataset_has_alpha(rgb)
    assert resolve_background("auto", rgba) == "random"
    assert resolve_background("auto", rgb) == "dataset"
    for explicit in ("white", "black", "dataset", "random"):
        assert resolve_background(explicit, rgba) == explicit
    assert TrainConfig().background == "auto" and StudentConfig().background == "auto"
    assert Trainer(rgba, tmp_path / "a", TrainConfig(iterations=1, init_points=50)).bg_mode == "random"
    assert Trainer(rgb, tmp_path / "b", TrainConfig(iterations=1, init_points=50)).bg_mode == "dataset"
    t = Trainer(rgba, tmp_path / "c", TrainConfig(iterations=1, init_points=50, background="white"))
    assert t.bg_mode == "white" and t.background == (1.0, 1.0, 1.0)
    k = Trainer(rgba, tmp_path / "d", TrainConfig(iterations=1, init_points=50, background="black"))
    view = rgba.split("train")[0]  # the ground truth is composited on the colour the renders use
    assert torch.equal(k._images_of(view), rgba.image_on(view, (0.0, 0.0, 0.0)))
    assert not torch.equal(k._images_of(view), rgba.image(view))


def test_recomposited_soft_target_equals_the_teachers_rendered_on_that_background(rgba):
    cams = [v.camera for v in rgba.split("train")[:2]]
    a, b = teacher(1), teacher(2)
    t = build_soft_targets(
        [a, b], cams, 2, rgba.background, "cpu", weights=[3.0, 1.0], progress=False, with_alpha=True, with_spread=True
    )
    assert t.alpha is not None and t.spread is not None
    for bg in [(0.2, 0.7, 0.4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)]:
        ra = render(a, [cams[1]], background=bg).rgb[0]
        rb = render(b, [cams[1]], background=bg).rgb[0]
        want = (0.75 * ra + 0.25 * rb).clamp(0, 1)
        got = t.image(1, background=torch.tensor(bg))
        assert (got - want).abs().max() < 2e-3  # fp16 storage
    # spread: the weighted std of the two renders (on black, with alpha), RMS over four channels
    ra = torch.cat(
        [
            render(a, [cams[0]], background=(0, 0, 0)).rgb[0],
            render(a, [cams[0]], background=(0, 0, 0)).alpha[0, ..., None],
        ],
        -1,
    )
    rb = torch.cat(
        [
            render(b, [cams[0]], background=(0, 0, 0)).rgb[0],
            render(b, [cams[0]], background=(0, 0, 0)).alpha[0, ..., None],
        ],
        -1,
    )
    m = 0.75 * ra + 0.25 * rb
    var = (0.75 * (ra - m) ** 2 + 0.25 * (rb - m) ** 2).mean(-1)
    assert (t.spread_of(0) - var.sqrt()).abs().max() < 3e-3
    with pytest.raises(ValueError, match="background"):
        t.image(0)


def test_random_background_student_uses_one_colour_for_render_ground_truth_and_target(rgba, tmp_path):
    """Each step draws a colour; the student's render, the ground truth and the soft target are all
    on it: the terms equal the photometric loss against images composited on that colour."""
    tch = teacher(3)
    train = [v.camera for v in rgba.split("train")]
    cams = train + make_pseudo_cameras(train, 4, rgba.extent, seed=0)
    targets = build_soft_targets([tch], cams, len(train), rgba.background, "cpu", progress=False, with_alpha=True)
    cfg = StudentConfig(iterations=5, keep=0.5, struct="none", lambda_kd=0.4)
    st = StudentTrainer(rgba, targets, tch, cfg, tmp_path / "s", "cpu", progress=False)
    assert st.bg_mode == "random"
    seen = []
    for idx, is_train in [(0, True), (len(train) + 1, False), (2, True)]:
        terms = st.losses(idx, is_train, 0, {})
        bg = st._last_background
        seen.append(tuple(bg.tolist()))
        with torch.no_grad():
            cam = train[idx] if is_train else cams[idx]
            pred = render(st.scene(), [cam], background=tuple(bg.tolist())).rgb
            teacher_on_bg = render(tch, [cam], background=tuple(bg.tolist())).rgb.clamp(0, 1)
            kd = cfg.lambda_kd * photometric_loss(pred, teacher_on_bg)
            assert abs(float(terms["kd"]) - float(kd)) < 2e-3
            if is_train:
                view = rgba.split("train")[idx]
                gt = rgba.image_on(view, tuple(bg.tolist())).unsqueeze(0)
                assert abs(float(terms["gt"]) - float(photometric_loss(pred, gt))) < 2e-3
    assert len(set(seen)) == 3  # a new colour every step


def test_student_rejects_fixed_background_targets_in_random_mode(rgba, tmp_path):
    tch = teacher(4)
    train = [v.camera for v in rgba.split("train")]
    targets = build_soft_targets([tch], train, len(train), rgba.background, "cpu", progress=False)
    with pytest.raises(ValueError, match="alpha"):
        StudentTrainer(rgba, targets, tch, StudentConfig(iterations=2), tmp_path / "s", "cpu", progress=False)
    # on the dataset's background the same targets are fine
    StudentTrainer(
        rgba, targets, tch, StudentConfig(iterations=2, background="dataset"), tmp_path / "s2", "cpu", progress=False
    )


def test_teacher_term_options(rgba, tmp_path):
    """Annealed weight, agreement weights (one teacher agrees with itself: weight 1) and the pool of
    far pseudo views."""
    cfg = StudentConfig(iterations=100, lambda_kd=0.4, kd_anneal=0.5)
    assert cfg.kd_at(0) == pytest.approx(0.4) and cfg.kd_at(25) == pytest.approx(0.2) and cfg.kd_at(50) == 0.0
    assert StudentConfig(lambda_kd=0.4).kd_at(99) == 0.4
    tch = teacher(5)
    train = [v.camera for v in rgba.split("train")]
    cams = train + make_pseudo_cameras(train, 10, rgba.extent, seed=0)
    targets = build_soft_targets(
        [tch], cams, len(train), rgba.background, "cpu", progress=False, with_alpha=True, with_spread=True
    )
    st = StudentTrainer(
        rgba,
        targets,
        tch,
        StudentConfig(iterations=5, kd_weight="agreement", kd_far=0.3, lambda_kd=0.4),
        tmp_path / "s",
        "cpu",
        progress=False,
    )
    assert torch.equal(st.kd_weights(3), torch.ones_like(st.kd_weights(3)))
    # the 3 of 10 pseudo views farthest from every training camera
    centres = np.stack([c.center for c in train])
    d = {i: np.linalg.norm(centres - cams[i].center, axis=1).min() for i in range(len(train), len(cams))}
    far = sorted(d, key=d.get, reverse=True)[:3]
    assert st.pseudo_pool == sorted(far)
    picks = [st._pick(0) for _ in range(40)]
    assert {i for i, is_train in picks if not is_train} <= set(far)
    assert any(not is_train for _, is_train in picks)
    from splatdistill.errors import UserError

    with pytest.raises(UserError, match="--kd-far"):
        StudentConfig(kd_far=0.0).validate()


def test_train_views_subset_is_evenly_spaced_and_keeps_the_test_split(rgba):
    sub = with_train_views(rgba, 5)
    names = [v.camera.image_name for v in rgba.split("train")]
    assert [v.camera.image_name for v in sub.split("train")] == [names[i] for i in (0, 6, 12, 17, 23)]
    assert sub.split("test") == rgba.split("test")
    assert with_train_views(rgba, None) is rgba and with_train_views(rgba, 1000) is rgba
    from splatdistill.errors import UserError

    with pytest.raises(UserError, match="--train-views"):
        with_train_views(rgba, 0)


def test_compress_fine_tune_targets_composite_on_the_step_colour(rgba, demo_scene_dir):
    from splatdistill.compress.pipeline import CompressConfig, Layered, prepare_targets

    t = prepare_targets(teacher(6), demo_scene_dir, CompressConfig(), torch.device("cpu"))
    assert t.random_background and t.background == tuple(rgba.background)
    view = rgba.split("train")[1]
    x = t.image(t.train_images, 1)
    assert isinstance(x, Layered)
    bg = torch.tensor([0.3, 0.9, 0.1])
    want = rgba.image_on(view, (0.3, 0.9, 0.1))
    assert (x.on(bg) - want).abs().max() <= 2.5 / 255  # uint8 composites
    r = t.teacher_render(view.camera)
    assert (
        r.on(bg) - render(t.teacher, [view.camera], background=(0.3, 0.9, 0.1)).rgb[0].clamp(0, 1)
    ).abs().max() < 1e-5
    # evaluation stays on the dataset's background; an explicit background turns it off
    assert torch.equal(t.image(t.eval_images, 0), rgba.image(rgba.split("test")[0]))
    fixed = prepare_targets(teacher(6), demo_scene_dir, CompressConfig(background=(1.0, 1.0, 1.0)), torch.device("cpu"))
    assert not fixed.random_background and not isinstance(fixed.image(fixed.train_images, 0), Layered)


def test_teacher_selection_drops_teachers_below_the_margin(rgba, tmp_path):
    from splatdistill.distill.targets import select_teachers
    from splatdistill.formats.ply import write_ply
    from splatdistill.ops.ssim import psnr

    scenes = [teacher(7), teacher(8), teacher(9)]
    scenes[1].params["sh0"] = torch.full_like(scenes[1].sh0, -0.5 / 0.28209479177387814)  # black blobs
    scenes[1].params["opacities"] = scenes[1].opacities + 4.0
    plys = []
    for i, s in enumerate(scenes):
        write_ply(s, tmp_path / f"t{i}.ply")
        plys.append(tmp_path / f"t{i}.ply")
    views = rgba.split("train")
    want = []
    for s in scenes:  # independent: the evaluator's PSNR per view, averaged
        with torch.no_grad():
            want.append(
                np.mean(
                    [
                        float(psnr(render(s, [v.camera], background=rgba.background).rgb[0].clamp(0, 1), rgba.image(v)))
                        for v in views
                    ]
                )
            )
    kept, scores = select_teachers(plys, rgba, 0.05, "cpu", progress=False)
    np.testing.assert_allclose(scores, want, atol=1e-3)
    assert kept == [p for p, s in zip(plys, want) if s >= max(want) - 0.05]
    assert len(kept) < 3
    assert select_teachers(plys, rgba, None, "cpu")[0] == plys
    assert select_teachers(plys, rgba, 100.0, "cpu", progress=False)[0] == plys


def test_depth_targets_are_the_teachers_alpha_weighted_mean_depth_where_opaque(rgba):
    t1, t2 = teacher(5, n=400), teacher(6, n=400)
    for t in (t1, t2):
        t.params["opacities"] = torch.full_like(t.opacities, 3.0)  # mostly opaque renders
    cams = [v.camera for v in rgba.split("train")][:3]
    targets = build_soft_targets([t1, t2], cams, 3, rgba.background, "cpu", progress=False, with_depth=True)
    from splatdistill.cameras.camera import stack_cameras

    num, den = 0.0, 0.0
    for t in (t1, t2):
        out = render(t, stack_cameras(cams, "cpu"), background=rgba.background, render_depth=True)
        num, den = num + 0.5 * out.alpha * out.depth, den + 0.5 * out.alpha
    den = den.numpy()
    ref = np.where(den > 0.5, num.numpy() / np.maximum(den, 1e-12), 0.0)
    assert (den > 0.5).mean() > 0.05 and (den <= 0.5).mean() > 0.05  # both kinds of pixel occur
    np.testing.assert_allclose(targets.depth, ref, rtol=1e-5, atol=1e-6)
    assert build_soft_targets([t1], cams, 3, rgba.background, "cpu", progress=False).depth is None


def test_depth_term_is_zero_for_the_teacher_itself_and_pulls_a_shifted_student_back(rgba, tmp_path):
    from splatdistill.distill.student import depth_loss
    from splatdistill.errors import UserError

    tch = teacher(5, n=400)
    tch.params["opacities"] = torch.full_like(tch.opacities, 3.0)
    train = [v.camera for v in rgba.split("train")]
    cams = train + make_pseudo_cameras(train, 4, rgba.extent, seed=0)
    targets = build_soft_targets([tch], cams, len(train), rgba.background, "cpu", progress=False, with_depth=True)
    cfg = StudentConfig(iterations=5, lambda_kd=0.4, lambda_depth=0.1, background="white")
    st = StudentTrainer(rgba, targets, tch, cfg, tmp_path / "s", "cpu", progress=False)
    pseudo = len(train)
    terms = st.losses(pseudo, False, 0, {})
    assert float(terms["depth"].detach()) < 1e-5  # the student starts as the teacher: same depth
    assert "depth" not in st.losses(0, True, 0, {})  # no depth term on training views
    # move the student away from the camera: its depth grows, the term is positive and its gradient
    # on the means has a positive component towards the camera
    cam = targets.cameras[pseudo]
    toward = torch.as_tensor(cam.center, dtype=torch.float32) - st.params["means"].detach()
    toward = toward / toward.norm(dim=1, keepdim=True)
    with torch.no_grad():
        st.params["means"] -= 0.1 * toward
    for p in st.params.values():
        p.grad = None
    terms = st.losses(pseudo, False, 0, {})
    assert float(terms["depth"]) > 1e-3
    terms["depth"].backward()
    g = st.params["means"].grad
    assert float((-g * toward).sum()) > 0  # descending the gradient moves the means toward the camera
    # the loss itself: masked mean, 0 without target pixels
    d, tgt = torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, 0.0]])
    assert float(depth_loss(d, tgt, 2.0)) == pytest.approx(0.5)
    assert float(depth_loss(d, torch.zeros_like(tgt), 2.0)) == 0.0
    with pytest.raises(UserError, match="--lambda-depth"):
        StudentConfig(lambda_depth=0.1).validate()
