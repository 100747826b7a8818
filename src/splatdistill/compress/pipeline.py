"""``splatdistill compress``: a trained model in, a small viewer-ready model out.

The stages follow LightGaussian (Fan et al., ECCV 2024; METHODS.md §2), with Compact-3DGS's
post-processing (Lee et al., CVPR 2024; METHODS.md §4) in the codec:

0. **Pre-flight** (``outputs.preflight``, the first seconds): the output folder is created and
   written to, and the input model goes once through every writer the run will use (``.sdz`` with
   the run's SH degree, bit depths and colour-VQ / R-VQ layout, ``.ply``, ``.spz``), so a path or
   codec problem is a one-line error before any optimisation.
1. **Targets.** With ``data``: the dataset's training views (ground truth) for the fine-tunes,
   its test views for the final metrics. Without (**data-free**): cameras sampled around the
   model — a Fibonacci sphere and an orbit (``data/views.py``) around the robust bounding sphere
   of the means, at ``radius / sin(fov / 2)`` ≈ 2.4 × its radius for a 50° field of view — and
   the input model's own renders as targets; the final metrics use a held-out orbit at another
   elevation, against the input model's renders of it.
2. **Prune** the lowest ``prune`` fraction (66 % in LightGaussian) by the chosen policy
   (``policies.py``: LightGaussian significance, Compact-3DGS mask or Confident-Splatting
   confidence; learned gates are trained for the first half of the fine-tune, then baked into
   the opacities / scales), exactly ``round(prune · N)`` Gaussians removed, then co-adapt with the
   photometric loss 0.8 L1 + 0.2 D-SSIM (LightGaussian: 5k iterations; here ``iterations``).
3. **SH distillation** to degree D (skipped when D is the input degree): the student (the pruned
   scene truncated to degree D) is fitted to the frozen *uncompressed* model's renders, two
   iterations out of three on pseudo views (training camera centres + N(0, (0.05 · extent)²) per
   axis, orientation kept; LightGaussian).
4. **Colour VQ** (``codec.build_color_vq``): the least significant fraction ``vq_ratio`` (60 % in
   LightGaussian) of the Gaussians share a codebook of ``vq_size`` (8192) colour vectors fitted by
   significance-weighted k-means; the others keep their own colour. Then a short fine-tune of the
   codebook (a learnable tensor: the VQ'd colours are ``codebook[assign]``), the kept colours and
   all non-colour attributes (``iterations // 2`` steps).
   Optionally (``rvq_stages`` > 0), Compact-3DGS's **residual VQ** of log-scales and rotations
   (6 stages × 64 codewords in the paper): significance-weighted k-means per stage on the
   residual, then a fine-tune of the codebooks, positions and opacities (``iterations // 2``).
   Measured on the demo scene's student (4,331 Gaussians, balanced, ``--prune 0``, 300 iterations):
   8-bit per-channel codes 98.6 kB at 30.19 dB; R-VQ 6 × 64 119.6 kB (+21 %: six 6-bit indices in
   bytes cost more than 3 + 4 one-byte codes), 3 × 64 95.0 kB, 2 × 256 101.3 kB, all at 30.19 dB —
   hence off by default.
5. **Encode**: per-attribute quantisation, Morton order and zstd (``codec.save_sdz``) →
   ``OUT/model.sdz``; the decoded scene → ``OUT/model.ply`` (any 3DGS viewer) and, optionally,
   ``OUT/model.spz``. Each is written under a temporary name and read back; all of them (with
   ``summary.json``) are renamed into place only at the very end (``outputs.StagedOutputs``), so a
   failure leaves nothing under a final name.
6. **Evaluate** the *decoded* ``.sdz`` scene: PSNR, SSIM, LPIPS-VGG against the evaluation targets;
   ``OUT/summary.json`` holds them with the sizes, counts, per-stage timings and settings.

Deviations from LightGaussian: fine-tunes are ``iterations`` (1000) steps instead of 5k (a
CPU-friendly default); the codebook is capped at one codeword per 16 VQ'd Gaussians
(``vq_size_effective``): a codeword costs 2 · 3(D+1)² bytes (fp16), as much as storing a colour
directly, and LightGaussian's 8192 codewords serve ~70 Gaussians each on its scenes; the kept
colours are stored as 8-bit (DC) and 5–8-bit (rest) per-channel codes instead of fp16.

Presets (``--quality``; explicit flags override them; the SH degree is capped at the input's):

==========  =====  ===  =======  ========  ==================================================
preset      prune  SH   VQ size  VQ ratio  codec bits (opacity / SH DC / SH rest of kept ones)
==========  =====  ===  =======  ========  ==================================================
high        0.5    3    8192     0.4       12 / 8 / 8
balanced    0.66   2    8192     0.6       10 / 8 / 6
small       0.8    1    4096     0.8       10 / 8 / 5
==========  =====  ===  =======  ========  ==================================================

All presets store positions as fp16 (relative to their median), rotations and log-scales as 8-bit
per-channel uniform codes, the codebook as fp16. Measured on a 101k-Gaussian lego model
(data-free, balanced, 300 iterations, 34.5k Gaussians after pruning): kept colours in fp16 (the
LightGaussian / codec default) took 654 of 1319 kB at 42.85 dB; 8-bit DC + 6-bit rest 169 kB at
42.84 dB; the codebook at one codeword per 4 VQ'd Gaussians 259 kB, per 16 66 kB for 0.2 dB
(before the VQ fine-tune). Opacity gets more bits than the codec default of 8: encoding the
uncompressed input model with every attribute at 8 bits gave 35.9 dB (decoded vs original
renders), with 10-bit opacity 49.5 dB, for 0.7 % more bytes, because the many faint Gaussians switch on and off around
the renderer's 1/255 alpha cut-off.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from splatdistill.cameras.camera import Camera, stack_cameras
from splatdistill.errors import UserError
from splatdistill.fileio import atomic_path, write_bytes_atomic, write_json_atomic
from splatdistill.render import render
from splatdistill.scene.gaussians import GaussianScene
from splatdistill.ops.policies import make_policy

from splatdistill.compress.config import PRESETS, CompressConfig, Quality  # noqa: F401 (re-exported)

# At most one codeword per this many VQ'd Gaussians (LightGaussian's 8192 codewords serve ~600k
# VQ'd Gaussians on Mip-NeRF 360 scenes, ~70 each).
_VQ_POINTS_PER_CODEWORD = 16


# ---- targets --------------------------------------------------------------------------------------------
def _h(x):
    """Images kept on the CPU as float16 (half the memory; 1e-3 relative precision)."""
    if isinstance(x, Layered):
        return Layered(_h(x.black), _h(x.transmittance))
    return x.detach().to("cpu", torch.float16)


@dataclass
class Layered:
    """A target for random-background fine-tunes: its image on a colour ``bg`` is
    ``black + transmittance * bg`` (ground truth: its black composite and 1 - alpha; a render: the
    render on black and 1 - its alpha)."""

    black: torch.Tensor  # (H, W, 3)
    transmittance: torch.Tensor  # (H, W, 1)

    def to(self, device, dtype=None) -> "Layered":
        return Layered(self.black.to(device, dtype), self.transmittance.to(device, dtype))

    def on(self, bg: torch.Tensor) -> torch.Tensor:
        return (self.black + self.transmittance * bg.reshape(1, 1, 3)).clamp(0.0, 1.0)


@dataclass
class Targets:
    """What the fine-tunes fit and what the metrics compare against."""

    mode: str  # "data" | "data-free"
    train_cams: list[Camera]
    train_images: list  # callables or tensors -> (H, W, 3) float in [0, 1]
    eval_cams: list[Camera]
    eval_images: list
    eval_kind: str  # what the eval images are
    background: tuple[float, float, float]
    extent: float
    teacher: GaussianScene  # the uncompressed input (on the device)
    device: torch.device
    pseudo_cams: list[Camera] = field(default_factory=list)
    random_background: bool = False  # fine-tunes on a random colour each step (targets are Layered)
    _teacher_train: list | None = None
    _teacher_pseudo: list | None = None

    def image(self, images: list, i: int) -> torch.Tensor:
        x = images[i]
        x = x() if callable(x) else x
        return x.to(self.device, torch.float32)

    def teacher_render(self, cam: Camera):
        with torch.no_grad():
            if self.random_background:
                out = render(self.teacher, stack_cameras([cam], self.device), background=(0.0, 0.0, 0.0))
                return Layered(out.rgb[0], 1.0 - out.alpha[0].unsqueeze(-1))
            return render(self.teacher, stack_cameras([cam], self.device), background=self.background).rgb[0]

    def teacher_images(self, progress: bool = True) -> tuple[list, list]:
        """Teacher renders of the training and pseudo views (computed once)."""
        if self._teacher_train is None:
            if self.mode == "data-free":
                self._teacher_train = self.train_images
            else:
                self._teacher_train = [_h(self.teacher_render(c)) for c in
                                       tqdm(self.train_cams, desc="teacher renders", disable=not progress, leave=False)]
        if self._teacher_pseudo is None:
            self._teacher_pseudo = [_h(self.teacher_render(c)) for c in
                                    tqdm(self.pseudo_cams, desc="pseudo-view renders", disable=not progress, leave=False)]
        return self._teacher_train, self._teacher_pseudo


def sample_cameras(scene: GaussianScene, cfg: CompressConfig) -> tuple[list[Camera], list[Camera], float]:
    """Data-free cameras: (training views, held-out evaluation views, sphere radius)."""
    from splatdistill.cameras.views import bounding_sphere, orbit_cameras, sphere_cameras

    center, radius = bounding_sphere(scene.means.detach().cpu().numpy())
    radius = max(float(radius), 1e-6)
    res = int(cfg.resolution)
    n_orbit = max(1, cfg.views // 4) if cfg.views > 1 else 0
    train = sphere_cameras(center, radius, cfg.views - n_orbit, res, res, cfg.fov_deg, cfg.up)
    train += orbit_cameras(center, radius, n_orbit, res, res, cfg.fov_deg, elevation_deg=15.0, up=cfg.up)
    evals = orbit_cameras(center, radius, cfg.eval_views, res, res, cfg.fov_deg, elevation_deg=30.0, up=cfg.up)
    return train, [replace(c, image_name=f"eval_{i:04d}") for i, c in enumerate(evals)], radius


def prepare_targets(scene: GaussianScene, data, cfg: CompressConfig, device: torch.device) -> Targets:
    from splatdistill.cameras.views import camera_extent, pseudo_views

    teacher = scene.to(device)
    if data is not None:
        from splatdistill.data.dataset import load_dataset

        ds = load_dataset(data, downscale=cfg.downscale)
        views = ds.split("train")
        if not views:
            raise UserError("the dataset has no training views", data)
        test = ds.splits.get("test") or []
        eval_kind = "dataset test views (ground truth)"
        if not test:
            test = views
            eval_kind = "dataset training views (no test split)"
        bg = tuple(float(b) for b in (cfg.background if cfg.background is not None else ds.background))
        random_bg = cfg.random_background
        if random_bg is None:
            from splatdistill.ops.background import dataset_has_alpha

            random_bg = cfg.background is None and dataset_has_alpha(ds)

        def train_image(v):
            if not random_bg:  # the images composited on the background the renders use
                return ds.image_on(v, bg)
            black = ds.image_on(v, (0.0, 0.0, 0.0))
            return Layered(black, (ds.image_on(v, (1.0, 1.0, 1.0)) - black)[..., :1])

        t = Targets(
            mode="data", train_cams=[v.camera for v in views],
            train_images=[(lambda v=v: train_image(v)) for v in views],
            eval_cams=[v.camera for v in test], eval_images=[(lambda v=v: ds.image_on(v, bg)) for v in test],
            eval_kind=eval_kind, background=bg, extent=float(ds.extent), teacher=teacher, device=device,
            random_background=bool(random_bg),
        )
    else:
        train, evals, _ = sample_cameras(scene, cfg)
        bg = tuple(float(b) for b in (cfg.background if cfg.background is not None else (0.0, 0.0, 0.0)))
        t = Targets(mode="data-free", train_cams=train, train_images=[], eval_cams=evals, eval_images=[],
                    eval_kind="held-out orbit views vs the input model's renders", background=bg,
                    extent=camera_extent(train) if len(train) > 1 else 1.0, teacher=teacher, device=device)
        bar = tqdm(train + evals, desc="target renders", disable=not cfg.progress, leave=False)
        renders = [_h(t.teacher_render(c)) for c in bar]
        t.train_images, t.eval_images = renders[: len(train)], renders[len(train):]
    n_pseudo = cfg.pseudo_views if cfg.pseudo_views is not None else min(256, 2 * len(t.train_cams))
    t.pseudo_cams = pseudo_views(t.train_cams, max(1, n_pseudo), sigma_fraction=0.05, extent=t.extent,
                                 seed=cfg.seed) if len(t.train_cams) else []
    return t


# ---- fine-tuning ------------------------------------------------------------------------------------------
def _lrs(extent: float) -> dict[str, float]:
    """Fine-tuning learning rates: the 3DGS values (METHODS.md §0), positions a tenth of the 3DGS
    start value (1.6e-5 x extent, decaying to 1.6e-6 x extent), opacity the newer 0.025."""
    return {"means": 1.6e-5 * extent, "quats": 1e-3, "scales": 5e-3, "opacities": 0.025,
            "sh0": 2.5e-3, "shN": 2.5e-3 / 20}


def _adam(tensors: dict[str, torch.Tensor], lrs: dict[str, float]) -> tuple[dict, torch.optim.Optimizer]:
    params = {k: torch.nn.Parameter(v.detach().clone().contiguous()) for k, v in tensors.items()}
    groups = [{"params": [params[k]], "lr": lrs[k], "name": k} for k in params if params[k].numel()]
    if not groups:
        return params, None
    from splatdistill.ops.optim import fused_adam_ok

    # eps 1e-15 as in the Inria code and gsplat; the fused kernel is several times faster on CPU
    return params, torch.optim.Adam(groups, eps=1e-15, **({"fused": True} if fused_adam_ok() else {}))


def _fit(build, params, opt, n_iter: int, pick, targets: Targets, extent: float, desc: str, progress: bool,
         policy=None, ssim_lambda: float = 0.2) -> float | None:
    """``n_iter`` Adam steps of the photometric loss of ``build()``'s renders against ``pick(step)``'s
    (camera, target) (+ the policy's regulariser and gates). Positions' lr decays by 10x. Returns the
    last loss (None when no step ran)."""
    from splatdistill.ops.losses import photometric_loss

    if n_iter <= 0 or opt is None:
        return None
    base = {g["name"]: g["lr"] for g in opt.param_groups}
    gamma = 0.1 ** (1.0 / max(1, n_iter))
    last = None
    bar = tqdm(range(n_iter), desc=desc, disable=not progress, dynamic_ncols=True, leave=False)
    gen = torch.Generator().manual_seed(n_iter)
    for step in bar:
        cam, target = pick(step)
        bg = targets.background
        if isinstance(target, Layered):  # random-background fine-tune: one colour for both
            bg = torch.rand(3, generator=gen).to(targets.device)
            target = target.on(bg)
        scene = build()
        opacity_scale = None
        if policy is not None:
            scene, opacity_scale = policy.render_inputs(scene)
        out = render(scene, stack_cameras([cam], targets.device), background=bg,
                     opacity_scale=opacity_scale)
        loss = photometric_loss(out.rgb, target.unsqueeze(0), ssim_lambda)
        if policy is not None:
            reg = policy.loss()
            if reg is not None:
                loss = loss + reg
        loss.backward()
        if policy is not None:
            policy.after_backward(step, params)
            if policy.optimizer() is not None:
                policy.optimizer().step()
                policy.optimizer().zero_grad(set_to_none=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        for g in opt.param_groups:
            if g["name"] in ("means",):
                g["lr"] = base[g["name"]] * gamma ** (step + 1)
        last = float(loss.detach())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{last:.4f}")
    return last


def _cycler(n: int, seed: int):
    rng = np.random.default_rng(seed)
    order: list[int] = []

    def nxt() -> int:
        if not order:
            order.extend(rng.permutation(n).tolist())
        return order.pop()
    return nxt


def _train_picker(targets: "Targets", seed: int):
    """``pick(step) -> (camera, ground-truth target)`` cycling through the training views in a
    seeded random order (the fine-tunes' view sampler)."""
    nxt = _cycler(len(targets.train_cams), seed)

    def pick(step):
        i = nxt()
        return targets.train_cams[i], targets.image(targets.train_images, i)
    return pick


def _scene_of(params, antialiased: bool = False) -> GaussianScene:
    return GaussianScene(**{k: params[k] for k in ("means", "quats", "scales", "opacities", "sh0", "shN")},
                         antialiased=antialiased)


def pruned_count(n: int, prune: float) -> int:
    """Gaussians left after removing ``round(prune · n)`` of ``n`` (at least one)."""
    return max(1, n - int(round(prune * n)))


def _significance(scene: GaussianScene, targets: Targets) -> torch.Tensor:
    from splatdistill.ops.importance import importance

    return importance(scene.detach(), targets.train_cams, "significance")


# ---- stages -----------------------------------------------------------------------------------------------
def prune_stage(scene: GaussianScene, targets: Targets, prune: float, policy_name: str, n_iter: int,
                seed: int = 0, progress: bool = True) -> tuple[GaussianScene, dict]:
    """Remove ``round(prune · N)`` Gaussians by the policy, co-adapting for ``n_iter`` steps on the
    training targets (learned gates: the first half with the gates, then baked)."""
    n = len(scene)
    n_keep = pruned_count(n, prune)
    aa = scene.antialiased
    info: dict = {"input": n, "target": n_keep, "policy": policy_name}
    lrs = _lrs(targets.extent)
    pick = _train_picker(targets, seed)

    if policy_name == "significance":
        if n_keep < n:
            keep = make_policy("significance", n).keep_mask(n_keep, _significance(scene, targets))
            scene = scene.detach()[keep]
        params, opt = _adam(dict(scene.items()), lrs)
        info["loss"] = _fit(lambda: _scene_of(params, aa), params, opt, n_iter, pick, targets, targets.extent,
                            "co-adapt", progress)
        info.update(kept=len(scene), policy_stats={"policy": "significance"})
        return _scene_of(params, aa).detach(), info

    policy = make_policy(policy_name, n, targets.device)
    start = dict(scene.detach().items())
    if policy_name == "confidence":
        start["opacities"] = policy.compensate_opacities(start["opacities"])
    params, opt = _adam(start, lrs)
    n_gate = n_iter // 2
    info["gate_loss"] = _fit(lambda: _scene_of(params, aa), params, opt, n_gate, pick, targets, targets.extent,
                             f"{policy_name} gates", progress, policy=policy)
    info["policy_stats"] = policy.stats()
    baked = policy.bake(_scene_of(params, aa).detach())
    scores = _significance(baked, targets) if n_keep < n else None  # significance of the gated scene
    keep = policy.keep_mask(n_keep if n_keep < n else None, scores)
    baked = baked[keep]
    info["kept"] = int(keep.sum())
    params, opt = _adam(dict(baked.items()), lrs)
    info["loss"] = _fit(lambda: _scene_of(params, aa), params, opt, n_iter - n_gate, pick, targets, targets.extent,
                        "co-adapt", progress)
    return _scene_of(params, aa).detach(), info


def distill_sh_stage(scene: GaussianScene, targets: Targets, degree: int, n_iter: int, seed: int = 0,
                     progress: bool = True) -> tuple[GaussianScene, dict]:
    """LightGaussian SH distillation: fit the degree-``degree`` student to the uncompressed teacher,
    iterations 1 and 2 of every 3 on pseudo views, the third on a training view."""
    if degree >= scene.sh_degree:
        return scene.with_sh_degree(degree), {"skipped": True}
    student = scene.detach().with_sh_degree(degree)
    if n_iter <= 0:  # plain truncation
        return student, {"skipped": False, "loss": None, "from": scene.sh_degree, "to": degree,
                         "pseudo_views": len(targets.pseudo_cams)}
    train_imgs, pseudo_imgs = targets.teacher_images(progress)
    params, opt = _adam(dict(student.items()), _lrs(targets.extent))
    ti, pi = _cycler(len(targets.train_cams), seed + 1), _cycler(len(targets.pseudo_cams), seed + 2)

    def pick(step):
        if step % 3 != 2 and targets.pseudo_cams:
            i = pi()
            return targets.pseudo_cams[i], targets.image(pseudo_imgs, i)
        i = ti()
        return targets.train_cams[i], targets.image(train_imgs, i)

    aa = scene.antialiased
    loss = _fit(lambda: _scene_of(params, aa), params, opt, n_iter, pick, targets, targets.extent,
                f"SH {scene.sh_degree}->{degree}", progress)
    return _scene_of(params, aa).detach(), {"skipped": False, "loss": loss, "from": scene.sh_degree, "to": degree,
                                        "pseudo_views": len(targets.pseudo_cams)}


def vq_stage(scene: GaussianScene, targets: Targets, k: int, ratio: float, n_iter: int, seed: int = 0,
             progress: bool = True) -> tuple[GaussianScene, dict | None, dict]:
    """Colour VQ + fine-tune. Returns (scene with the kept Gaussians first, vq dict for the codec or
    None, info)."""
    from splatdistill.formats.sdz import build_color_vq

    from splatdistill.compress.outputs import vq_layout

    n = len(scene)
    n_vq, k_eff, skipped = vq_layout(n, k, ratio, _VQ_POINTS_PER_CODEWORD)
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
    lrs = _lrs(targets.extent)
    lrs.update(cb0=lrs["sh0"], cbN=lrs["shN"])
    tensors = {"means": scene.means, "quats": scene.quats, "scales": scene.scales, "opacities": scene.opacities,
               "sh0": scene.sh0[:n_keep], "shN": scene.shN[:n_keep], "cb0": cb[:, :1], "cbN": cb[:, 1:]}
    params, opt = _adam(tensors, lrs)

    def build() -> GaussianScene:
        return GaussianScene(params["means"], params["quats"], params["scales"], params["opacities"],
                             torch.cat([params["sh0"], params["cb0"][assign]]),
                             torch.cat([params["shN"], params["cbN"][assign]]), antialiased=scene.antialiased)

    pick = _train_picker(targets, seed + 3)

    info["loss"] = _fit(build, params, opt, n_iter, pick, targets, targets.extent, "VQ fine-tune", progress)
    out = build().detach()
    codebook = torch.cat([params["cb0"], params["cbN"]], dim=1).detach().reshape(k_eff, -1).cpu().numpy()
    keep_mask = np.zeros(n, dtype=bool)
    keep_mask[:n_keep] = True
    info["kept_colours"] = n_keep
    return out, {"codebook": codebook, "assign": assign.cpu().numpy(), "keep_mask": keep_mask}, info


def rvq_stage(scene: GaussianScene, targets: Targets, stages: int, k: int, n_iter: int, seed: int = 0,
              progress: bool = True) -> tuple[GaussianScene, dict | None, dict]:
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
    k_eff = min(int(k), max(1, n // _VQ_POINTS_PER_CODEWORD))
    w = _significance(scene, targets).cpu().numpy()
    books, idx = {}, {}
    for name, x in (("scales", scene.scales.detach().cpu().numpy()),
                    ("quats", canonical_quats(scene.quats.detach().cpu().numpy()).astype(np.float32))):
        b, i = residual_vq(x, stages=stages, k=k_eff, seed=seed, weights=w)
        books[name] = torch.as_tensor(b, device=scene.device)
        idx[name] = torch.as_tensor(i, device=scene.device)
    lrs = _lrs(targets.extent)
    lrs.update(rvq_scales=lrs["scales"], rvq_quats=lrs["quats"])
    params, opt = _adam({"means": scene.means, "opacities": scene.opacities,
                         "rvq_scales": books["scales"], "rvq_quats": books["quats"]}, lrs)
    sh0, shN = scene.sh0.detach(), scene.shN.detach()

    def decode(name: str) -> torch.Tensor:  # the same float32 sum, stage by stage, as the decoder's
        b, i = params[f"rvq_{name}"], idx[name]
        out = torch.zeros(n, b.shape[2], dtype=b.dtype, device=b.device)
        for s in range(b.shape[0]):
            out = out + b[s][i[:, s]]
        return out

    def build() -> GaussianScene:
        return GaussianScene(params["means"], decode("quats"), decode("scales"), params["opacities"], sh0, shN,
                             antialiased=scene.antialiased)

    pick = _train_picker(targets, seed + 4)

    info = {"stages": int(stages), "codebook_size": int(k), "codebook_size_effective": k_eff}
    info["loss"] = _fit(build, params, opt, n_iter, pick, targets, targets.extent, "R-VQ fine-tune", progress)
    out = build().detach()
    codec = {name: (params[f"rvq_{name}"].detach().cpu().numpy(), idx[name].cpu().numpy()) for name in books}
    return out, codec, info


def evaluate(scene: GaussianScene, targets: Targets, lpips: bool = True, bank=None, progress: bool = True) -> dict:
    """Mean PSNR / SSIM / LPIPS-VGG of ``scene``'s renders of the evaluation views."""
    from splatdistill.ops.lpips import LPIPSBank
    from splatdistill.ops.metrics import image_metrics

    bank = bank or LPIPSBank()
    scene = scene.to(targets.device)
    per = []
    for i, cam in enumerate(tqdm(targets.eval_cams, desc="evaluate", disable=not progress, leave=False)):
        with torch.no_grad():
            pred = render(scene, stack_cameras([cam], targets.device), background=targets.background).rgb[0]
        per.append(image_metrics(pred.clamp(0, 1), targets.image(targets.eval_images, i),
                                 ("vgg",) if lpips else (), lpips_bank=bank))
    out = {}
    for key in ("psnr", "ssim", "lpips_vgg"):
        vals = [p[key] for p in per]
        out[key] = None if any(v is None for v in vals) else float(np.mean(vals))
    errs = sorted({p["lpips_error"] for p in per if p.get("lpips_error")})
    if errs:
        out["lpips_error"] = errs[0]
    return out


# ---- the whole job ----------------------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    from splatdistill.device import pick_device

    return pick_device(name)


def _model_bytes(model_path) -> int:
    """Size of the input model on disk (a SOG folder / meta.json: with its textures)."""
    from splatdistill.formats.io import size_on_disk

    return size_on_disk(model_path)


def load_input(model_path) -> GaussianScene:
    from splatdistill.formats.io import load_model

    p = Path(model_path)
    if not p.exists():
        raise UserError("no such file", p)
    scene = load_model(p)
    scene.check_finite(str(p))
    if len(scene) == 0:
        raise UserError("the model has no Gaussians", p)
    return scene


def compress_model(model_path, out_dir, data=None, cfg: CompressConfig | None = None, *,
                   scene: GaussianScene | None = None, targets: Targets | None = None) -> dict:
    """Compress the model at ``model_path`` into ``out_dir`` (model.sdz, model.ply, model.spz,
    summary.json); returns the summary. ``scene`` / ``targets`` may be passed to reuse them (sweeps).

    Before any optimisation the output folder and every writer are checked on the input model
    (``outputs.preflight``); the outputs are written under temporary names and renamed into place
    together at the end (``outputs.StagedOutputs``), so a failure leaves no final-named file behind."""
    from splatdistill.compress.outputs import StagedOutputs, preflight

    cfg = cfg or CompressConfig()
    if data is None and targets is None and cfg.training_free is not False:
        from splatdistill.compress.trainingfree import compress_training_free

        return compress_training_free(model_path, out_dir, cfg, scene=scene)
    model_path, out = Path(model_path), Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError("exists and is not a directory", out)
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    scene = scene if scene is not None else load_input(model_path)
    s = cfg.settings(scene.sh_degree)
    preflight_info = preflight(scene, out, s, pruned_count(len(scene), s["prune"]), cfg.write_spz,
                               _VQ_POINTS_PER_CODEWORD, cfg.spz_version)
    timings["preflight"] = time.perf_counter() - t0
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    if targets is None:
        targets = prepare_targets(scene, data, cfg, device)
    timings["targets"] = time.perf_counter() - t0
    n_in = len(scene)
    work = scene.to(device)

    t0 = time.perf_counter()
    work, prune_info = prune_stage(work, targets, s["prune"], s["prune_policy"], s["iterations"], cfg.seed,
                                   cfg.progress)
    timings["prune"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    work, sh_info = distill_sh_stage(work, targets, s["sh_degree"], s["iterations"], cfg.seed, cfg.progress)
    timings["sh_distill"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    work, vq, vq_info = vq_stage(work, targets, s["vq_size"], s["vq_ratio"], s["iterations"] // 2, cfg.seed,
                                 cfg.progress)
    timings["vq"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    work, rvq, rvq_info = rvq_stage(work, targets, s["rvq_stages"], s["rvq_size"], s["iterations"] // 2, cfg.seed,
                                    cfg.progress)
    timings["rvq"] = time.perf_counter() - t0

    with StagedOutputs(out) as staged:
        try:
            summary = _finish(model_path, data, cfg, s, scene, work, vq, rvq, targets, staged, n_in, device,
                              timings, t_all)
            summary["stages"] = {"preflight": preflight_info, "prune": prune_info, "sh_distill": sh_info,
                                 "vq": vq_info, "rvq": rvq_info}
            write_json_atomic(staged.path("summary.json"), summary)
        except UserError as e:
            raise staged.final_name(e) from None
        except OSError as e:  # e.g. the disk filled up during the run
            raise UserError(f"cannot write the outputs ({e.strerror or e})", out) from None
        staged.commit()
    return summary


def _finish(model_path, data, cfg, s, scene, work, vq, rvq, targets, staged, n_in, device, timings,
            t_all) -> dict:
    """Encode, read back and evaluate the result into ``staged``'s temporary files; the summary."""
    from splatdistill.formats.ply import read_ply, write_ply
    from splatdistill.formats.sdz import load_sdz, save_sdz
    from splatdistill.formats.spz import read_spz, write_spz

    t0 = time.perf_counter()
    final = work.detach().to("cpu")
    final.antialiased = scene.antialiased  # the stages rebuild scenes; the outputs keep the flag
    if vq is not None:
        vq = dict(vq, kept_encoding=s["kept_encoding"])
    extra = {"source": model_path.name, "settings": {k: v for k, v in s.items() if k != "bits"}}
    sdz = save_sdz(final, staged.path("model.sdz"), vq=vq, bits=s["bits"], position=s["position"],
                   extra_meta=extra, rvq=rvq)
    decoded = load_sdz(sdz)
    decoded.antialiased = final.antialiased
    ply = write_ply(decoded, staged.path("model.ply"))
    read_ply(ply)
    spz_bytes, spz_error = None, None
    if cfg.write_spz:
        try:
            spz = write_spz(final, staged.path("model.spz"), version=cfg.spz_version, antialiased=final.antialiased)
            read_spz(spz)
            spz_bytes = os.path.getsize(spz)
        except UserError as e:
            spz_error = e.message
            staged.drop("model.spz")
    timings["encode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    from splatdistill.ops.lpips import LPIPSBank

    bank = LPIPSBank()
    metrics = evaluate(decoded, targets, cfg.lpips, bank, cfg.progress)
    pre = evaluate(final, targets, False, bank, cfg.progress)
    input_metrics = evaluate(scene, targets, False, bank, cfg.progress) if targets.mode == "data" else None
    timings["evaluate"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all

    in_bytes, out_bytes = _model_bytes(model_path), os.path.getsize(sdz)
    return {
        "input": str(model_path),
        "mode": targets.mode,
        "data": None if data is None else str(data),
        "input_bytes": in_bytes,
        "output_bytes": out_bytes,
        "ratio": in_bytes / out_bytes,
        "num_gaussians_input": n_in,
        "num_gaussians": len(decoded),
        "sh_degree_input": scene.sh_degree,
        "sh_degree": decoded.sh_degree,
        "antialiased": bool(final.antialiased),
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "lpips_vgg": metrics["lpips_vgg"],
        **({"lpips_error": metrics["lpips_error"]} if metrics.get("lpips_error") else {}),
        "psnr_before_quantization": pre["psnr"],
        "input_psnr": None if input_metrics is None else input_metrics["psnr"],
        "evaluated_on": f"{len(targets.eval_cams)} {targets.eval_kind}",
        "ply_bytes": os.path.getsize(ply),
        "spz_bytes": spz_bytes,
        **({"spz_error": spz_error} if spz_error else {}),
        "settings": s,
        "data_free_views": None if targets.mode == "data" else {
            "train": len(targets.train_cams), "eval": len(targets.eval_cams), "resolution": cfg.resolution,
            "fov_deg": cfg.fov_deg, "background": list(targets.background)},
        "timings_s": timings,
        "device": str(device),
    }


# ---- sweep ------------------------------------------------------------------------------------------------
def sweep_settings(cfg: CompressConfig) -> list[tuple[str, CompressConfig]]:
    """The three presets, then the balanced preset at two more prune ratios. Explicit settings of
    ``cfg`` (SH degree, VQ, policy, iterations, ...) apply to every run; the prune variants set
    their own prune ratio."""
    runs = [(q, replace(cfg, quality=q)) for q in PRESETS]
    for p in (0.5, 0.8):
        runs.append((f"balanced_prune{int(round(p * 100))}", replace(cfg, quality="balanced", prune=p)))
    return runs


def run_sweep(model_path, out_dir, data=None, cfg: CompressConfig | None = None) -> dict:
    """Compress with several settings into ``OUT/<name>/``; writes OUT/sweep.json, OUT/sweep.md and
    OUT/rate_distortion.png (size in MB, log scale, against PSNR and LPIPS-VGG)."""
    cfg = cfg or CompressConfig()
    out = Path(out_dir)
    from splatdistill.compress.outputs import check_outputs, preflight

    scene = load_input(model_path)
    cfg.settings(scene.sh_degree)  # fail early on bad flags
    check_outputs(out, ["sweep.json", "sweep.md", "rate_distortion.png"])
    for name, c in sweep_settings(cfg):  # every run's output folder and writers, before any work
        st = c.settings(scene.sh_degree)
        preflight(scene, out / name, st, pruned_count(len(scene), st["prune"]), c.write_spz, _VQ_POINTS_PER_CODEWORD)
    targets = prepare_targets(scene, data, cfg, _device(cfg.device))
    rows = []
    for name, c in sweep_settings(cfg):
        summ = compress_model(model_path, out / name, data, c, scene=scene, targets=targets)
        s = summ["settings"]
        rows.append({"name": name, "output_bytes": summ["output_bytes"], "mb": summ["output_bytes"] / 1e6,
                     "ratio": summ["ratio"], "num_gaussians": summ["num_gaussians"], "psnr": summ["psnr"],
                     "ssim": summ["ssim"], "lpips_vgg": summ["lpips_vgg"], "prune": s["prune"],
                     "sh_degree": s["sh_degree"], "vq_size": s["vq_size"], "vq_ratio": s["vq_ratio"],
                     "seconds": summ["timings_s"]["total"]})
    result = {"input": str(model_path), "input_bytes": _model_bytes(model_path), "mode": targets.mode,
              "evaluated_on": f"{len(targets.eval_cams)} {targets.eval_kind}", "runs": rows}
    write_json_atomic(out / "sweep.json", result)
    write_bytes_atomic(out / "sweep.md", sweep_markdown(result).encode())
    plot_rate_distortion(rows, out / "rate_distortion.png", title=Path(model_path).name)
    return result


def sweep_markdown(result: dict) -> str:
    def f(v, spec):
        return "n/a" if v is None else format(v, spec)

    lines = [f"# Compression sweep: {Path(result['input']).name}", "",
             f"Input {result['input_bytes'] / 1e6:.2f} MB; metrics on {result['evaluated_on']}.", "",
             "| run | prune | SH | VQ K | VQ R | Gaussians | MB | ratio | PSNR | SSIM | LPIPS-VGG | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['name']} | {r['prune']:.2f} | {r['sh_degree']} | {r['vq_size']} | {r['vq_ratio']:.2f} | "
                     f"{r['num_gaussians']} | {r['mb']:.3f} | {r['ratio']:.1f} | {f(r['psnr'], '.2f')} | "
                     f"{f(r['ssim'], '.4f')} | {f(r['lpips_vgg'], '.4f')} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _minor_label(x: float, _pos=None) -> str:
    """Minor log-axis ticks: label 2, 3 and 5 times a power of ten only (the rest would collide)."""
    if x <= 0:
        return ""
    lead = x / 10 ** math.floor(math.log10(x) + 1e-9)
    return f"{x:g}" if round(lead) in (2, 3, 5) and abs(lead - round(lead)) < 1e-6 else ""


def plot_rate_distortion(rows: list[dict], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, FuncFormatter

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((a1, "psnr", "PSNR (dB)"), (a2, "lpips_vgg", "LPIPS-VGG (lower is better)")):
        pts = [(r["mb"], r[key], r["name"]) for r in rows if r.get(key) is not None and math.isfinite(r[key])]
        pts.sort()
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
            for x, y, name in pts:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("size (MB)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"rate-distortion {title}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def config_dict(cfg: CompressConfig) -> dict:
    return asdict(cfg)
