"""The cpu backend against the dense reference; gradients; gsplat parity; strategy integration."""

import math
import os
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import torch

from helpers import assert_close, look_at_camera, random_scene
from splatdistill.cameras.camera import Camera
from splatdistill.render import render
from splatdistill.scene.gaussians import GaussianScene

# anisotropic Gaussians of 0.01 to 0.4 around the origin, in view of ``make_camera``
scene_in_view = partial(random_scene, extent=1.2, log_scales=(-4.6, -0.9), sh0=1.4, shN=0.5)


def add_special_gaussians(scene: GaussianScene, cam: Camera) -> GaussianScene:
    """Behind the camera, off screen, sub-pixel, screen-filling Gaussians, in front of ``cam``."""
    c2w = cam.camera_to_world
    pts_cam = np.array(
        [
            [0.0, 0.0, -1.0],  # behind the camera
            [0.3, 0.1, 0.005],  # nearer than the near plane
            [50.0, 0.0, 2.0],  # far off screen
            [0.01, -0.02, 2.5],  # sub-pixel
            [0.0, 0.0, 1.5],  # screen-filling
            [0.2, 0.2, 2.0],  # overlapping the screen-filling one
        ]
    )
    pts = (c2w[:3, :3] @ pts_cam.T).T + c2w[:3, 3]
    sc = np.log(np.array([[0.1] * 3, [0.1] * 3, [0.2] * 3, [1e-4] * 3, [3.0, 2.0, 0.5], [0.3, 0.05, 0.1]]))
    n = len(pts)
    extra = GaussianScene(
        torch.tensor(pts, dtype=torch.float32),
        torch.randn(n, 4, generator=torch.Generator().manual_seed(7)),
        torch.tensor(sc, dtype=torch.float32),
        torch.tensor([2.0, 2.0, 2.0, 3.0, -1.0, 0.5]),
        torch.rand(n, 1, 3) - 0.5,
        torch.zeros(n, scene.shN.shape[1], 3),
    )
    return GaussianScene.concat([scene, extra])


def make_camera(w=48, h=40, eye=(0.3, -3.2, 0.8)) -> Camera:
    """fx != fy and an off-centre principal point, so that a swapped axis shows."""
    return look_at_camera(w, h, eye, fy=0.95 * w, cx=w / 2 + 1.3, cy=h / 2 - 0.7)


def assert_grads_close(got: dict, want: dict, rel: float) -> None:
    """Each gradient of ``got`` within ``rel`` times the largest magnitude of the same one in ``want``."""
    for k, w in want.items():
        if w.numel() == 0:  # shN at degree 0
            continue
        scale = w.abs().max().item()
        assert scale > 0, k
        assert_close(got[k], w, rtol=0, atol=rel * scale, what=f"gradient of {k}")


def render_and_grad(scene, cams, backend, background, weights):
    params = {k: v.detach().clone().requires_grad_(True) for k, v in scene.items()}
    s = GaussianScene(**params, antialiased=scene.antialiased)
    out = render(s, cams, background=background, backend=backend, render_depth=True)
    loss = (out.rgb * weights).sum() + 0.7 * out.alpha.sum() + 0.05 * (out.depth * out.alpha).sum()
    grads = torch.autograd.grad(loss, list(params.values()))
    return out, dict(zip(params, grads))


@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
def test_cpu_matches_reference(sh_degree):
    cams = [make_camera(), make_camera(eye=(-2.5, 1.5, 1.9))]
    scene = add_special_gaussians(scene_in_view(150, sh_degree, seed=sh_degree), cams[0])
    bg = torch.tensor([[0.2, 0.5, 0.9], [1.0, 1.0, 1.0]])
    w = torch.rand(2, cams[0].height, cams[0].width, 3, generator=torch.Generator().manual_seed(1))
    ref, g_ref = render_and_grad(scene, cams, "reference", bg, w)
    cpu, g_cpu = render_and_grad(scene, cams, "cpu", bg, w)
    assert_close(cpu.rgb, ref.rgb, rtol=0, atol=1e-5, what="rgb")
    assert_close(cpu.alpha, ref.alpha, rtol=0, atol=1e-5, what="alpha")
    assert_close(ref.depth, cpu.depth, rtol=1e-4, atol=1e-4, what="depth")
    assert (cpu.info["radii"][0, -6] == 0).all() and (cpu.info["radii"][0, -5] == 0).all()  # culled
    assert (cpu.info["radii"][0, -4] == 0).all()  # off screen
    assert_grads_close(g_cpu, g_ref, 1e-3)


