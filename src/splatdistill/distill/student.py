"""The student: few Gaussians trained against the teachers' soft targets (Distilled-3DGS, METHODS.md §1).

Loss = lambda_gt (0.8 L1 + 0.2 D-SSIM)(student, ground truth)           on training views
     + lambda_kd (0.8 L1 + 0.2 D-SSIM)(student, teacher mean)           on training and pseudo views
                                                                        (``kd_views="pseudo"``: pseudo views only)
     + lambda_depth |D_student - D_teacher| / extent                    on pseudo views, where the
                                                                        teachers are opaque
     + lambda_struct L_struct(student means, teacher means).

Initialisation: from the vanilla teacher, pruned by an importance score to the target count in a few
steps with co-adaptation in between (``teacher``); or from the SfM points / a random box, densified,
then pruned by importance during training (``sfm``, the paper's from-scratch variant).

Pruning policy (``prune_policy``, the same classes as ``compress``: ``ops/policies.py``, in the loop
through ``ops.optim.PolicyHook``): ``significance`` ranks by ``score`` alone; ``mask`` (Compact-3DGS)
and ``confidence`` (Confident Splatting) add a learnable gate from the first pruning step on, trained
with the student's loss plus the policy's regulariser. At each pruning step the gated-out Gaussians
go, and of the rest the target count with the highest ``score`` *of the gated scene* stays; at the end
the gates are baked into the exported opacities (and, for the mask, scales), so a viewer shows the
scene that was trained.
Pruning keeps the survivors' Adam moments (``ops.optim.remove``, as gsplat prunes).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from splatdistill.cameras.camera import stack_cameras
from splatdistill.data.dataset import Dataset
from splatdistill.distill.config import TEACHER_WEIGHT, StudentConfig  # noqa: F401 (re-exported)
from splatdistill.distill.targets import SoftTargets
from splatdistill.errors import UserError
from splatdistill.fileio import dumps_json, write_json_atomic
from splatdistill.formats.ply import write_ply
from splatdistill.ops.background import fixed_background, resolve_background
from splatdistill.ops.importance import importance, top_k_mask
from splatdistill.ops.losses import photometric_loss, psnr_from_mse
from splatdistill.ops.optim import AtSteps, ExponentialDecay, PolicyHook, fit, make_params, remove
from splatdistill.ops.policies import PrunePolicy, make_policy
from splatdistill.ops.ssim import ssim
from splatdistill.ops.structure import StructuralLoss, StructuralLossConfig
from splatdistill.render import render
from splatdistill.scene.gaussians import GaussianScene
from splatdistill.train import checkpoint as ck
from splatdistill.train.config import TrainConfig
from splatdistill.train.setup import (
    DensifyHook,
    global_rng_state,
    initial_scene,
    make_optimizers,
    make_strategy,
    seed_global_rng,
    set_global_rng_state,
)


def weighted_photometric_loss(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, ssim_lambda: float = 0.2
) -> torch.Tensor:
    """(1 - lambda) mean(w |pred - target|) + lambda mean(w) (1 - SSIM): per-pixel weights on the L1
    term; the SSIM term (a windowed statistic) is scaled by the mean weight."""
    l1 = (weight * (pred - target).abs()).mean()
    if ssim_lambda == 0:
        return l1
    s = ssim(pred.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2))
    return (1.0 - ssim_lambda) * l1 + ssim_lambda * weight.mean() * (1.0 - s)


def depth_loss(depth: torch.Tensor, target: torch.Tensor, extent: float) -> torch.Tensor:
    """mean over the target's pixels (target > 0) of |depth - target| / extent; 0 with no target pixel."""
    mask = target > 0
    if not bool(mask.any()):
        return depth.sum() * 0.0
    return (depth[mask] - target[mask]).abs().mean() / max(extent, 1e-12)


