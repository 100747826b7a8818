"""Pruning policies: which Gaussians to remove, and the learnable gates some of them train first.

Three policies share one interface (``PrunePolicy``), so that compression (``compress/``) and
student training (``distill/``) pick one by name (``make_policy``):

* ``significance`` — LightGaussian (Fan et al., ECCV 2024; METHODS.md §2): rank by global
  significance (``ops.importance.importance(..., "significance")``) and keep the top
  ``1 - prune`` (66 % removed by default in the paper). Nothing is learned.
* ``mask`` — Compact-3DGS's learnable mask (Lee et al., CVPR 2024; METHODS.md §4): one logit
  ``m_j`` per Gaussian, ``M = sg(1[σ(m) > 0.01] − σ(m)) + σ(m)`` (a hard 0/1 mask in the forward
  pass, the gradient of σ(m) in the backward pass) multiplies both the scale and the opacity;
  loss ``λ · mean(σ(m))`` with λ = 4e-3 (the paper's NeRF-synthetic value). Gaussians whose mask
  is 0 are removed.
* ``confidence`` — Confident Splatting (Razlighi et al. 2025; METHODS.md §3): a Beta(α, β)
  confidence per splat, α = softplus(a) + f, β = softplus(b) + f (the paper: f = 1e-6; ours: f = 1,
  see below), ``c = α / (α + β)``
  multiplies the opacity. Loss ``λ_s · mean(c) + λ_H · mean(H(Beta(α, β)))`` (λ_s = λ_H = 2e-3;
  the entropy is minimised), plus every 25 steps a ranking hinge
  ``mean(relu(m + c_lo − c_hi))`` (m = 0.1) between the 2048 most and the 2048 least salient
  splats, saliency = mean |∂L/∂SH| of the splat's SH coefficients. Prune ``c < τ`` (τ = 0.1) or
  keep the top-k by c. The mean confidence is reported (the paper proposes it as a scene-quality
  indicator; not validated by the authors).

Baking. Whatever gates a Gaussian is folded into its stored parameters (``bake``):
``opacity_logit ← logit(sigmoid(o) · gate)`` and, for the mask, ``log_scale ← log_scale + log(M)``,
so that any viewer renders exactly the scene that was trained (Confident Splatting's release drops
c at export, so viewers show another scene; METHODS.md §3).

Our choices (not from the papers): the mask logits start at 1 (σ = 0.73) and the confidence at
c₀ = 0.9 (a = softplus⁻¹(9 · softplus(−2)), b = −2) instead of the paper's a = b = 1 (c = 0.5):
a pretrained scene whose every opacity is halved at the first step loses most of what the
fine-tune is meant to keep; the opacities are divided by c₀ where that stays below 0.999 so the
first render is (almost) unchanged. Gate learning rates: 0.01 (mask), 0.05 (confidence).
The Beta shapes are floored at 1 (unimodal Betas) instead of the paper's 1e-6: the entropy of a
Beta is unbounded below as α or β → 0, so with the 1e-6 floor the entropy term wins every race and
collapses each Beta to a point mass, the ranking hinge losing its gradient; with the floor at 1 the
confidences spread and the ranking term stays live at the same PSNR (see docs/benchmarks.md,
"Measurements behind design choices").
Pruning to a target count (``keep_mask(n_keep=...)``): the gated-out Gaussians (mask 0, c < τ)
always go, even beyond the target; if more than ``n_keep`` remain, the ``n_keep`` with the highest
``scores`` stay — compression passes the significance of the *gated* scene (the gate scales each
splat's opacity, hence its α·T contribution), which after a short fine-tune ranks far better than
the raw gate values (see docs/benchmarks.md, "Measurements behind design choices"); without scores
the gate value ranks.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from splatdistill.scene.gaussians import GaussianScene

PolicyName = Literal["significance", "mask", "confidence"]
POLICIES = ("significance", "mask", "confidence")
_P_EPS = 1e-7  # opacity clamp when baking (a logit of 0 or 1 is infinite)
_SCALE_GATE_MIN = 1e-6  # a mask of exactly 0 would give log(0) = -inf


def bake_gates(
    scene: GaussianScene, opacity_gate: torch.Tensor | None = None, scale_gate: torch.Tensor | None = None
) -> GaussianScene:
    """``scene`` with the gates folded into its parameters: it renders like ``scene`` with the gates applied.

    The logit is computed in float64, ``logit(p) = log p − log1p(−p)`` with ``p = sigmoid(o)·g``,
    so a gate of 1 returns ``o`` to float32 precision; p is clamped to [1e-7, 1 − 1e-7].

    Args:
        scene: The scene.
        opacity_gate: [N] multipliers of the activated opacities, or None.
        scale_gate: [N] multipliers of the activated scales (added to the log-scales as a log), or None.

    Returns:
        A new ``GaussianScene`` (the ``antialiased`` flag kept).
    """
    params = {k: v.detach().clone() for k, v in scene.items()}
    if opacity_gate is not None:
        o = params["opacities"].double()
        p = (torch.sigmoid(o) * opacity_gate.detach().double().to(o.device)).clamp(_P_EPS, 1.0 - _P_EPS)
        params["opacities"] = (torch.log(p) - torch.log1p(-p)).to(scene.opacities.dtype)
    if scale_gate is not None:
        g = scale_gate.detach().to(params["scales"].device).clamp_min(_SCALE_GATE_MIN)
        params["scales"] = params["scales"] + torch.log(g).unsqueeze(-1).to(params["scales"].dtype)
    return GaussianScene(**params, antialiased=scene.antialiased)


def _topk_with_ties(primary: torch.Tensor, secondary: torch.Tensor | None, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` largest ``primary`` values, ties broken by ``secondary`` then index."""
    n = primary.numel()
    k = max(0, min(int(k), n))
    mask = torch.zeros(n, dtype=torch.bool, device=primary.device)
    if k == 0:
        return mask
    keys = primary.detach().double().cpu()
    if secondary is not None:
        order = torch.argsort(secondary.detach().double().cpu(), descending=True, stable=True)
        keys = keys[order]
        top = torch.argsort(keys, descending=True, stable=True)[:k]
        mask[order[top].to(primary.device)] = True
    else:
        mask[torch.argsort(keys, descending=True, stable=True)[:k].to(primary.device)] = True
    return mask