def test_means2d_gradient_matches_reference():
    cam = make_camera()
    scene = scene_in_view(80, 1, seed=11)
    grads = {}
    for b in ("reference", "cpu"):
        params = {k: v.detach().clone().requires_grad_(True) for k, v in scene.items()}
        out = render(GaussianScene(**params), [cam], backend=b)
        out.rgb.square().sum().backward()
        grads[b] = out.info["means2d"].grad
    assert grads["cpu"] is not None
    err = (grads["cpu"] - grads["reference"]).abs().max() / grads["reference"].abs().max()
    assert err <= 1e-3


def test_finite_differences_tiny_scene():
    """Directional derivatives of the cpu backend against central finite differences.

    The Gaussians are wide enough that every pixel is above the 1/255 alpha cut-off and far from the
    transmittance stop, so the rendered image is smooth in the parameters and differences are exact
    to first order.
    """
    cam = make_camera(24, 20, eye=(0.2, -2.5, 0.4))
    scene = scene_in_view(6, 1, seed=5)
    scene.params["means"] = scene.means * 0.25
    scene.params["opacities"] = torch.full((6,), 0.0)
    scene.params["scales"] = torch.log(torch.rand(6, 3, generator=torch.Generator().manual_seed(2)) * 0.6 + 0.9)
    target = torch.rand(1, 20, 24, 3, generator=torch.Generator().manual_seed(3))

    def loss_fn(params):
        out = render(GaussianScene(**params), [cam], background=(0.3, 0.3, 0.3), backend="cpu")
        return ((out.rgb - target) ** 2).double().sum()

    params = {k: v.detach().clone().requires_grad_(True) for k, v in scene.items()}
    loss = loss_fn(params)
    grads = torch.autograd.grad(loss, list(params.values()))
    g = torch.Generator().manual_seed(9)
    for (name, p), grad in zip(params.items(), grads):
        v = torch.randn(p.shape, generator=g)
        eps = 1e-3
        with torch.no_grad():
            plus = {k: (t + eps * v if k == name else t) for k, t in params.items()}
            minus = {k: (t - eps * v if k == name else t) for k, t in params.items()}
            fd = (loss_fn(plus) - loss_fn(minus)).item() / (2 * eps)
        an = (grad * v).sum().item()
        assert abs(fd - an) <= 2e-2 * max(abs(fd), abs(an)) + 1e-3, (name, fd, an)


def test_empty_and_invisible_scenes_render_background():
    cam = make_camera()
    scene = scene_in_view(10, 0, seed=1)
    scene.params["means"] = scene.means + torch.tensor([0.0, -100.0, 0.0])  # all behind the camera
    out = render(scene, [cam], background=(0.1, 0.2, 0.3), backend="cpu")
    assert torch.allclose(out.rgb[0], torch.tensor([0.1, 0.2, 0.3]).expand_as(out.rgb[0]))
    assert out.alpha.abs().max() == 0


def test_auto_backend_is_cpu_on_cpu_and_gsplat_refuses_cpu_tensors():
    from splatdistill.errors import UserError

    cam = make_camera()
    scene = scene_in_view(20, 0, seed=2)
    a = render(scene, [cam], backend="auto")
    b = render(scene, [cam], backend="cpu")
    assert torch.equal(a.rgb, b.rgb)
    with pytest.raises(UserError, match="CUDA"):
        render(scene, [cam], backend="gsplat")


