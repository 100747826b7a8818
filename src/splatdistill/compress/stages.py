"""``compress``'s fine-tuning stages (see ``pipeline``): prune with co-adaptation, SH distillation,
colour VQ and residual VQ, each a short photometric fine-tune through ``ops.optim.fit``.

Each fine-tune starts fresh Adam optimisers rather than carrying the previous stage's moments
(``ops.optim.remove``): its parameters are new tensors (the pruned scene with baked gates, the
truncated SH, colour codebooks, R-VQ codebooks) that no earlier moment describes, and the outputs
stay those the stages were measured with."""

from __future__ import annotations

import numpy as np
import torch

from splatdistill.cameras.camera import stack_cameras
from splatdistill.compress.targets import Layered, Targets
from splatdistill.ops.optim import ExponentialDecay, PolicyHook, adam, fit, make_params, scene_of
from splatdistill.ops.policies import make_policy
from splatdistill.render import render
from splatdistill.scene.gaussians import GaussianScene

# At most one codeword per this many VQ'd Gaussians (LightGaussian's 8192 codewords serve ~600k
# VQ'd Gaussians on Mip-NeRF 360 scenes, ~70 each).
VQ_POINTS_PER_CODEWORD = 16


def finetune_lrs(extent: float) -> dict[str, float]:
    """Fine-tuning learning rates: the 3DGS values (METHODS.md §0), positions a tenth of the 3DGS
    start value (1.6e-5 x extent, decaying to 1.6e-6 x extent), opacity the newer 0.025."""
    return {
        "means": 1.6e-5 * extent,
        "quats": 1e-3,
        "scales": 5e-3,
        "opacities": 0.025,
        "sh0": 2.5e-3,
        "shN": 2.5e-3 / 20,
    }


def finetune(
    build,
    params,
    optimizers,
    n_iter: int,
    pick,
    targets: Targets,
    desc: str,
    progress: bool,
    policy=None,
    ssim_lambda: float = 0.2,
) -> float | None:
    """``n_iter`` Adam steps (``ops.optim.fit``) of the photometric loss of ``build()``'s renders against
    ``pick(step)``'s (camera, target), plus the policy's regulariser and gates (``PolicyHook``).
    Positions' lr decays by 10x over the steps; with ``Layered`` targets each step draws its
    background colour from a generator seeded with ``n_iter``.

    Args:
        build: () -> the ``GaussianScene`` to render, made of ``params``.
        params: name -> parameter; optimizers: name -> optimiser (``ops.optim.adam``).
        n_iter: Number of steps.
        pick: step -> (camera, [H, W, 3] target or ``Layered``).
        targets: The run's targets (background, device).
        desc, progress: The progress bar.
        policy: A pruning policy whose gates train with the scene, or None.
        ssim_lambda: Weight of D-SSIM in the loss.

    Returns:
        The last loss (None when no step ran).
    """
    from splatdistill.ops.losses import photometric_loss

    if n_iter <= 0:
        return None
    gen = torch.Generator().manual_seed(n_iter)
    gates = PolicyHook(policy)

    def loss_fn(step, batch):
        cam, target = batch
        bg = targets.background
        if isinstance(target, Layered):  # random-background fine-tune: one colour for both
            bg = torch.rand(3, generator=gen).to(targets.device)
            target = target.on(bg)
        scene, opacity_scale = gates.render_inputs(build())
        out = render(scene, stack_cameras([cam], targets.device), background=bg, opacity_scale=opacity_scale)
        loss = photometric_loss(out.rgb, target.unsqueeze(0), ssim_lambda)
        reg = gates.loss()
        if reg is not None:
            loss = loss + reg
        return loss, out.info

    schedules = {}
    if "means" in optimizers:
        schedules["means"] = ExponentialDecay.over(optimizers["means"].param_groups[0]["lr"], 0.1, n_iter)
    return fit(
        params,
        optimizers,
        n_iter,
        pick,
        loss_fn,
        [gates],
        schedules=schedules,
        desc=desc,
        progress=progress,
        leave=False,
    )


def _cycler(n: int, seed: int):
    """``next() -> index``: 0..n-1 in a seeded random order, reshuffled when used up."""
    rng = np.random.default_rng(seed)
    order: list[int] = []

    def nxt() -> int:
        if not order:
            order.extend(rng.permutation(n).tolist())
        return order.pop()

    return nxt


def train_picker(targets: "Targets", seed: int):
    """``pick(step) -> (camera, ground-truth target)`` cycling through the training views in a
    seeded random order (the fine-tunes' view sampler)."""
    nxt = _cycler(len(targets.train_cams), seed)

    def pick(step):
        i = nxt()
        return targets.train_cams[i], targets.image(targets.train_images, i)

    return pick


def pruned_count(n: int, prune: float) -> int:
    """Gaussians left after removing ``round(prune · n)`` of ``n`` (at least one)."""
    return max(1, n - int(round(prune * n)))


def _significance(scene: GaussianScene, targets: Targets) -> torch.Tensor:
    from splatdistill.ops.importance import importance

    return importance(scene.detach(), targets.train_cams, "significance")


