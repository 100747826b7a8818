"""Optimisation: the one loop every job runs (``fit``), its hooks, the Adam factory, the position
learning-rate schedule and pruning that keeps the optimiser state of the surviving Gaussians.

A job (teacher training, the student, each compress fine-tune) hands ``fit`` its parameters, its
optimisers, a batch picker and a loss closure; what differs between the jobs (densification,
scheduled pruning, learned pruning gates, the noise variant) comes in as hooks. The hook methods
have the names and call points of gsplat's ``Strategy`` (``step_pre_backward`` before
``loss.backward()``, ``step_post_backward`` after the optimiser step and the lr schedule), so a
gsplat strategy is a hook through a three-line adaptor; two more points cover what a strategy
never needs: ``step_pre_forward`` (before the batch is drawn) and ``step_pre_optimize`` (gradients
present, parameters not yet stepped)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Protocol

import torch
from tqdm.auto import tqdm

from splatdistill.scene.gaussians import GaussianScene

SCENE_KEYS = ("means", "quats", "scales", "opacities", "sh0", "shN")


@functools.cache
def fused_adam_ok() -> bool:
    """torch >= 2.4 has a fused Adam on CPU too (one kernel instead of a dozen ops per tensor)."""
    try:
        p = torch.nn.Parameter(torch.zeros(1))
        torch.optim.Adam([p], fused=True)
        return True
    except (RuntimeError, TypeError, ValueError):
        return False


def make_params(tensors, device=None) -> torch.nn.ParameterDict:
    """Trainable copies of ``tensors``.

    Args:
        tensors: A mapping name -> tensor, or a ``GaussianScene`` (its six attributes).
        device: Where the parameters go; None keeps each tensor's device.

    Returns:
        A ``ParameterDict`` of contiguous clones (detached from ``tensors``), in ``tensors``' order.
    """
    items = tensors.items()
    out = {}
    for k, v in items:
        v = v.detach().clone()
        out[k] = torch.nn.Parameter((v if device is None else v.to(device)).contiguous())
    return torch.nn.ParameterDict(out)


def adam(
    params: Mapping[str, torch.nn.Parameter], lrs: Mapping[str, float], eps: float = 1e-15
) -> dict[str, torch.optim.Optimizer]:
    """One Adam per parameter, gsplat's layout (name -> optimiser with one group called ``name``).

    eps 1e-15 as in the Inria code and gsplat; the fused kernel (where torch has it) is several times
    faster on the CPU and gives the same numbers.

    Args:
        params: name -> parameter; every name must have a learning rate in ``lrs``.
        lrs: name -> learning rate (extra names are ignored).
        eps: Adam's epsilon.

    Returns:
        name -> ``torch.optim.Adam``, in ``params``' order.
    """
    fused = {"fused": True} if fused_adam_ok() else {}
    return {
        k: torch.optim.Adam([{"params": [p], "lr": lrs[k], "name": k}], eps=eps, **fused) for k, p in params.items()
    }


def scene_of(params: Mapping[str, torch.Tensor], antialiased: bool = False) -> GaussianScene:
    """The scene made of ``params``' six attributes (differentiable: the parameters themselves).

    Args:
        params: At least ``means`` [N, 3], ``quats`` [N, 4], ``scales`` [N, 3], ``opacities`` [N],
            ``sh0`` [N, 1, 3], ``shN`` [N, K, 3]; other entries are ignored.
        antialiased: The scene's rasterisation mode.

    Returns:
        A ``GaussianScene`` sharing the tensors.
    """
    return GaussianScene(**{k: params[k] for k in SCENE_KEYS}, antialiased=antialiased)


@dataclass(frozen=True)
class ExponentialDecay:
    """The 3DGS position learning rate: ``lr(step) = lr_init * gamma ** step``, an exponential decay
    that reaches ``lr_init * factor`` after ``steps`` steps (``over``).

    ``fit`` sets ``lr(step + 1)`` after the optimiser step of ``step``."""

    lr_init: float
    gamma: float

    @classmethod
    def over(cls, lr_init: float, factor: float, steps: int, log_space: bool = False) -> "ExponentialDecay":
        """The decay from ``lr_init`` to ``lr_init * factor`` in ``steps`` steps (at least one).

        ``gamma`` is ``factor ** (1 / steps)``, or with ``log_space`` ``exp(log(factor) / steps)`` (the
        teacher's form); the two differ in the last bit for some step counts, and the last bit of a
        learning rate changes a trained model, so each job keeps the form its results were made with.
        """
        n = max(1, int(steps))
        gamma = math.exp(math.log(factor) / n) if log_space else factor ** (1.0 / n)
        return cls(float(lr_init), gamma)

    def __call__(self, step: int) -> float:
        return self.lr_init * self.gamma**step


def remove(
    params,
    optimizers: Mapping[str, torch.optim.Optimizer],
    mask: torch.Tensor,
    state: dict | None = None,
    names: Iterable[str] | None = None,
) -> None:
    """Remove the Gaussians of ``mask`` in place, with their optimiser state (as gsplat's
    ``strategy.ops.remove``): each parameter is replaced by its surviving rows, and in every optimiser
    that holds it the per-row moments (``exp_avg``, ``exp_avg_sq``, ...) keep the surviving rows
    too, so training continues as if the removed Gaussians had never been there.

    Args:
        params: name -> parameter ([N, ...] each), a dict or ``ParameterDict``; updated in place.
        optimizers: The optimisers over ``params`` (any layout: one per parameter or groups).
        mask: [N] bool, True for the Gaussians to remove.
        state: Optional per-Gaussian statistics (e.g. a densification strategy's state); its [N, ...]
            tensors keep the surviving rows too.
        names: The parameters to prune (default: all of ``params``).
    """
    keep = ~mask
    n = int(mask.shape[0])
    for name in list(names if names is not None else params.keys()):
        old = params[name]
        new = torch.nn.Parameter(old.detach()[keep].contiguous(), requires_grad=old.requires_grad)
        for opt in optimizers.values():
            for group in opt.param_groups:
                for i, p in enumerate(group["params"]):
                    if p is not old:
                        continue
                    st = opt.state.pop(old, None)
                    group["params"][i] = new
                    if st is not None:
                        for key, v in st.items():
                            if key != "step" and torch.is_tensor(v) and v.dim() and v.shape[0] == n:
                                st[key] = v[keep]
                        opt.state[new] = st
        params[name] = new
    if state:
        for key, v in state.items():
            if torch.is_tensor(v) and v.dim() and v.shape[0] == n:
                state[key] = v[keep]


class Hook(Protocol):
    """What ``fit`` calls at each step, in this order (``params`` and ``optimizers`` as ``fit`` got them;
    a hook may change them in place, e.g. prune or densify):

    1. ``step_pre_forward(params, optimizers, step)`` before the batch is drawn;
    2. ``step_pre_backward(params, optimizers, step, info)`` after the loss, before ``backward()``;
    3. ``step_pre_optimize(params, optimizers, step, info)`` with the gradients, before the step;
    4. ``step_post_backward(params, optimizers, step, info)`` after the optimiser step and the lr
       schedule (gsplat calls its strategies' ``step_post_backward`` here too).

    ``info`` is what the loss closure returned with the loss (the render's info). Every method is
    optional; subclasses inherit no-ops. Unlike a gsplat strategy a hook keeps its own state."""

    def step_pre_forward(self, params, optimizers, step: int) -> None:
        return None

    def step_pre_backward(self, params, optimizers, step: int, info: dict) -> None:
        return None

    def step_pre_optimize(self, params, optimizers, step: int, info: dict) -> None:
        return None

    def step_post_backward(self, params, optimizers, step: int, info: dict) -> None:
        return None


class PolicyHook(Hook):
    """A pruning policy (``ops/policies.py``) in the loop: after ``backward()`` its ``after_backward``
    (ranking gradients) and its own optimiser step; ``render_inputs`` and ``loss`` give the loss
    closure the gated scene and the regulariser. ``policy`` may be None (no gate yet) and be set later.
    """

    def __init__(self, policy=None):
        self.policy = policy

    def render_inputs(self, scene: GaussianScene) -> tuple[GaussianScene, torch.Tensor | None]:
        """``(scene to render, opacity_scale)``: the policy's gated scene, or ``(scene, None)``."""
        return (scene, None) if self.policy is None else self.policy.render_inputs(scene)

    def loss(self) -> torch.Tensor | None:
        """The policy's regulariser (a 0-d tensor), or None."""
        return None if self.policy is None else self.policy.loss()

    def step_pre_optimize(self, params, optimizers, step, info):
        if self.policy is None:
            return
        self.policy.after_backward(step, params)
        opt = self.policy.optimizer()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)


class AtSteps(Hook):
    """Calls ``fn(schedule[step])`` before the forward pass of each step in ``schedule`` (e.g. pruning
    steps: ``{iteration: pruning step}``)."""

    def __init__(self, schedule: Mapping[int, Any], fn: Callable[[Any], None]):
        self.schedule, self.fn = dict(schedule), fn

    def step_pre_forward(self, params, optimizers, step):
        if step in self.schedule:
            self.fn(self.schedule[step])


def _call(hooks, method: str, *args) -> None:
    for h in hooks:
        f = getattr(h, method, None)
        if f is not None:
            f(*args)


def fit(
    params,
    optimizers: Mapping[str, torch.optim.Optimizer],
    steps: int,
    pick_batch: Callable[[int], Any],
    loss_fn: Callable[[int, Any], tuple[torch.Tensor, dict]],
    hooks: Iterable[Hook] = (),
    *,
    schedules: Mapping[str, Callable[[int], float]] | None = None,
    start: int = 0,
    total: int | None = None,
    desc: str = "fit",
    progress: bool = True,
    leave: bool = True,
    unit: str = "it",
    on_step: Callable[[int, float, dict], dict | None] | None = None,
) -> float | None:
    """Run the optimisation steps ``start .. steps - 1``. Each step: hooks' ``step_pre_forward``;
    ``batch = pick_batch(step)``; ``loss, info = loss_fn(step, batch)``; ``step_pre_backward``;
    ``loss.backward()``; ``step_pre_optimize``; every optimiser steps and zeroes its gradients; each
    scheduled learning rate is set to ``schedule(step + 1)``; ``step_post_backward``; then
    ``on_step(step, loss, info)``, whose dict (if any) is shown on the progress bar (without
    ``on_step``, the loss every 20 steps).

    Args:
        params: name -> parameter (updated in place by the optimisers and the hooks).
        optimizers: name -> optimiser; stepped in this order.
        steps: The step to stop before.
        pick_batch: step -> batch (cameras, targets, whatever ``loss_fn`` takes).
        loss_fn: (step, batch) -> (0-d loss tensor, info dict for the hooks).
        hooks: ``Hook``-shaped objects, called in this order at each point.
        schedules: optimiser name -> (step -> learning rate) for all its groups.
        start: The first step (a resumed run).
        total: The progress bar's total (default ``steps``).
        desc, progress, leave, unit: The progress bar's label, whether it shows, whether it stays,
            its unit.
        on_step: Called after each step with the loss as a float.

    Returns:
        The last step's loss, or None when no step ran (none to run, or no parameter has elements).
    """
    hooks = list(hooks)
    if steps <= start or not any(p.numel() for p in params.values()):
        return None
    last = None
    bar = tqdm(
        range(start, steps),
        initial=start,
        total=steps if total is None else total,
        desc=desc,
        disable=not progress,
        dynamic_ncols=True,
        leave=leave,
        unit=unit,
    )
    try:
        for step in bar:
            _call(hooks, "step_pre_forward", params, optimizers, step)
            batch = pick_batch(step)
            loss, info = loss_fn(step, batch)
            _call(hooks, "step_pre_backward", params, optimizers, step, info)
            loss.backward()
            _call(hooks, "step_pre_optimize", params, optimizers, step, info)
            for o in optimizers.values():
                o.step()
                o.zero_grad(set_to_none=True)
            for name, schedule in (schedules or {}).items():
                for g in optimizers[name].param_groups:
                    g["lr"] = schedule(step + 1)
            _call(hooks, "step_post_backward", params, optimizers, step, info)
            last = float(loss.detach())
            post = on_step(step, last, info) if on_step is not None else None
            if post:
                bar.set_postfix(**post)
            elif post is None and step % 20 == 0:
                bar.set_postfix(loss=f"{last:.4f}")
    finally:
        bar.close()
    return last