def test_default_strategy_densifies_on_cpu_backend():
    """One refinement step of gsplat's DefaultStrategy on the cpu backend clones/splits and prunes."""
    from gsplat.strategy import DefaultStrategy

    cam = make_camera(64, 64)
    scene = scene_in_view(200, 1, seed=4)
    scene.params["opacities"][:20] = -8.0  # nearly transparent: pruned
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v.clone()) for k, v in scene.items()})
    optimizers = {k: torch.optim.Adam([params[k]], lr=1e-3) for k in params}
    strategy = DefaultStrategy(
        refine_start_iter=0, refine_every=1, grow_grad2d=1e-9, reset_every=10_000, prune_opa=0.005, verbose=False
    )
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state()
    target = torch.rand(1, 64, 64, 3)
    n_before = len(params["means"])
    out = render(GaussianScene(**dict(params)), [cam], backend="cpu")
    strategy.step_pre_backward(params, optimizers, state, 1, out.info)
    ((out.rgb - target) ** 2).mean().backward()
    strategy.step_post_backward(params, optimizers, state, 1, out.info, packed=False)
    n_after = len(params["means"])
    assert n_after != n_before
    # the transparent ones are gone; the visible ones with gradient were duplicated
    assert (torch.sigmoid(params["opacities"]) > 0.005).all()
    assert n_after > n_before - 20


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gsplat_matches_cpu():
    cam = make_camera(64, 48)
    scene = scene_in_view(300, 3, seed=3)
    w = torch.rand(1, 48, 64, 3)
    cpu, g_cpu = render_and_grad(scene, [cam], "cpu", torch.tensor([[0.2, 0.4, 0.6]]), w)
    gpu, g_gpu = render_and_grad(scene.to("cuda"), [cam], "gsplat", torch.tensor([[0.2, 0.4, 0.6]]).cuda(), w.cuda())
    assert_close(gpu.rgb, cpu.rgb, rtol=0, atol=1e-4, what="rgb")
    assert_close(gpu.alpha, cpu.alpha, rtol=0, atol=1e-4, what="alpha")
    assert_grads_close({k: v.cpu() for k, v in g_gpu.items()}, g_cpu, 1e-2)


def test_kernels_are_cached_on_disk(tmp_path):
    """A fresh process loads the compiled kernels from the on-disk cache instead of recompiling."""
    code = (
        "import time, numpy as np, torch\n"
        "from splatdistill.render import render\n"
        "from splatdistill.scene.gaussians import GaussianScene\n"
        "from splatdistill.cameras.camera import Camera\n"
        "s = GaussianScene.random_in_box(10, [-1,-1,2], [1,1,3])\n"
        "c = Camera(fx=20, fy=20, cx=8, cy=8, width=16, height=16, world_to_camera=np.eye(4))\n"
        "render(s, [c], backend='cpu')\n"
        "import splatdistill.render.cpu_kernels as K\n"
        "print(sum(K.rasterize_forward.stats.cache_hits.values()))\n"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        for _ in range(2)
    ]
    for r in runs:
        assert r.returncode == 0, r.stderr
    assert any(tmp_path.rglob("*.nbi"))
    hits = [int(r.stdout.strip().splitlines()[-1]) for r in runs]
    assert hits[0] == 0 and hits[1] >= 1


def test_trained_model_renders_the_same_under_cpu_and_reference(demo_scene_dir, tmp_path):
    """A model trained by our trainer (so: real, densified, optimised Gaussians) renders the same."""
    from splatdistill.data.dataset import load_dataset
    from splatdistill.formats.ply import read_ply
    from splatdistill.train.config import TrainConfig
    from splatdistill.train.trainer import Trainer

    cfg = TrainConfig(iterations=120, checkpoint_every=1000, init_points=1500, refine_every_min=20)
    Trainer(demo_scene_dir, tmp_path / "run", cfg, progress=False).run()
    scene = read_ply(tmp_path / "run" / "point_cloud.ply")
    ds = load_dataset(demo_scene_dir)
    cams = [v.camera for v in ds.split("test")[:2]]
    with torch.no_grad():
        a = render(scene, cams, background=(1.0, 1.0, 1.0), backend="cpu")
        b = render(scene, cams, background=(1.0, 1.0, 1.0), backend="reference")
    assert (a.rgb - b.rgb).abs().max() <= 1e-4
    assert (a.alpha - b.alpha).abs().max() <= 1e-4


def test_mcmc_strategy_on_cpu_is_refused_clearly(demo_scene_dir, tmp_path):
    from splatdistill.errors import UserError
    from splatdistill.train.config import TrainConfig
    from splatdistill.train.trainer import Trainer

    with pytest.raises(UserError, match="mcmc needs a CUDA GPU"):
        Trainer(demo_scene_dir, tmp_path / "r", TrainConfig(strategy="mcmc", device="cpu"), progress=False)


