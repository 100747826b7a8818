"""The training loop: one teacher (vanilla, noise or dropout variant), checkpointed and resumable."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from splatdistill.cameras.camera import stack_cameras
from splatdistill.data.dataset import Dataset, load_dataset, with_train_views
from splatdistill.device import pick_device
from splatdistill.errors import UserError
from splatdistill.fileio import dumps_json, write_json_atomic
from splatdistill.formats.ply import write_ply
from splatdistill.ops.background import fixed_background, resolve_background
from splatdistill.ops.losses import photometric_loss, psnr_from_mse
from splatdistill.ops.optim import Hook, fit, make_params
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
    means_schedule,
    seed_global_rng,
    set_global_rng_state,
)
from splatdistill.train.variants import GradientAccumulator, dropout_probability, dropout_scale, perturb_candidates


@dataclass
class TrainResult:
    run_dir: Path
    scene: GaussianScene
    iterations: int
    wall_s: float
    resumed_from: int | None


class TrainingDiverged(UserError):
    pass


def background_for(dataset: Dataset, cfg: TrainConfig) -> tuple[float, float, float]:
    """The constant training background (with ``random``: the dataset's, for anything but the loss)."""
    return fixed_background(resolve_background(cfg.background, dataset), dataset)


class Trainer:
    """Trains one 3DGS model. ``run()`` resumes from the newest checkpoint when ``resume`` is set."""

    def __init__(self, data, out_dir, cfg: TrainConfig, resume: bool = False, branch_from=None, progress: bool = True):
        self.cfg = cfg.validate()
        self.out = Path(out_dir)
        self.device = pick_device(cfg.device)
        self.dataset = data if isinstance(data, Dataset) else load_dataset(data, downscale=cfg.downscale)
        self.dataset = with_train_views(self.dataset, cfg.train_views)
        self.progress = progress
        self.views = self.dataset.split("train")
        if not self.views:
            raise UserError("the dataset has no training views", self.dataset.root)
        self.extent = float(self.dataset.extent)
        self.bg_mode = resolve_background(cfg.background, self.dataset)  # "auto" -> random for RGBA data
        self.background = fixed_background(self.bg_mode, self.dataset)
        self.start = 0
        self.resumed_from = None
        self.torch_gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        seed_global_rng(cfg.seed)
        self.order: list[int] = []
        self.noise_acc = GradientAccumulator()
        self.strategy = make_strategy(cfg, self.device)
        self.antialiased = False  # trained with the classic rasterizer (a resumed run keeps its mode)
        state = None
        if resume and (found := ck.latest_checkpoint(self.out)) is not None:
            state = found[1]
            self.resumed_from = int(state["iteration"])
        elif branch_from is not None:
            state = ck.load_checkpoint(ck.resolve_checkpoint(Path(branch_from)))
            self.resumed_from = int(state["iteration"])
        if state is None:
            scene = initial_scene(self.dataset, cfg)
            self.params = make_params(scene, self.device)
            self.optimizers = make_optimizers(self.params, cfg, self.extent)
            self.strategy_state = self._init_strategy_state()
        else:
            self._load_state(state)
        self.strategy.check_sanity(self.params, self.optimizers)

    # --- state -------------------------------------------------------------------------------------
    def _init_strategy_state(self) -> dict:
        if self.cfg.strategy == "mcmc":
            return self.strategy.initialize_state()
        return self.strategy.initialize_state(scene_scale=self.extent)

    def _payload(self, iteration: int) -> dict:
        return {
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "strategy_state": {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in self.strategy_state.items()},
            "rng": {
                "torch": self.torch_gen.get_state(),
                "numpy": self.rng.bit_generator.state,
                "order": list(self.order),
                "global": global_rng_state(self.device),
            },
            "config": self.cfg.to_dict(),
            "extent": self.extent,
            "antialiased": self.antialiased,
        }

    def _load_state(self, state: dict) -> None:
        self.start = int(state["iteration"])
        self.antialiased = bool(state.get("antialiased", False))
        self.params = make_params(GaussianScene(**state["params"], antialiased=self.antialiased), self.device)
        self.optimizers = make_optimizers(self.params, self.cfg, self.extent)
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.strategy_state = {
            k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in state["strategy_state"].items()
        }
        self.torch_gen.set_state(state["rng"]["torch"])
        self.rng.bit_generator.state = state["rng"]["numpy"]
        self.order = list(state["rng"]["order"])
        set_global_rng_state(state["rng"].get("global"), self.device)

    def scene(self) -> GaussianScene:
        return GaussianScene(**dict(self.params), antialiased=self.antialiased)

    # --- one iteration -------------------------------------------------------------------------
    def _next_view(self) -> int:
        if not self.order:
            self.order = [int(i) for i in self.rng.permutation(len(self.views))]
        return self.order.pop()

    def _opacity_scale(self, step: int):
        cfg, v = self.cfg, self.cfg.variant_cfg
        if cfg.variant != "dropout":
            return None
        start, end = cfg.at(v.dropout_start), cfg.at(v.dropout_end)
        if not start <= step < end:
            return None
        p = dropout_probability(step, start, end, v.dropout_p_start, v.dropout_p_end)
        return dropout_scale(len(self.params["means"]), p, self.torch_gen, self.device)

    def _noise_step(self, step: int, info: dict) -> None:
        cfg, v = self.cfg, self.cfg.variant_cfg
        start, end = cfg.at(v.noise_start), cfg.at(v.noise_end)
        if cfg.variant != "noise" or not start <= step <= end:
            return
        self.noise_acc.update(info)
        every = cfg.at(v.noise_every, 1)
        if (step - start) % every == 0 and step > start:
            with torch.no_grad():
                big = torch.exp(self.params["scales"]).max(dim=-1).values > cfg.grow_scale3d * self.extent
                cand = (self.noise_acc.mean() >= cfg.grow_grad2d) & ~big
            perturb_candidates(self.params, self.optimizers, cand, v.noise_scale, self.torch_gen)
            self.noise_acc.reset(len(self.params["means"]), self.device)

    def _images_of(self, view):
        if self.bg_mode == "random":
            return (
                self.dataset.image_on(view, (0.0, 0.0, 0.0)).to(self.device),
                self.dataset.image_on(view, (1.0, 1.0, 1.0)).to(self.device),
            )
        return self.dataset.image_on(view, self.background).to(self.device)  # composited on the render background

    def pick(self, image_cache: dict):
        """The next training view (a seeded random order, reshuffled every epoch) and its image(s)."""
        idx = self._next_view()
        if idx not in image_cache:
            image_cache[idx] = self._images_of(self.views[idx])
        return self.views[idx], image_cache[idx]

    def step(self, step: int, batch) -> tuple[torch.Tensor, dict]:
        """The loss of one iteration on ``batch`` (``pick``'s view and image) and the render's info;
        ``fit`` does the rest (densification, the Adam step, the position-lr schedule)."""
        cfg = self.cfg
        view, images = batch
        background = self.background
        if self.bg_mode == "random":
            black, white = images
            bg = torch.rand(3, generator=self.torch_gen, device=self.device)
            gt = (black + (white - black) * bg).unsqueeze(0)  # white - black = 1 - alpha
            background = bg
        else:
            gt = images.unsqueeze(0)
        cams = stack_cameras([view.camera], self.device)
        sh_now = min(cfg.sh_degree, step // max(1, cfg.at(cfg.sh_degree_every, 1)))
        out = render(
            self.scene(), cams, sh_degree=sh_now, background=background, opacity_scale=self._opacity_scale(step)
        )
        loss = photometric_loss(out.rgb, gt, cfg.ssim_lambda)
        if cfg.strategy == "mcmc":  # gsplat simple_trainer's MCMC regularisers
            loss = (
                loss
                + 0.01 * torch.sigmoid(self.params["opacities"]).mean()
                + 0.01 * torch.exp(self.params["scales"]).mean()
            )
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss.item()} at iteration {step}; the last good "
                "checkpoint is kept (lower the learning rates or check the data)",
                self.out,
            )
        with torch.no_grad():
            self._last_mse = float(((out.rgb.detach() - gt) ** 2).mean())
        return loss, out.info

    # --- the loop ------------------------------------------------------------------------------
    def run(self, stop_at: int | None = None) -> TrainResult:
        """Train to ``cfg.iterations``; with ``stop_at``, stop after that iteration with a checkpoint
        (no model file), so that a later ``resume`` continues exactly there."""
        cfg = self.cfg
        end = cfg.iterations if stop_at is None else min(int(stop_at), cfg.iterations)
        self.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            self.out / "config.json",
            {
                "data": str(self.dataset.root),
                **cfg.to_dict(),
                # world = model point * scale + center
                "normalization": self.dataset.normalization.to_dict(),
            },
        )
        log_path = self.out / "train_log.jsonl"
        ck.truncate_log(log_path, self.start)
        t0 = time.perf_counter()
        cache: dict = {}
        hooks = [_NoiseHook(self), DensifyHook(self.strategy, self.strategy_state)]

        with open(log_path, "a") as log:

            def on_step(it: int, loss: float, info: dict) -> dict:
                done = it + 1
                post = {}
                if done % cfg.log_every == 0 or done == cfg.iterations:
                    n = len(self.params["means"])
                    psnr = psnr_from_mse(self._last_mse)
                    rec = {
                        "iteration": done,
                        "loss": round(loss, 6),
                        "psnr": round(psnr, 3),
                        "num_gaussians": n,
                        "elapsed_s": round(time.perf_counter() - t0, 2),
                    }
                    log.write(dumps_json(rec, indent=None) + "\n")
                    log.flush()
                    post = dict(loss=f"{loss:.4f}", psnr=f"{psnr:.2f}", n=n)
                if done % cfg.checkpoint_every == 0 or done in (cfg.iterations, end):
                    ck.save_checkpoint(self.out, done, self._payload(done))
                if done in cfg.branch_points:
                    ck.save_branch_point(self.out, done, self._payload(done))
                return post

            fit(
                self.params,
                self.optimizers,
                end,
                lambda it: self.pick(cache),
                lambda it, batch: self.step(it, batch),
                hooks,
                schedules={"means": means_schedule(cfg, self.extent)},
                start=self.start,
                total=cfg.iterations,
                desc=f"train {cfg.variant}",
                progress=self.progress,
                on_step=on_step,
            )
        scene = self.scene().detach().to("cpu")
        if end < cfg.iterations:
            return TrainResult(self.out, scene, end, time.perf_counter() - t0, self.resumed_from)
        write_ply(scene, self.out / "point_cloud.ply")
        return TrainResult(self.out, scene, cfg.iterations, time.perf_counter() - t0, self.resumed_from)


class _NoiseHook(Hook):
    """The noise variant's perturbation, after the Adam step and before densification."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def step_post_backward(self, params, optimizers, step, info):
        self.trainer._noise_step(step, info)


def train(data, out_dir, cfg: TrainConfig, resume=False, branch_from=None, progress=True) -> TrainResult:
    return Trainer(data, out_dir, cfg, resume=resume, branch_from=branch_from, progress=progress).run()
