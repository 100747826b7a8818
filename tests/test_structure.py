"""Structural losses (Distilled-3DGS structural loss and our joint occupancy loss)."""

import math
import time

import pytest
import torch

from helpers import assert_close
from splatdistill.ops.structure import (
    DEFAULT_LEVELS,
    StructuralLoss,
    StructuralLossConfig,
    grid_sizes,
    joint_loss,
    marginal_histograms,
    marginal_loss,
    occupancy_grid,
    shared_bbox,
)

IMPLS = ["torch", "numba"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # On a busy 2-core machine each multi-threaded torch op on a few thousand elements waited ~5-10 ms
    # for the pool to wake up, which made these small tests take seconds. The compiled kernels are
    # single-threaded anyway. Restored afterwards, so other test modules are unaffected.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _blob(n, seed, center=(0.0, 0.0, 0.0), scale=0.3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=dtype) * scale + torch.tensor(center, dtype=dtype)


def _rand(n, seed):
    return torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _chamfer(a, b):
    d = torch.cdist(a, b)
    return float(d.min(1).values.mean() + d.min(0).values.mean()) / 2


# ---------------------------------------------------------------------------------------------
# box


def test_shared_bbox_contains_both_sets_and_is_padded():
    t = _blob(500, 0)
    s = _blob(300, 1, center=(2.0, 0.0, 0.0))
    lo, hi = shared_bbox(t, s)
    both = torch.cat([t, s])
    assert torch.all(lo < both.min(0).values) and torch.all(hi > both.max(0).values)
    ext = both.max(0).values - both.min(0).values
    assert torch.all(both.min(0).values - lo <= 0.05 * ext)  # "slightly"


def test_shared_bbox_quantile_ignores_outliers_and_flat_axis_has_width():
    t = _blob(2000, 0)
    t[:5] = 1000.0  # floaters
    lo, hi = shared_bbox(t)
    assert float(hi.max()) > 999
    lo_q, hi_q = shared_bbox(t, quantile=0.01)
    assert float(hi_q.max()) < 5
    flat = _blob(100, 2)
    flat[:, 2] = 3.0  # a planar cloud
    lo_f, hi_f = shared_bbox(flat)
    assert torch.all(hi_f - lo_f > 0)
    assert float(lo_f[2]) < 3.0 < float(hi_f[2])


# ---------------------------------------------------------------------------------------------
# losses: values


@pytest.mark.parametrize("impl", IMPLS)
def test_joint_loss_zero_for_identical_and_positive_for_different(impl):
    t = _blob(1000, 0)
    assert abs(float(joint_loss(t.clone(), t, G=16, impl=impl))) < 1e-9
    s = _blob(1000, 1, center=(0.5, 0.0, 0.0))
    assert float(joint_loss(s, t, G=16, impl=impl)) > 0.2
    # another sample of the same distribution is closer than a shifted one
    s_same = _blob(1000, 2)
    assert float(joint_loss(s_same, t, G=16, impl=impl)) < float(joint_loss(s, t, G=16, impl=impl))


@pytest.mark.parametrize("impl", IMPLS)
def test_marginal_loss_is_blind_to_joint_structure_but_joint_loss_is_not(impl):
    # points on the diagonal x = y versus the anti-diagonal x = −y; with t symmetric about 0 the
    # multisets of x, y and z coordinates are identical, so are all three marginals
    t = torch.linspace(-1, 1, 401, dtype=torch.float64)
    z = 0.2 * torch.sin(7 * t)
    diag = torch.stack([t, t, z], 1)
    anti = torch.stack([t, -t, z], 1)
    lm = float(marginal_loss(anti, diag, bins=256, impl=impl))
    lj = float(joint_loss(anti, diag, G=64, impl=impl))
    assert abs(lm) < 1e-9
    assert lj > 0.5


def test_marginal_loss_equals_explicit_outer_product():
    # cos(a⊗b⊗c, a'⊗b'⊗c') = Π cos: checked against the explicit bins³ tensor at 16 bins
    bins = 16
    t = _blob(400, 0)
    s0 = _blob(300, 1, center=(0.2, -0.1, 0.1), scale=0.4)
    lo, hi = shared_bbox(t, s0)
    ht = marginal_histograms(t, lo, hi, bins, impl="torch")

    s = s0.clone().requires_grad_()
    hs = marginal_histograms(s, lo, hi, bins, impl="torch")
    Hs = torch.einsum("i,j,k->ijk", hs[0], hs[1], hs[2]).reshape(-1)
    Ht = torch.einsum("i,j,k->ijk", ht[0], ht[1], ht[2]).reshape(-1)
    explicit = 1 - torch.dot(Hs, Ht) / (Hs.norm() * Ht.norm())
    explicit.backward()
    g_explicit = s.grad.clone()

    for impl in IMPLS:
        s.grad = None
        fast = marginal_loss(s, t, bins=bins, lo=lo, hi=hi, impl=impl)
        fast.backward()
        assert float(explicit.detach()) > 0.01
        assert float(fast.detach()) == pytest.approx(float(explicit.detach()), rel=1e-10, abs=1e-12)
        assert_close(s.grad, g_explicit, rtol=1e-8, atol=1e-12, what=f"{impl} gradient")


def test_histograms_and_grids_are_normalised_and_smooth():
    t = _blob(500, 0)
    lo, hi = shared_bbox(t)
    for impl in IMPLS:
        h = marginal_histograms(t, lo, hi, 64, impl=impl)
        assert h.shape == (3, 64)
        assert_close(h.sum(1), torch.ones(3, dtype=h.dtype), rtol=1e-5, atol=1e-8, what=f"{impl} histogram sums")
        g = occupancy_grid(t, lo, hi, 16, impl=impl)
        assert g.shape == (16, 16, 16) and float(g.sum()) == pytest.approx(1.0)
    # one point: the kernel spreads over neighbouring bins, σ = 0.5 bin
    one = torch.tensor([[0.5, 0.5, 0.5]], dtype=torch.float64)
    h = marginal_histograms(one, torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64), 8)
    # point at 0.5 lies on the border between bins 3 and 4: equal mass there, decaying outwards
    assert float(h[0, 3]) == pytest.approx(float(h[0, 4]))
    assert float(h[0, 3]) > float(h[0, 2]) > float(h[0, 1]) >= 0