def test_fused_projection_matches_torch_projection():
    """The numba projection (values and hand-written gradients) against torch autograd."""
    from splatdistill.cameras.camera import stack_cameras
    from splatdistill.render.api import project_cpu
    from splatdistill.render.projection import project

    cams = [make_camera(), make_camera(eye=(-2.5, 1.5, 1.9))]
    scene = add_special_gaussians(scene_in_view(300, 0, seed=21), cams[0])
    batch = stack_cameras(cams)
    outs, grads = {}, {}
    g = torch.Generator().manual_seed(4)
    weights = None
    for name, fn in (("torch", project), ("fused", project_cpu)):
        means = scene.means.clone().requires_grad_(True)
        quats = scene.quats.clone().requires_grad_(True)
        scales = torch.exp(scene.scales).clone().requires_grad_(True)
        opac = torch.sigmoid(scene.opacities)
        p = fn(means, quats, scales, opac, batch.viewmats, batch.Ks, batch.width, batch.height)
        valid = (p.radii > 0).all(dim=-1)
        if weights is None:
            weights = [torch.randn(t.shape, generator=g) for t in (p.means2d, p.conics, p.depths)]
        loss = sum(((t * w)[valid]).sum() for t, w in zip((p.means2d, p.conics, p.depths), weights))
        grads[name] = torch.autograd.grad(loss, [means, quats, scales])
        outs[name] = (p, valid)
    (pt, vt), (pf, vf) = outs["torch"], outs["fused"]
    assert torch.equal(vt, vf)
    assert_close(pt.means2d[vt], pf.means2d[vt], rtol=1e-5, atol=1e-3, what="means2d")
    assert_close(pt.conics[vt], pf.conics[vt], rtol=1e-4, atol=1e-6, what="conics")
    assert_close(pt.depths, pf.depths, rtol=1e-6, atol=1e-6, what="depths")
    assert (pt.radii - pf.radii).abs().max() <= 1  # ceil() at a float32 boundary at most
    names = ("means", "quats", "scales")
    assert_grads_close(dict(zip(names, grads["fused"])), dict(zip(names, grads["torch"])), 1e-3)


# ---- antialiased (Mip-Splatting) rendering ------------------------------------------------------------
def _aa(scene: GaussianScene, on: bool = True) -> GaussianScene:
    return GaussianScene(**dict(scene.items()), antialiased=on)


@pytest.mark.parametrize("sh_degree", [0, 3])
def test_cpu_matches_reference_antialiased(sh_degree):
    """With ``scene.antialiased`` the cpu backend (numba, hand-written backward of the opacity
    compensation) and the dense torch reference (autograd) give the same images and gradients."""
    cams = [make_camera(), make_camera(eye=(-2.5, 1.5, 1.9))]
    scene = add_special_gaussians(scene_in_view(150, sh_degree, seed=30 + sh_degree), cams[0])
    scene.params["scales"][:40] = math.log(2e-3)  # sub-pixel Gaussians: compensation far from 1
    scene = _aa(scene)
    bg = torch.tensor([[0.2, 0.5, 0.9], [1.0, 1.0, 1.0]])
    w = torch.rand(2, cams[0].height, cams[0].width, 3, generator=torch.Generator().manual_seed(2))
    ref, g_ref = render_and_grad(scene, cams, "reference", bg, w)
    cpu, g_cpu = render_and_grad(scene, cams, "cpu", bg, w)
    plain, _ = render_and_grad(_aa(scene, False), cams, "cpu", bg, w)
    assert (plain.rgb - cpu.rgb).abs().max() > 1e-2  # the mode is taken from the scene
    assert_close(cpu.rgb, ref.rgb, rtol=0, atol=1e-5, what="rgb")
    assert_close(cpu.alpha, ref.alpha, rtol=0, atol=1e-5, what="alpha")
    assert_close(ref.depth, cpu.depth, rtol=1e-4, atol=1e-4, what="depth")
    assert_grads_close(g_cpu, g_ref, 1e-3)