def prune_stage(
    scene: GaussianScene,
    targets: Targets,
    prune: float,
    policy_name: str,
    n_iter: int,
    seed: int = 0,
    progress: bool = True,
) -> tuple[GaussianScene, dict]:
    """Remove ``round(prune · N)`` Gaussians by the policy, co-adapting for ``n_iter`` steps on the
    training targets (learned gates: the first half with the gates, then baked)."""
    n = len(scene)
    n_keep = pruned_count(n, prune)
    aa = scene.antialiased
    info: dict = {"input": n, "target": n_keep, "policy": policy_name}
    lrs = finetune_lrs(targets.extent)
    pick = train_picker(targets, seed)

    if policy_name == "significance":
        if n_keep < n:
            keep = make_policy("significance", n).keep_mask(n_keep, _significance(scene, targets))
            scene = scene.detach()[keep]
        params = make_params(dict(scene.items()))
        opt = adam(params, lrs)
        info["loss"] = finetune(lambda: scene_of(params, aa), params, opt, n_iter, pick, targets, "co-adapt", progress)
        info.update(kept=len(scene), policy_stats={"policy": "significance"})
        return scene_of(params, aa).detach(), info

    policy = make_policy(policy_name, n, targets.device)
    start = dict(scene.detach().items())
    if policy_name == "confidence":
        start["opacities"] = policy.compensate_opacities(start["opacities"])
    params = make_params(start)
    opt = adam(params, lrs)
    n_gate = n_iter // 2
    info["gate_loss"] = finetune(
        lambda: scene_of(params, aa),
        params,
        opt,
        n_gate,
        pick,
        targets,
        f"{policy_name} gates",
        progress,
        policy=policy,
    )
    info["policy_stats"] = policy.stats()
    baked = policy.bake(scene_of(params, aa).detach())
    scores = _significance(baked, targets) if n_keep < n else None  # significance of the gated scene
    keep = policy.keep_mask(n_keep if n_keep < n else None, scores)
    baked = baked[keep]
    info["kept"] = int(keep.sum())
    # fresh optimisers here, not ops.optim.remove: the bake rewrote opacities and scales (the gates
    # folded in), so the gate phase's moments do not describe these parameters, and keeping them would
    # change compress's results
    params = make_params(dict(baked.items()))
    opt = adam(params, lrs)
    info["loss"] = finetune(
        lambda: scene_of(params, aa), params, opt, n_iter - n_gate, pick, targets, "co-adapt", progress
    )
    return scene_of(params, aa).detach(), info


def distill_sh_stage(
    scene: GaussianScene, targets: Targets, degree: int, n_iter: int, seed: int = 0, progress: bool = True
) -> tuple[GaussianScene, dict]:
    """LightGaussian SH distillation: fit the degree-``degree`` student to the uncompressed teacher,
    iterations 1 and 2 of every 3 on pseudo views, the third on a training view."""
    if degree >= scene.sh_degree:
        return scene.with_sh_degree(degree), {"skipped": True}
    student = scene.detach().with_sh_degree(degree)
    if n_iter <= 0:  # plain truncation
        return student, {
            "skipped": False,
            "loss": None,
            "from": scene.sh_degree,
            "to": degree,
            "pseudo_views": len(targets.pseudo_cams),
        }
    train_imgs, pseudo_imgs = targets.teacher_images(progress)
    params = make_params(dict(student.items()))
    opt = adam(params, finetune_lrs(targets.extent))
    ti, pi = _cycler(len(targets.train_cams), seed + 1), _cycler(len(targets.pseudo_cams), seed + 2)

    def pick(step):
        if step % 3 != 2 and targets.pseudo_cams:
            i = pi()
            return targets.pseudo_cams[i], targets.image(pseudo_imgs, i)
        i = ti()
        return targets.train_cams[i], targets.image(train_imgs, i)

    aa = scene.antialiased
    loss = finetune(
        lambda: scene_of(params, aa), params, opt, n_iter, pick, targets, f"SH {scene.sh_degree}->{degree}", progress
    )
    return scene_of(params, aa).detach(), {
        "skipped": False,
        "loss": loss,
        "from": scene.sh_degree,
        "to": degree,
        "pseudo_views": len(targets.pseudo_cams),
    }