# ---------------------------------------------------------------------------------------------
# the two implementations agree (kernels on CPU, torch ops elsewhere)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numba_and_torch_implementations_agree(dtype):
    t = _blob(800, 0, dtype=dtype)
    s0 = _blob(500, 1, center=(0.1, 0.0, -0.1), scale=0.35, dtype=dtype)
    lo, hi = shared_bbox(t, s0[5:])
    s0[:3] *= 10  # outside the box: clamped to the border
    s0[3, 1] = float("nan")  # ignored: no mass, no gradient
    w0 = torch.rand(500, dtype=dtype, generator=torch.Generator().manual_seed(3))
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-12)
    probe_grid = torch.arange(512, dtype=dtype).view(8, 8, 8).sin()  # a generic linear functional
    probe_hist = torch.arange(60, dtype=dtype).view(3, 20).cos()
    fns = [
        lambda s, w, impl: joint_loss(s, t, G=16, levels=3, lo=lo, hi=hi, student_weights=w, impl=impl),
        lambda s, w, impl: marginal_loss(s, t, bins=32, lo=lo, hi=hi, student_weights=w, impl=impl),
        lambda s, w, impl: (occupancy_grid(s, lo, hi, 8, w, impl=impl) * probe_grid).sum(),
        lambda s, w, impl: (marginal_histograms(s, lo, hi, 20, 0.5, w, impl=impl) * probe_hist).sum(),
    ]
    for fn in fns:
        res = {}
        for impl in IMPLS:
            s = s0.clone().requires_grad_()
            w = w0.clone().requires_grad_()
            val = fn(s, w, impl)
            val.backward()
            res[impl] = (val.detach(), s.grad, w.grad)
        assert torch.isfinite(res["numba"][0])
        for a, b, what in zip(res["torch"], res["numba"], ("value", "student gradient", "weight gradient")):
            assert_close(a, b, **tol, what=what)
        assert torch.all(res["numba"][1][3] == 0)


# ---------------------------------------------------------------------------------------------
# gradients