def test_fused_projection_antialiased_matches_torch():
    """Compensated opacities and their gradients (w.r.t. means, quats, scales, opacities): numba vs torch."""
    from splatdistill.cameras.camera import stack_cameras
    from splatdistill.render.api import project_cpu
    from splatdistill.render.projection import project

    cams = [make_camera(), make_camera(eye=(-2.5, 1.5, 1.9))]
    scene = scene_in_view(300, 0, seed=22)
    scene.params["scales"][:100] = scene.scales[:100] - 4.0  # small on screen
    batch = stack_cameras(cams)
    g = torch.Generator().manual_seed(5)
    outs, grads, weights = {}, {}, None
    for name, fn in (("torch", project), ("fused", project_cpu)):
        means = scene.means.clone().requires_grad_(True)
        quats = scene.quats.clone().requires_grad_(True)
        scales = torch.exp(scene.scales).clone().requires_grad_(True)
        opac = torch.sigmoid(scene.opacities).clone().requires_grad_(True)
        p = fn(means, quats, scales, opac, batch.viewmats, batch.Ks, batch.width, batch.height, antialiased=True)
        valid = (p.radii > 0).all(dim=-1)
        if weights is None:
            weights = [torch.randn(t.shape, generator=g) for t in (p.means2d, p.conics, p.opacities)]
        loss = sum(((t * w)[valid]).sum() for t, w in zip((p.means2d, p.conics, p.opacities), weights))
        grads[name] = torch.autograd.grad(loss, [means, quats, scales, opac])
        outs[name] = (p, valid)
    (pt, vt), (pf, vf) = outs["torch"], outs["fused"]
    assert torch.equal(vt, vf) and vt.any()
    plain = torch.sigmoid(scene.opacities).expand(pt.opacities.shape)
    assert (pt.opacities[vt] < plain[vt]).all()  # compensation < 1
    assert_close(pt.opacities[vt], pf.opacities[vt], rtol=1e-4, atol=1e-6, what="opacities")
    names = ("means", "quats", "scales", "opacities")
    assert_grads_close(dict(zip(names, grads["fused"])), dict(zip(names, grads["torch"])), 1e-3)


def test_antialiased_keeps_a_small_gaussians_integral():
    """Mip-Splatting's filter: the 0.3 px^2 low-pass widens a sub-pixel Gaussian; the compensation
    sqrt(det S / det(S + eps I)) keeps its integrated alpha at o * 2 pi sqrt(det S), whereas the
    classic render integrates to o * 2 pi sqrt(det(S + eps I)) (much more). Large Gaussians (many
    pixels wide) render the same either way."""
    w = h = 33
    cam = Camera(fx=40.0, fy=40.0, cx=16.5, cy=16.5, width=w, height=h, world_to_camera=np.eye(4))
    o, z = 0.9, 4.0
    total = {}
    for std_px in (0.2, 8.0):
        s = std_px * z / cam.fx  # world scale giving that pixel std
        one = GaussianScene(
            torch.tensor([[0.0, 0.0, z]]),
            torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
            torch.full((1, 3), math.log(s)),
            torch.tensor([math.log(o / (1 - o))]),
            torch.zeros(1, 1, 3),
            torch.zeros(1, 0, 3),
        )
        for aa in (False, True):
            for backend in ("cpu", "reference"):
                out = render(_aa(one, aa), [cam], backend=backend)
                total[(std_px, aa, backend)] = float(out.alpha.sum())
    for std_px in (0.2, 8.0):
        for aa in (False, True):
            assert abs(total[(std_px, aa, "cpu")] - total[(std_px, aa, "reference")]) <= 1e-4
    var = 0.2**2
    classic, anti = total[(0.2, False, "cpu")], total[(0.2, True, "cpu")]
    assert anti < 0.2 * classic
    # the renderer's 1/255 cut-off drops the tail beyond sigma = ln(255 o rho) (rho the compensation)
    rho = var / (var + 0.3)
    kept = 1 - 1 / (255 * o * rho)
    assert abs(anti - o * 2 * math.pi * var * kept) <= 0.05 * anti
    assert abs(classic - o * 2 * math.pi * (var + 0.3)) <= 0.1 * classic
    big_c, big_a = total[(8.0, False, "cpu")], total[(8.0, True, "cpu")]
    assert big_a < big_c and big_a >= 0.99 * big_c


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gsplat_matches_cpu_antialiased():
    cam = make_camera(64, 48)
    scene = scene_in_view(300, 3, seed=3)
    scene.params["scales"][:100] = scene.scales[:100] - 4.0
    scene = _aa(scene)
    w = torch.rand(1, 48, 64, 3)
    cpu, g_cpu = render_and_grad(scene, [cam], "cpu", torch.tensor([[0.2, 0.4, 0.6]]), w)
    gpu, g_gpu = render_and_grad(scene.to("cuda"), [cam], "gsplat", torch.tensor([[0.2, 0.4, 0.6]]).cuda(), w.cuda())
    plain = render(_aa(scene, False).to("cuda"), [cam], backend="gsplat", background=(0.2, 0.4, 0.6))
    assert (plain.rgb.cpu() - gpu.rgb.cpu()).abs().max() > 1e-2
    assert_close(gpu.rgb, cpu.rgb, rtol=0, atol=1e-4, what="rgb")
    assert_close(gpu.alpha, cpu.alpha, rtol=0, atol=1e-4, what="alpha")
    assert_grads_close({k: v.cpu() for k, v in g_gpu.items()}, g_cpu, 1e-2)
