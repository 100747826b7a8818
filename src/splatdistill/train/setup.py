"""Building a trainable scene: initialisation, optimizers, the position learning-rate schedule, and the
densification strategies as hooks of the optimisation loop (``ops.optim.fit``)."""

from __future__ import annotations

import numpy as np
import torch

from splatdistill.data.dataset import Dataset
from splatdistill.errors import UserError
from splatdistill.ops.optim import ExponentialDecay, Hook, adam, make_params  # noqa: F401 (re-exported)
from splatdistill.scene.gaussians import GaussianScene
from splatdistill.train.config import TrainConfig


def initial_scene(dataset: Dataset, cfg: TrainConfig) -> GaussianScene:
    """From the SfM points when the dataset has them, else random points in a box around the centre
    (the Inria code's NeRF-synthetic init: 100k random points; here ``cfg.init_points``)."""
    if dataset.points is not None and len(dataset.points) > 0:
        colors = dataset.point_colors if dataset.point_colors is not None else None
        return GaussianScene.from_points(dataset.points, colors, sh_degree=cfg.sh_degree, init_opacity=cfg.init_opacity)
    half = cfg.init_box * dataset.extent
    return GaussianScene.random_in_box(
        cfg.init_points, [-half] * 3, [half] * 3, sh_degree=cfg.sh_degree, seed=cfg.seed, init_opacity=cfg.init_opacity
    )


def make_optimizers(params, cfg: TrainConfig, extent: float) -> dict[str, torch.optim.Optimizer]:
    """The training optimisers (``ops.optim.adam``) with ``cfg``'s learning rates, positions scaled by
    the scene extent."""
    lrs = {
        "means": cfg.lr_means * extent,
        "scales": cfg.lr_scales,
        "quats": cfg.lr_quats,
        "opacities": cfg.lr_opacities,
        "sh0": cfg.lr_sh0,
        "shN": cfg.lr_shN,
    }
    return adam(params, lrs)


def means_schedule(cfg: TrainConfig, extent: float) -> ExponentialDecay:
    """The position learning rate: ``lr_means * extent`` decaying exponentially to
    ``lr_means_final * extent`` over the run (its factor in log space, as the teacher always had)."""
    return ExponentialDecay.over(
        cfg.lr_means * extent, cfg.lr_means_final / cfg.lr_means, cfg.iterations, log_space=True
    )


class DensifyHook(Hook):
    """A gsplat densification strategy (``DefaultStrategy`` / ``MCMCStrategy``) as a hook of ``fit``,
    with its state: the strategy's two calls at the points gsplat's trainer makes them (MCMC gets the
    current position learning rate for its noise)."""

    def __init__(self, strategy, state: dict):
        self.strategy, self.state = strategy, state
        from gsplat.strategy import MCMCStrategy

        self.mcmc = isinstance(strategy, MCMCStrategy)

    def step_pre_backward(self, params, optimizers, step, info):
        self.strategy.step_pre_backward(params, optimizers, self.state, step, info)

    def step_post_backward(self, params, optimizers, step, info):
        if self.mcmc:
            self.strategy.step_post_backward(
                params, optimizers, self.state, step, info, lr=optimizers["means"].param_groups[0]["lr"]
            )
        else:
            self.strategy.step_post_backward(params, optimizers, self.state, step, info, packed=False)


def make_strategy(cfg: TrainConfig, device: torch.device):
    if cfg.strategy == "mcmc":
        if device.type != "cuda":
            raise UserError(
                "--strategy mcmc needs a CUDA GPU (gsplat's MCMC relocation and noise ops are CUDA "
                "kernels); use --strategy default on the CPU"
            )
        from gsplat.strategy import MCMCStrategy

        return MCMCStrategy(
            cap_max=cfg.cap_max,
            refine_start_iter=cfg.at(cfg.refine_start, 1),
            refine_stop_iter=cfg.at(cfg.refine_stop * 25 / 15),
            refine_every=cfg.at(cfg.refine_every, 1),
        )
    from gsplat.strategy import DefaultStrategy

    return DefaultStrategy(
        prune_opa=cfg.prune_opa,
        grow_grad2d=cfg.grow_grad2d,
        grow_scale3d=cfg.grow_scale3d,
        prune_scale3d=cfg.prune_scale3d,
        refine_start_iter=cfg.at(cfg.refine_start, 1),
        refine_stop_iter=cfg.at(cfg.refine_stop),
        reset_every=cfg.at(cfg.reset_every, 1),
        refine_every=cfg.at(cfg.refine_every, cfg.refine_every_min),
        verbose=False,
    )


def view_order(n_views: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(n_views)


# gsplat's densification (split noise, MCMC relocation and noise) draws from torch's global generator,
# which a new process seeds at random: a run seeds it from its own seed and its checkpoints carry it,
# so the same command gives the same model in any process, straight through or resumed.
def seed_global_rng(seed: int) -> None:
    torch.manual_seed(seed)


def global_rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_global_rng_state(state: dict | None, device: torch.device) -> None:
    if not state:
        return
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
