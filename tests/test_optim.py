"""The one optimisation loop (``ops.optim``): hook order, pruning with the optimiser state, the
position-lr schedule, and a fit that learns."""

import math

import pytest
import torch

from helpers import box_scene
from splatdistill.ops.optim import AtSteps, ExponentialDecay, Hook, PolicyHook, adam, fit, make_params, remove, scene_of
from splatdistill.ops.policies import make_policy


class Recorder(Hook):
    """Writes ``(name, point, step)`` into a shared log; checks what each point may see."""

    def __init__(self, name, log, params):
        self.name, self.log, self.params = name, log, params

    def step_pre_forward(self, params, optimizers, step):
        self.log.append((self.name, "pre_forward", step))

    def step_pre_backward(self, params, optimizers, step, info):
        assert params["x"].grad is None  # the loss exists, its gradients not yet
        self.log.append((self.name, "pre_backward", step))

    def step_pre_optimize(self, params, optimizers, step, info):
        assert params["x"].grad is not None  # gradients present, parameters not stepped
        self.log.append((self.name, "pre_optimize", step))

    def step_post_backward(self, params, optimizers, step, info):
        assert params["x"].grad is None  # stepped and zeroed
        assert optimizers["x"].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** (step + 1))
        self.log.append((self.name, "post_backward", step))


def quadratic(target):
    params = make_params({"x": torch.zeros(4)})
    opts = adam(params, {"x": 0.1})

    def loss_fn(step, batch):
        return ((params["x"] - batch) ** 2).sum(), {"step": step}

    return params, opts, loss_fn


def test_fit_runs_the_hooks_in_order_at_each_step():
    log = []
    params, opts, loss_fn = quadratic(torch.ones(4))
    picked = []

    def pick(step):
        picked.append(step)
        log.append(("pick", "batch", step))
        return torch.ones(4)

    hooks = [Recorder("a", log, params), Recorder("b", log, params)]
    fit(params, opts, 3, pick, loss_fn, hooks, schedules={"x": ExponentialDecay(0.1, 0.5)}, start=1, progress=False)
    assert picked == [1, 2]
    points = ["pre_forward", "batch", "pre_backward", "pre_optimize", "post_backward"]
    expected = []
    for step in (1, 2):
        for p in points:
            expected += [("pick", p, step)] if p == "batch" else [("a", p, step), ("b", p, step)]
    assert log == expected


def test_at_steps_calls_before_the_batch_of_its_steps_only():
    params, opts, loss_fn = quadratic(torch.ones(4))
    log = []
    fit(
        params,
        opts,
        6,
        lambda s: log.append(("pick", s)) or torch.ones(4),
        loss_fn,
        [AtSteps({0: "first", 4: "second"}, lambda v: log.append(("at", v)))],
        progress=False,
    )
    assert log == [
        ("at", "first"),
        ("pick", 0),
        ("pick", 1),
        ("pick", 2),
        ("pick", 3),
        ("at", "second"),
        ("pick", 4),
        ("pick", 5),
    ]


def test_fit_on_a_tiny_problem_decreases_the_loss_and_reports_the_last_one():
    target = torch.tensor([1.0, -2.0, 0.5, 3.0])
    params, opts, loss_fn = quadratic(target)
    losses = []
    last = fit(
        params, opts, 200, lambda s: target, loss_fn, progress=False, on_step=lambda s, loss, info: losses.append(loss)
    )
    assert len(losses) == 200 and last == losses[-1]
    assert losses[-1] < 1e-3 * losses[0]
    torch.testing.assert_close(params["x"].detach(), target, atol=0.05, rtol=0)
    assert fit(params, opts, 0, lambda s: target, loss_fn, progress=False) is None  # nothing to run


def test_remove_keeps_the_survivors_params_and_adam_state():
    scene = box_scene(50, degree=1)
    params = make_params(scene)
    opts = adam(params, {k: 1e-2 for k in params})
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # a few steps so that every moment is non-trivial
        for p in params.values():
            p.grad = torch.randn(p.shape, generator=g)
        for o in opts.values():
            o.step()
    before = {k: (p.detach().clone(), {s: v.clone() for s, v in opts[k].state[p].items()}) for k, p in params.items()}
    stats = {"grad2d": torch.arange(50.0), "scene_scale": 2.0}
    mask = torch.zeros(50, dtype=torch.bool)
    mask[[0, 7, 8, 49]] = True
    remove(params, opts, mask, stats)
    keep = ~mask
    for k, p in params.items():
        old_p, old_state = before[k]
        assert isinstance(p, torch.nn.Parameter) and p.shape[0] == 46
        assert torch.equal(p.detach(), old_p[keep]), k
        assert opts[k].param_groups[0]["params"][0] is p
        st = opts[k].state[p]
        assert torch.equal(st["exp_avg"], old_state["exp_avg"][keep]), k
        assert torch.equal(st["exp_avg_sq"], old_state["exp_avg_sq"][keep]), k
        assert torch.equal(st["step"], old_state["step"])
    assert torch.equal(stats["grad2d"], torch.arange(50.0)[keep]) and stats["scene_scale"] == 2.0
    assert len(scene_of(params)) == 46
    for p in params.values():  # the optimisers still step the new parameters
        p.grad = torch.ones_like(p)
    for o in opts.values():
        o.step()


def test_remove_with_one_optimizer_over_several_tensors():
    pol = make_policy("confidence", 10)
    pol.loss().backward()
    pol.optimizer().step()
    a_state = pol.optimizer().state[pol.a]["exp_avg"].clone()
    keep = torch.arange(10) % 3 != 0
    pol.subset(keep)
    assert pol.a.shape == (int(keep.sum()),) and pol.optimizer().param_groups[0]["params"][0] is pol.a
    assert torch.equal(pol.optimizer().state[pol.a]["exp_avg"], a_state[keep])


def test_exponential_decay_endpoints():
    d = ExponentialDecay.over(1.6e-4, 0.01, 3000)
    assert d(0) == 1.6e-4
    assert d(3000) == pytest.approx(1.6e-6, rel=1e-9)
    assert d(1500) == pytest.approx(1.6e-5, rel=1e-9)  # geometric: the midpoint is the geometric mean
    e = ExponentialDecay.over(2.0, 0.1, 10, log_space=True)
    assert e.gamma == math.exp(math.log(0.1) / 10) and e(10) == pytest.approx(0.2, rel=1e-12)
    assert ExponentialDecay.over(1.0, 0.5, 0)(1) == 0.5  # zero steps count as one


def test_policy_hook_without_a_policy_is_transparent():
    hook = PolicyHook(None)
    scene = box_scene(10)
    assert hook.render_inputs(scene) == (scene, None) and hook.loss() is None
    hook.step_pre_optimize({}, {}, 0, {})  # nothing to do
    pol = make_policy("mask", 10)
    hook.policy = pol
    rendered, opacity_scale = hook.render_inputs(scene)
    assert opacity_scale is not None and opacity_scale.shape == (10,)
    hook.loss().backward()
    before = pol.logits.detach().clone()
    hook.step_pre_optimize({}, {}, 0, {})  # steps the gate's own optimiser
    assert not torch.equal(before, pol.logits.detach()) and pol.logits.grad is None