def vq_stage(
    scene: GaussianScene, targets: Targets, k: int, ratio: float, n_iter: int, seed: int = 0, progress: bool = True
) -> tuple[GaussianScene, dict | None, dict]:
    """Colour VQ + fine-tune. Returns (scene with the kept Gaussians first, vq dict for the codec or
    None, info)."""
    from splatdistill.compress.outputs import vq_layout
    from splatdistill.formats.sdz import build_color_vq

    n = len(scene)
    n_vq, k_eff, skipped = vq_layout(n, k, ratio, VQ_POINTS_PER_CODEWORD)
    info = {"vq_size": int(k), "vq_size_effective": k_eff, "vq_gaussians": n_vq}
    if skipped:
        info["skipped"] = True
        return scene, None, info
    sig = _significance(scene, targets)
    vq = build_color_vq(scene, sig.cpu().numpy(), k=k_eff, fraction=ratio, seed=seed)
    keep = torch.as_tensor(vq["keep_mask"])
    kept_idx, vq_idx = torch.nonzero(keep).flatten(), torch.nonzero(~keep).flatten()
    order = torch.cat([kept_idx, vq_idx]).to(scene.device)
    scene = scene.detach()[order]
    n_keep = len(kept_idx)
    kr = scene.shN.shape[1]
    cb = torch.as_tensor(vq["codebook"], dtype=torch.float32, device=scene.device).reshape(k_eff, kr + 1, 3)
    assign = torch.as_tensor(vq["assign"], dtype=torch.long, device=scene.device)
    lrs = finetune_lrs(targets.extent)
    lrs.update(cb0=lrs["sh0"], cbN=lrs["shN"])
    tensors = {
        "means": scene.means,
        "quats": scene.quats,
        "scales": scene.scales,
        "opacities": scene.opacities,
        "sh0": scene.sh0[:n_keep],
        "shN": scene.shN[:n_keep],
        "cb0": cb[:, :1],
        "cbN": cb[:, 1:],
    }
    params = make_params(tensors)
    opt = adam(params, lrs)

    def build() -> GaussianScene:
        return GaussianScene(
            params["means"],
            params["quats"],
            params["scales"],
            params["opacities"],
            torch.cat([params["sh0"], params["cb0"][assign]]),
            torch.cat([params["shN"], params["cbN"][assign]]),
            antialiased=scene.antialiased,
        )

    pick = train_picker(targets, seed + 3)

    info["loss"] = finetune(build, params, opt, n_iter, pick, targets, "VQ fine-tune", progress)
    out = build().detach()
    codebook = torch.cat([params["cb0"], params["cbN"]], dim=1).detach().reshape(k_eff, -1).cpu().numpy()
    keep_mask = np.zeros(n, dtype=bool)
    keep_mask[:n_keep] = True
    info["kept_colours"] = n_keep
    return out, {"codebook": codebook, "assign": assign.cpu().numpy(), "keep_mask": keep_mask}, info


def rvq_stage(
    scene: GaussianScene, targets: Targets, stages: int, k: int, n_iter: int, seed: int = 0, progress: bool = True
) -> tuple[GaussianScene, dict | None, dict]:
    """Compact-3DGS residual VQ of log-scales and (canonical) rotations: ``stages`` codebooks of
    ``k`` codewords each, fitted by significance-weighted k-means on the residuals, then a short
    fine-tune of the codebooks, positions and opacities (colours, possibly VQ'd, stay as they are).
    Returns (scene with the decoded scales / rotations, ``{"scales"|"quats": (codebooks, indices)}``
    for the codec, info)."""
    from splatdistill.formats.sdz import canonical_quats
    from splatdistill.formats.vq import residual_vq

    if stages <= 0:
        return scene, None, {"skipped": True}
    n = len(scene)
    k_eff = min(int(k), max(1, n // VQ_POINTS_PER_CODEWORD))
    w = _significance(scene, targets).cpu().numpy()
    books, idx = {}, {}
    for name, x in (
        ("scales", scene.scales.detach().cpu().numpy()),
        ("quats", canonical_quats(scene.quats.detach().cpu().numpy()).astype(np.float32)),
    ):
        b, i = residual_vq(x, stages=stages, k=k_eff, seed=seed, weights=w)
        books[name] = torch.as_tensor(b, device=scene.device)
        idx[name] = torch.as_tensor(i, device=scene.device)
    lrs = finetune_lrs(targets.extent)
    lrs.update(rvq_scales=lrs["scales"], rvq_quats=lrs["quats"])
    params = make_params(
        {"means": scene.means, "opacities": scene.opacities, "rvq_scales": books["scales"], "rvq_quats": books["quats"]}
    )
    opt = adam(params, lrs)
    sh0, shN = scene.sh0.detach(), scene.shN.detach()

    def decode(name: str) -> torch.Tensor:  # the same float32 sum, stage by stage, as the decoder's
        b, i = params[f"rvq_{name}"], idx[name]
        out = torch.zeros(n, b.shape[2], dtype=b.dtype, device=b.device)
        for s in range(b.shape[0]):
            out = out + b[s][i[:, s]]
        return out

    def build() -> GaussianScene:
        return GaussianScene(
            params["means"],
            decode("quats"),
            decode("scales"),
            params["opacities"],
            sh0,
            shN,
            antialiased=scene.antialiased,
        )

    pick = train_picker(targets, seed + 4)

    info = {"stages": int(stages), "codebook_size": int(k), "codebook_size_effective": k_eff}
    info["loss"] = finetune(build, params, opt, n_iter, pick, targets, "R-VQ fine-tune", progress)
    out = build().detach()
    codec = {name: (params[f"rvq_{name}"].detach().cpu().numpy(), idx[name].cpu().numpy()) for name in books}
    return out, codec, info