def prune_schedule(cfg: StudentConfig) -> dict[int, int]:
    """{iteration: pruning step}. From a teacher: ``prune_steps`` steps spread over the pruning window,
    the first at iteration 0. From scratch: two steps after densification (at the end of the window
    and a quarter-window later), as Mini-Splatting prunes once it has grown the scene."""
    w = cfg.prune_window * cfg.iterations
    if cfg.init == "teacher":
        n = max(1, cfg.prune_steps)
        return {int(round(w * k / n)): k for k in range(n)}
    return {int(round(w)): 0, int(round(w * 1.25)): 1}


class StudentTrainer:
    def __init__(
        self,
        dataset: Dataset,
        targets: SoftTargets | None,
        teacher: GaussianScene,
        cfg: StudentConfig,
        out_dir: Path,
        device,
        progress: bool = True,
    ):
        self.ds, self.targets, self.cfg, self.out = dataset, targets, cfg.validate(), Path(out_dir)
        self.device = torch.device(device)
        self.progress = progress
        self.train_views = dataset.split("train")
        self.extent = float(dataset.extent)
        self.bg_mode = resolve_background(cfg.background, dataset)
        self.background = fixed_background(self.bg_mode, dataset)
        if self.bg_mode == "random" and targets is not None and targets.alpha is None:
            raise ValueError("random-background students need soft targets rendered with alpha")
        if cfg.kd_weight == "agreement" and targets is not None and targets.spread is None:
            raise ValueError("agreement weights need soft targets built with their spread")
        if cfg.kd_weight == "alpha" and targets is not None and targets.alpha is None:
            raise UserError("--kd-weight alpha needs a training background of 'random' (or 'auto' on RGBA data)")
        self.pseudo_pool = self._pseudo_pool()
        self.n_target = cfg.target_count(len(teacher))
        self.teacher_means = teacher.means.detach().to(self.device)
        self.antialiased = teacher.antialiased  # rendered (and so trained) the way the teacher was
        self._teacher_id = [len(teacher), float(teacher.means.detach().double().sum())]  # resume guard
        self.gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        seed_global_rng(cfg.seed)
        tcfg = TrainConfig(
            iterations=cfg.iterations,
            lr_means=cfg.lr_means,
            lr_means_final=cfg.lr_means_final,
            seed=cfg.seed,
            refine_stop=cfg.prune_window * 0.75,
        )
        self.tcfg = tcfg
        if cfg.init == "teacher":
            scene = teacher.detach().clone()
            self.strategy = None
        else:
            scene = initial_scene(
                dataset, TrainConfig(seed=cfg.seed, sh_degree=teacher.sh_degree, init_points=cfg.init_points)
            )
            self.tcfg = TrainConfig(iterations=cfg.iterations, seed=cfg.seed, refine_stop=cfg.prune_window * 0.75)
            self.strategy = make_strategy(self.tcfg, self.device)
        self._set_scene(scene)
        self.struct = None
        if cfg.struct != "none" and cfg.lambda_struct > 0:
            self.struct = StructuralLoss(
                self.teacher_means, StructuralLossConfig(kind=cfg.struct, weight=cfg.lambda_struct)
            )
        self.prune_at = prune_schedule(cfg)
        self._policy_hook = PolicyHook(None)  # a learned gate, created at the first pruning step
        self.policy_stats: dict = {"policy": cfg.prune_policy}

    def _set_scene(self, scene: GaussianScene) -> None:
        self.params = make_params(scene, self.device)
        self.optimizers = make_optimizers(self.params, self.tcfg, self.extent)
        self.state = self.strategy.initialize_state(scene_scale=self.extent) if self.strategy else None

    @property
    def policy(self) -> PrunePolicy | None:
        """The learned gate (None before the first pruning step and for ``significance``)."""
        return self._policy_hook.policy

    @policy.setter
    def policy(self, policy: PrunePolicy | None) -> None:
        self._policy_hook.policy = policy

    def scene(self) -> GaussianScene:
        return GaussianScene(**dict(self.params), antialiased=self.antialiased)

    def _start_policy(self) -> None:
        """Create the learned gate for the current Gaussians (Confident Splatting: the opacities are
        compensated for the initial confidence, so the gated scene starts out unchanged). The
        parameters change in place: their Adam state stays."""
        self.policy = make_policy(self.cfg.prune_policy, len(self.params["means"]), self.device)
        if self.cfg.prune_policy == "confidence":
            with torch.no_grad():
                op = self.params["opacities"]
                op.copy_(self.policy.compensate_opacities(op.detach()))

    def _prune(self, k: int, n_steps: int) -> None:
        """Keep the most important Gaussians: geometric steps from the current count to the target.
        With a learned gate, the gated-out Gaussians always go and the rest are ranked by the score
        of the gated scene."""
        if self.policy is None and self.cfg.prune_policy != "significance":
            self._start_policy()
        n_now = len(self.params["means"])
        remaining = n_steps - k
        n_keep = self.n_target if remaining <= 1 else int(round(n_now * (self.n_target / n_now) ** (1.0 / remaining)))
        n_keep = max(self.n_target, min(n_now, n_keep))
        scene = self.scene().detach()
        cams = [v.camera for v in self.train_views]
        if self.policy is None:
            if n_keep >= n_now:
                return
            keep = top_k_mask(importance(scene, cams, self.cfg.score), n_keep)
        else:
            scores = None
            if n_keep < n_now:
                scores = importance(self.policy.bake(scene), cams, self.cfg.score)
            keep = self.policy.keep_mask(n_keep if n_keep < n_now else None, scores)
            if bool(keep.all()):
                return
            self.policy.subset(keep)
        # the survivors keep their Adam moments (and the densification statistics), as gsplat prunes
        remove(self.params, self.optimizers, ~keep, self.state)

    def exported_scene(self) -> GaussianScene:
        """The scene to write: with a learned gate, gated-out Gaussians removed and the gates baked."""
        scene = self.scene().detach()
        if self.policy is None:
            return scene
        self.policy_stats = self.policy.stats()
        return self.policy.bake(scene)[self.policy.keep_mask(None, None)]

    def _pseudo_pool(self) -> list[int]:
        """Indices (into the targets) of the pseudo views in use: all, or with ``kd_far`` < 1 that
        share of them farthest from every training camera centre."""
        if self.targets is None or len(self.targets) <= self.targets.num_train:
            return []
        idx = list(range(self.targets.num_train, len(self.targets)))
        if self.cfg.kd_far >= 1.0:
            return idx
        train_c = np.stack([c.center for c in self.targets.cameras[: self.targets.num_train]])
        d = [float(np.linalg.norm(train_c - self.targets.cameras[i].center, axis=1).min()) for i in idx]
        n = max(1, int(round(self.cfg.kd_far * len(idx))))
        far = np.argsort(d, kind="stable")[::-1][:n]
        return sorted(idx[j] for j in far)

    def _pick(self, step: int = 0) -> tuple[int, bool]:
        """(index into targets / train views, is_training_view)."""
        use_pseudo = (
            bool(self.pseudo_pool) and self.cfg.kd_at(step) > 0 and self.rng.random() < self.cfg.pseudo_fraction
        )
        if use_pseudo:
            return self.pseudo_pool[int(self.rng.integers(0, len(self.pseudo_pool)))], False
        return int(self.rng.integers(0, len(self.train_views))), True

    def _gt(self, idx: int, gt_cache: dict, bg) -> torch.Tensor:
        """The ground truth of training view ``idx`` on ``bg`` (random mode) or the fixed background."""
        if idx not in gt_cache:
            v = self.train_views[idx]
            if self.bg_mode == "random":
                black = self.ds.image_on(v, (0.0, 0.0, 0.0)).to(self.device)
                gt_cache[idx] = (black, self.ds.image_on(v, (1.0, 1.0, 1.0)).to(self.device) - black)
            else:
                gt_cache[idx] = self.ds.image_on(v, self.background).to(self.device)
        if self.bg_mode == "random":
            black, one_minus_alpha = gt_cache[idx]
            return black + one_minus_alpha * bg.reshape(1, 1, 3)
        return gt_cache[idx]

    def kd_weights(self, idx: int) -> torch.Tensor | None:
        """(H, W, 1) per-pixel weights of the teacher term, or None (uniform)."""
        cfg = self.cfg
        if cfg.kd_weight == "agreement":
            return torch.exp(-self.targets.spread_of(idx, self.device) / cfg.kd_spread_scale).unsqueeze(-1)
        if cfg.kd_weight == "alpha":
            a = torch.from_numpy(np.asarray(self.targets.alpha[idx], dtype=np.float32)).to(self.device)
            return (2.0 * a - 1.0).abs().unsqueeze(-1)
        return None

    def losses(self, idx: int, is_train: bool, step: int, gt_cache: dict) -> dict[str, torch.Tensor]:
        """The loss terms of one iteration (exposed for tests)."""
        cfg = self.cfg
        cam = self.train_views[idx].camera if is_train else self.targets.cameras[idx]
        sh = self.params["shN"].shape[1]
        sh_deg = int(round((sh + 1) ** 0.5)) - 1
        if self.strategy is not None:
            sh_deg = min(sh_deg, step // max(1, self.tcfg.at(self.tcfg.sh_degree_every, 1)))
        scene, opacity_scale = self.scene(), None
        if self.policy is not None:
            scene, opacity_scale = self.policy.render_inputs(scene)
        bg = self.background
        if self.bg_mode == "random":  # one colour for the render, the ground truth and the soft target
            bg = torch.rand(3, generator=self.gen).to(self.device)
        depth_tgt = None
        if cfg.lambda_depth > 0 and not is_train and self.targets is not None and cfg.kd_at(step) > 0:
            depth_tgt = self.targets.depth_of(idx, self.device)
        out = render(
            scene,
            stack_cameras([cam], self.device),
            sh_degree=sh_deg,
            background=bg,
            opacity_scale=opacity_scale,
            render_depth=depth_tgt is not None,
        )
        self._last_info = out.info
        self._last_background = bg
        terms: dict[str, torch.Tensor] = {}
        gt = self._gt(idx, gt_cache, bg).unsqueeze(0) if is_train else None
        if is_train and cfg.lambda_gt > 0:
            terms["gt"] = cfg.lambda_gt * photometric_loss(out.rgb, gt, cfg.ssim_lambda)
        lam_kd = cfg.kd_at(step)
        if self.targets is not None and lam_kd > 0 and not (is_train and cfg.kd_views == "pseudo"):
            tgt = self.targets.image(idx, self.device, background=bg).unsqueeze(0)
            w = self.kd_weights(idx)
            if w is None:
                terms["kd"] = lam_kd * photometric_loss(out.rgb, tgt, cfg.ssim_lambda)
            else:
                terms["kd"] = lam_kd * weighted_photometric_loss(out.rgb, tgt, w.unsqueeze(0), cfg.ssim_lambda)
        if depth_tgt is not None:
            terms["depth"] = cfg.lambda_depth * depth_loss(out.depth[0], depth_tgt, self.extent)
        if self.struct is not None:
            terms["struct"] = self.struct(self.params["means"])
        if self.policy is not None:
            terms["gate"] = self.policy.loss()
        terms["_mse"] = ((out.rgb.detach() - (gt if gt is not None else out.rgb.detach())) ** 2).mean()
        return terms

    # --- checkpoints: a crashed student resumes where it was (same config only) -------------------
    def _payload(self) -> dict:
        pol = None
        if self.policy is not None:
            pol = {
                "name": self.policy.name,
                "tensors": [t.detach().cpu() for t in self.policy.parameters()],
                "optimizer": self.policy.optimizer().state_dict(),
            }
        return {
            "config": asdict(self.cfg),
            "teacher": self._teacher_id,
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "strategy_state": None
            if self.state is None
            else {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in self.state.items()},
            "policy": pol,
            "rng": {
                "numpy": self.rng.bit_generator.state,
                "torch": self.gen.get_state(),
                "global": global_rng_state(self.device),
            },
        }

    def _resume(self) -> int:
        """Load the newest checkpoint written with this config; returns the iteration to start at."""
        found = ck.latest_checkpoint(self.out)
        if found is None or found[1].get("config") != asdict(self.cfg) or found[1].get("teacher") != self._teacher_id:
            if found is not None:
                shutil.rmtree(ck.checkpoint_dir(self.out), ignore_errors=True)  # another config's
            return 0
        state = found[1]
        scene = GaussianScene(**state["params"], antialiased=self.antialiased)
        pol = state["policy"]
        if pol is not None:
            self.policy = make_policy(pol["name"], len(scene), self.device)
            for t, v in zip(self.policy.parameters(), pol["tensors"]):
                t.data = v.to(self.device)
            self.policy.subset(torch.ones(len(scene), dtype=torch.bool, device=self.device))
            self.policy.optimizer().load_state_dict(pol["optimizer"])
        self._set_scene(scene)
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        if state["strategy_state"] is not None:
            self.state = {
                k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in state["strategy_state"].items()
            }
        self.rng.bit_generator.state = state["rng"]["numpy"]
        self.gen.set_state(state["rng"]["torch"])
        set_global_rng_state(state["rng"].get("global"), self.device)
        return int(state["iteration"])

    def run(self) -> tuple[GaussianScene, float]:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.out / "student_config.json", asdict(cfg))
        t0 = time.perf_counter()
        gt_cache: dict = {}
        n_prune = len(self.prune_at)
        (self.out / "student.json").unlink(missing_ok=True)  # not finished until written again
        start = self._resume()
        log_path = self.out / "train_log.jsonl"
        ck.truncate_log(log_path, start)
        last: dict = {}

        def loss_fn(step: int, batch) -> tuple[torch.Tensor, dict]:
            idx, is_train = batch
            terms = self.losses(idx, is_train, step, gt_cache)
            last.update(mse=terms.pop("_mse"), terms=terms, is_train=is_train)
            return sum(terms.values()), self._last_info

        hooks = [AtSteps(self.prune_at, lambda k: self._prune(k, n_prune)), self._policy_hook]
        if self.strategy is not None:
            hooks.append(DensifyHook(self.strategy, self.state))

        with open(log_path, "a") as log:

            def on_step(step: int, loss: float, info: dict) -> dict:
                post = {}
                if (step + 1) % cfg.log_every == 0:
                    rec = {
                        "iteration": step + 1,
                        "loss": loss,
                        "num_gaussians": len(self.params["means"]),
                        **{k: float(v.detach()) for k, v in last["terms"].items()},
                    }
                    if last["is_train"]:
                        rec["psnr"] = psnr_from_mse(float(last["mse"]))
                    log.write(dumps_json(rec, indent=None) + "\n")
                    log.flush()
                    post = dict(loss=f"{loss:.4f}", n=len(self.params["means"]))
                if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.iterations:
                    ck.save_checkpoint(self.out, step + 1, self._payload())
                return post

            means = ExponentialDecay.over(cfg.lr_means * self.extent, cfg.lr_means_final / cfg.lr_means, cfg.iterations)
            fit(
                self.params,
                self.optimizers,
                cfg.iterations,
                self._pick,
                loss_fn,
                hooks,
                schedules={"means": means},
                start=start,
                desc="student",
                progress=self.progress,
                unit="it",
                on_step=on_step,
            )
        if len(self.params["means"]) > self.n_target:  # a from-scratch student may still be over budget
            self._prune(n_prune - 1, n_prune)
        scene = self.exported_scene().to("cpu")
        write_ply(scene, self.out / "point_cloud.ply")
        wall = time.perf_counter() - t0
        # the record that the student is finished (a rerun evaluates it instead of training it again);
        # written before the checkpoints go, so an interruption in between resumes from them
        write_json_atomic(
            self.out / "student.json",
            {
                "config": asdict(cfg),
                **getattr(self, "done_record", {}),
                "wall_s": round(wall, 1),
                "policy_stats": self.policy_stats,
            },
        )
        shutil.rmtree(ck.checkpoint_dir(self.out), ignore_errors=True)  # finished: the PLY is the result
        return scene, wall