def _keep_alive_then_rank(
    alive: torch.Tensor, gate: torch.Tensor, n_keep: int | None, scores: torch.Tensor | None
) -> torch.Tensor:
    """The learned policies' pruning: the gated-out Gaussians (``alive`` False) always go; if more
    than ``n_keep`` remain, keep the ``n_keep`` best by ``scores`` (e.g. the significance of the
    gated scene) or, without scores, by the gate value."""
    if n_keep is None or int(n_keep) >= int(alive.sum()):
        return alive
    key = scores.detach().double() if scores is not None else gate.detach().double()
    key = torch.where(alive.to(key.device), key, torch.full_like(key, -math.inf))
    return _topk_with_ties(key, None, n_keep)


class PrunePolicy:
    """Interface of a pruning policy, shared by compression and student training.

    ``gates()`` gives the (opacity, scale) multipliers of the current step (None for no gate);
    ``loss()`` the regulariser; ``after_backward`` may add gradients (ranking terms); ``keep_mask``
    says which Gaussians survive; ``subset`` follows a pruning of the scene; ``bake`` folds the gates
    into an exported scene.
    """

    name: str = "base"
    learnable: bool = False

    def parameters(self) -> list[torch.nn.Parameter]:
        """The policy's learnable parameters (none for a policy without gates)."""
        return []

    def optimizer(self) -> torch.optim.Optimizer | None:
        """The optimiser of those parameters, stepped by the caller with the scene's; None without any."""
        return None

    def gates(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The gates of the current step.

        Returns:
            ``(opacity_gate, scale_gate)``: [N] multipliers each, or None for no gate.
        """
        return None, None

    def render_inputs(self, scene: GaussianScene) -> tuple[GaussianScene, torch.Tensor | None]:
        """What to hand ``render`` so that it draws the gated scene.

        The scale gate is folded into the log-scales (differentiably), the opacity gate passed as
        ``opacity_scale``.

        Args:
            scene: The scene being trained.

        Returns:
            ``(scene to render, opacity_scale)``: a ``GaussianScene`` and an [N] tensor or None.
        """
        og, sg = self.gates()
        if sg is not None:
            params = dict(scene.params)
            params["scales"] = scene.scales + torch.log(sg.clamp_min(_SCALE_GATE_MIN)).unsqueeze(-1)
            scene = GaussianScene(**params, antialiased=scene.antialiased)
        return scene, og

    def loss(self) -> torch.Tensor | None:
        """The regulariser of the gates to add to the training loss (a 0-d tensor), or None."""
        return None

    def after_backward(self, step: int, params) -> None:
        """Hook after ``loss.backward()``: may add gradients to the policy's parameters.

        Args:
            step: The training step, from 0.
            params: The scene's parameters (name -> tensor with ``.grad``).
        """

    def keep_mask(self, n_keep: int | None = None, scores: torch.Tensor | None = None) -> torch.Tensor:
        """Which Gaussians survive a pruning step.

        Args:
            n_keep: Target count, or None to drop only the gated-out ones.
            scores: [N] ranking scores (e.g. the significance of the gated scene), or None to rank by the
                gate values.

        Returns:
            [N] bool mask.
        """
        raise NotImplementedError

    def subset(self, mask: torch.Tensor) -> None:
        """Keep the policy's per-Gaussian state for the Gaussians of ``mask`` ([N] bool) only."""

    def bake(self, scene: GaussianScene) -> GaussianScene:
        """``scene`` with the current gates baked in (``bake_gates``), for export; a clone without gates."""
        og, sg = self.gates()
        return bake_gates(scene, og, sg) if (og is not None or sg is not None) else scene.clone()

    def stats(self) -> dict:
        """JSON-ready statistics for the run's summary (at least ``policy``)."""
        return {"policy": self.name}


class SignificancePolicy(PrunePolicy):
    """LightGaussian: keep the ``n_keep`` most significant Gaussians (``scores`` required); no gates.

    Args:
        n: Number of Gaussians.
        device: Unused (the policy holds no tensors).
    """

    name = "significance"

    def __init__(self, n: int = 0, device="cpu"):
        self.n = int(n)

    def keep_mask(self, n_keep: int | None = None, scores: torch.Tensor | None = None) -> torch.Tensor:
        """The ``n_keep`` highest ``scores`` (ties by index); ``ValueError`` without scores or a target."""
        if scores is None:
            raise ValueError("the significance policy needs scores")
        if n_keep is None:
            raise ValueError("the significance policy needs a target count")
        return _topk_with_ties(scores, None, n_keep)

    def subset(self, mask: torch.Tensor) -> None:
        """Follow the count of a pruning: ``n`` becomes the number kept by ``mask`` ([N] bool)."""
        self.n = int(mask.sum())


class MaskPolicy(PrunePolicy):
    """Compact-3DGS learnable mask on scale and opacity (METHODS.md §4).

    Args:
        n: Number of Gaussians.
        device: Device of the mask logits.
        lam: Weight of the mask regulariser (mean of sigmoid(m)).
        threshold: sigmoid(m) at or below this is masked out.
        init: Initial mask logit.
        lr: Adam learning rate of the logits.
    """

    name = "mask"
    learnable = True

    def __init__(
        self, n: int, device="cpu", lam: float = 4e-3, threshold: float = 0.01, init: float = 1.0, lr: float = 0.01
    ):
        self.lam, self.threshold, self.lr = float(lam), float(threshold), float(lr)
        self.logits = torch.nn.Parameter(torch.full((int(n),), float(init), device=device))
        self._opt = torch.optim.Adam([self.logits], lr=self.lr, eps=1e-15)

    def parameters(self):
        """``[logits]``, [N]."""
        return [self.logits]

    def optimizer(self):
        """Adam over the mask logits."""
        return self._opt

    def mask(self) -> torch.Tensor:
        """[N] mask M: hard 0/1 forward, gradient of sigmoid(m) backward (straight-through)."""
        soft = torch.sigmoid(self.logits)
        hard = (soft > self.threshold).to(soft.dtype)
        return hard + (soft - soft.detach())  # = sg(hard − soft) + soft; forward value exactly hard

    def gates(self):
        """``(M, M)``: the mask gates both the opacity and the scale."""
        m = self.mask()
        return m, m

    def loss(self):
        """``lam * mean(sigmoid(m))``, a 0-d tensor."""
        return self.lam * torch.sigmoid(self.logits).mean()

    def keep_mask(self, n_keep=None, scores=None):
        """Masked-out Gaussians go; of the rest, the ``n_keep`` best by ``scores`` (or by the mask) stay."""
        soft = torch.sigmoid(self.logits.detach())
        return _keep_alive_then_rank(soft > self.threshold, soft, n_keep, scores)

    def subset(self, mask):
        """Keep the logits of ``mask`` ([N] bool), with their Adam state (``ops.optim.remove``)."""
        from splatdistill.ops.optim import remove

        params = {"logits": self.logits}
        remove(params, {"gates": self._opt}, ~mask)
        self.logits = params["logits"]

    def stats(self):
        """``policy``, ``lambda``, ``masked_out`` and more, for the summary."""
        soft = torch.sigmoid(self.logits.detach())
        return {
            "policy": self.name,
            "lambda": self.lam,
            "masked_out": int((soft <= self.threshold).sum()),
            "mean_mask_prob": float(soft.mean()) if soft.numel() else None,
        }


def _softplus_inv(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class ConfidencePolicy(PrunePolicy):
    """Confident Splatting Beta confidence gating the opacity (METHODS.md §3).

    Args:
        n: Number of Gaussians.
        device: Device of the Beta parameters.
        lambda_s: Weight of the sparsity term (mean confidence).
        lambda_h: Weight of the entropy term.
        rank_every: Steps between ranking-hinge updates (0: never).
        rank_k: Most and least salient splats compared by the hinge.
        margin: The hinge's margin.
        tau: Confidence below this is pruned.
        init_confidence: Initial confidence c0.
        b_init: Initial raw beta parameter.
        lr: Adam learning rate of the Beta parameters.
        shape_floor: Floor of both Beta shapes (1 here, 1e-6 in the paper; see the module docstring).
    """

    name = "confidence"
    learnable = True

    def __init__(
        self,
        n: int,
        device="cpu",
        lambda_s: float = 2e-3,
        lambda_h: float = 2e-3,
        rank_every: int = 25,
        rank_k: int = 2048,
        margin: float = 0.1,
        tau: float = 0.1,
        init_confidence: float = 0.9,
        b_init: float = -2.0,
        lr: float = 0.05,
        shape_floor: float = 1.0,
    ):
        self.lambda_s, self.lambda_h = float(lambda_s), float(lambda_h)
        self.rank_every, self.rank_k, self.margin, self.tau = int(rank_every), int(rank_k), float(margin), float(tau)
        self.lr = float(lr)
        self.c0 = float(init_confidence)
        self.floor = float(shape_floor)
        beta0 = F.softplus(torch.tensor(float(b_init))).item() + self.floor
        a_init = _softplus_inv(beta0 * self.c0 / (1.0 - self.c0) - self.floor)  # alpha/(alpha+beta) = c0
        self.a = torch.nn.Parameter(torch.full((int(n),), a_init, device=device))
        self.b = torch.nn.Parameter(torch.full((int(n),), float(b_init), device=device))
        self._opt = torch.optim.Adam([self.a, self.b], lr=self.lr, eps=1e-15)
        self.last_rank_loss: float | None = None

    def parameters(self):
        """``[a, b]``, [N] each: the raw Beta parameters."""
        return [self.a, self.b]

    def optimizer(self):
        """Adam over the Beta parameters."""
        return self._opt

    def alpha_beta(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The Beta shapes: ``(softplus(a) + floor, softplus(b) + floor)``, [N] each."""
        return F.softplus(self.a) + self.floor, F.softplus(self.b) + self.floor

    def confidence(self) -> torch.Tensor:
        """[N] confidence c = alpha / (alpha + beta), the Beta's mean."""
        al, be = self.alpha_beta()
        return al / (al + be)

    def gates(self):
        """``(c, None)``: the confidence gates the opacity only."""
        return self.confidence(), None

    def compensate_opacities(self, opacities: torch.Tensor) -> torch.Tensor:
        """Opacity logits divided (in sigmoid space) by the initial confidence where the result stays below
        0.999, so that the gated scene starts out looking like the input.

        Args:
            opacities: [N] opacity logits.

        Returns:
            [N] logits, dtype of ``opacities``.
        """
        p = torch.sigmoid(opacities.detach().double())
        q = torch.where(p / self.c0 < 0.999, p / self.c0, p)
        return (torch.log(q) - torch.log1p(-q)).to(opacities.dtype)

    def loss(self):
        """``lambda_s * mean(c) + lambda_h * mean(entropy)``, a 0-d tensor."""
        al, be = self.alpha_beta()
        c = al / (al + be)
        ent = torch.distributions.Beta(al, be).entropy()
        return self.lambda_s * c.mean() + self.lambda_h * ent.mean()

    def rank_loss(self, saliency: torch.Tensor) -> torch.Tensor:
        """The ranking hinge: mean(relu(m + c_lo − c_hi)) over all pairs of the k most and k least salient
        splats.

        Args:
            saliency: [N] saliency scores.

        Returns:
            A 0-d tensor.
        """
        n = saliency.numel()
        k = min(self.rank_k, n // 2)
        c = self.confidence()
        if k < 1:
            return c.sum() * 0.0
        order = torch.argsort(saliency.detach(), descending=True)
        c_hi, c_lo = c[order[:k]], c[order[-k:]]
        return F.relu(self.margin + c_lo.unsqueeze(0) - c_hi.unsqueeze(1)).mean()

    def after_backward(self, step: int, params) -> None:
        """Every ``rank_every`` steps: saliency from the SH gradients of this step's loss, then the ranking
        hinge's gradient is added to a, b (it depends on nothing else).

        Args:
            step: The training step, from 0.
            params: The scene's parameters; ``sh0`` and ``shN`` must hold this step's gradients.
        """
        if self.rank_every <= 0 or (step + 1) % self.rank_every:
            return
        g0, gN = params["sh0"].grad, params["shN"].grad
        if g0 is None:
            return
        parts = [g0.detach().abs().flatten(1)]
        if gN is not None and gN.numel():
            parts.append(gN.detach().abs().flatten(1))
        saliency = torch.cat(parts, dim=1).mean(dim=1)
        loss = self.rank_loss(saliency)
        loss.backward()
        self.last_rank_loss = float(loss.detach())

    def keep_mask(self, n_keep=None, scores=None):
        """Gaussians with c < tau go; of the rest, the ``n_keep`` best by ``scores`` (or by c) stay."""
        c = self.confidence().detach()
        return _keep_alive_then_rank(c >= self.tau, c, n_keep, scores)

    def subset(self, mask):
        """Keep the Beta parameters of ``mask`` ([N] bool), with their Adam state (``ops.optim.remove``)."""
        from splatdistill.ops.optim import remove

        params = {"a": self.a, "b": self.b}
        remove(params, {"gates": self._opt}, ~mask)
        self.a, self.b = params["a"], params["b"]

    def stats(self):
        """``policy``, ``mean_confidence``, ``below_tau``, ``last_rank_loss`` and more, for the summary."""
        c = self.confidence().detach()
        return {
            "policy": self.name,
            "lambda_s": self.lambda_s,
            "lambda_h": self.lambda_h,
            "mean_confidence": float(c.mean()) if c.numel() else None,
            "below_tau": int((c < self.tau).sum()),
            "tau": self.tau,
            "last_rank_loss": self.last_rank_loss,
        }


def make_policy(name: str, n: int, device="cpu", **kwargs) -> PrunePolicy:
    """The pruning policy called ``name``.

    Args:
        name: ``significance``, ``mask`` or ``confidence``.
        n: Number of Gaussians.
        device: Device of the policy's parameters.
        **kwargs: Constructor arguments of ``MaskPolicy`` / ``ConfidencePolicy``.

    Returns:
        A ``PrunePolicy``. An unknown name raises ``ValueError``.
    """
    if name == "significance":
        return SignificancePolicy(n, device)
    if name == "mask":
        return MaskPolicy(n, device, **kwargs)
    if name == "confidence":
        return ConfidencePolicy(n, device, **kwargs)
    raise ValueError(f"unknown prune policy '{name}' (choose {', '.join(POLICIES)})")