def _away_from_kinks(n, sizes, seed, margin=0.1):
    """Points in the unit box whose cell coordinates (x·G − ½) are all ≥ margin from an integer, for
    every G in sizes, and inside the clamp range: the losses are smooth around them."""
    g = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < n:
        p = torch.rand(3, generator=g, dtype=torch.float64) * 0.8 + 0.1
        ok = True
        for G in sizes:
            u = p * G - 0.5
            frac = u - torch.floor(u)
            ok &= bool(torch.all((frac > margin) & (frac < 1 - margin) & (u > 0) & (u < G - 1)))
        if ok:
            out.append(p)
    return torch.stack(out)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_joint_loss(impl):
    lo, hi = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    sizes = grid_sizes(8, 3)  # 8, 4, 2
    t = _away_from_kinks(10, sizes, 0)
    s = _away_from_kinks(5, sizes, 1).requires_grad_()
    w = (_rand(5, 2) + 0.5).requires_grad_()

    def f(s, w):
        return joint_loss(s, t, G=8, levels=3, lo=lo, hi=hi, student_weights=w, impl=impl)

    assert float(f(s, w).detach()) > 0.05
    assert torch.autograd.gradcheck(f, (s, w), eps=1e-6, atol=1e-6, rtol=1e-4)

    def f1(s):
        return joint_loss(s, t, G=8, levels=1, lo=lo, hi=hi, impl=impl)

    assert torch.autograd.gradcheck(f1, (s,), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_marginal_loss(impl):
    lo, hi = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    t = _away_from_kinks(20, [16], 0)
    s = _away_from_kinks(5, [16], 1).requires_grad_()
    w = (_rand(5, 2) + 0.5).requires_grad_()

    def f(s, w):
        return marginal_loss(s, t, bins=16, lo=lo, hi=hi, student_weights=w, impl=impl)

    assert float(f(s, w).detach()) > 0.05
    assert torch.autograd.gradcheck(f, (s, w), eps=1e-6, atol=1e-6, rtol=1e-4)


def _shell(n, seed, dtype=torch.float32):
    """n points on a noisy unit sphere shell."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 3, generator=g, dtype=dtype)
    return v / v.norm(dim=1, keepdim=True) * (1 + 0.02 * torch.randn(n, 1, generator=g, dtype=dtype))


def _adam(loss_fn, x, lr, steps, b1=0.9, b2=0.999, eps=1e-8):
    """Adam (Kingma & Ba 2015) on x alone, written out: torch.optim's first use costs ~1.5 s of imports."""
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    for t in range(1, steps + 1):
        x.grad = None
        loss_fn(x).backward()
        with torch.no_grad():
            m.mul_(b1).add_(x.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(x.grad, x.grad, value=1 - b2)
            x -= lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)


@pytest.mark.parametrize("kind", ["joint", "marginal"])
def test_gradient_descent_decreases_the_loss(kind):
    teacher = _shell(1500, 0)
    init = _shell(1500, 1) + torch.tensor([0.25, -0.15, 0.1])
    loss_fn = StructuralLoss(teacher, StructuralLossConfig(kind=kind, G=32, bins=128), student_means=init)
    s = init.clone().requires_grad_()
    first = float(loss_fn(s.detach()))
    _adam(loss_fn, s, lr=0.01, steps=80)
    assert float(loss_fn(s.detach())) < 0.5 * first
    if kind == "joint":  # the student's distribution moved towards the teacher's
        c0, c1 = _chamfer(teacher, init), _chamfer(teacher, s.detach())
        print(f"\nchamfer to the teacher {c0:.3f} -> {c1:.3f}")
        assert c1 < 0.6 * c0


def test_points_outside_the_box_are_pulled_back():
    teacher = _blob(1000, 0, scale=0.2)
    loss_fn = StructuralLoss(teacher, StructuralLossConfig(kind="joint", G=32))
    s = torch.cat([_blob(999, 1, scale=0.2), torch.tensor([[5.0, 0.0, 0.0]], dtype=torch.float64)])
    s.requires_grad_()
    loss_fn(s).backward()
    assert float(s.grad[-1, 0]) > 0  # descent direction −grad points back towards the box


# ---------------------------------------------------------------------------------------------
# the loss object


def test_structural_loss_object_matches_functions_and_kinds():
    teacher = _blob(600, 0)
    init = _blob(400, 1, center=(0.1, 0.0, 0.0))
    lo, hi = shared_bbox(teacher, init)
    cfg = StructuralLossConfig(kind="joint", G=16, levels=2, weight=0.5)
    j = StructuralLoss(teacher, cfg, student_means=init)
    expected = 0.5 * float(joint_loss(init, teacher, G=16, levels=2, lo=lo, hi=hi))
    assert float(j(init)) == pytest.approx(expected)
    m = StructuralLoss(teacher, StructuralLossConfig(kind="marginal", bins=64), student_means=init)
    assert float(m(init)) == pytest.approx(float(marginal_loss(init, teacher, bins=64, lo=lo, hi=hi)))
    n = StructuralLoss(teacher, StructuralLossConfig(kind="none"))
    assert float(n(init)) == 0.0
    with pytest.raises(ValueError):
        StructuralLoss(teacher, StructuralLossConfig(kind="chamfer"))
    assert StructuralLossConfig().kind == "joint" and StructuralLossConfig().levels == DEFAULT_LEVELS
    assert grid_sizes(64, DEFAULT_LEVELS)[0] == 64


# ---------------------------------------------------------------------------------------------
# speed (200k student points, G = 64): the loss must be cheap next to a render


@pytest.mark.parametrize("kind", ["joint", "marginal"])
def test_speed_200k_points(kind):
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(200_000, 3, generator=g)
    s = (torch.randn(200_000, 3, generator=g) * 1.1 + 0.1).requires_grad_()
    loss_fn = StructuralLoss(teacher, StructuralLossConfig(kind=kind, G=64), student_means=s)
    loss_fn(s).backward()  # warm-up (kernel load / compile)
    times = []
    for _ in range(3):
        s.grad = None
        t0 = time.perf_counter()
        loss_fn(s).backward()
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(f"\n{kind} loss, 200k points, forward+backward: {best * 1e3:.1f} ms (best of 3)")
    assert math.isfinite(float(s.grad.abs().sum()))
    assert best < 0.5
