"""Building a trainable scene: initialisation, optimizers, learning-rate schedules, strategies."""

from __future__ import annotations

import math

import numpy as np
import torch

from splatdistill.data.dataset import Dataset
from splatdistill.errors import UserError
from splatdistill.scene.gaussians import GaussianScene
from splatdistill.ops.optim import fused_adam_ok
from splatdistill.train.config import TrainConfig


def initial_scene(dataset: Dataset, cfg: TrainConfig) -> GaussianScene:
    """From the SfM points when the dataset has them, else random points in a box around the centre
    (the Inria code's NeRF-synthetic init: 100k random points; here ``cfg.init_points``)."""
    if dataset.points is not None and len(dataset.points) > 0:
        colors = dataset.point_colors if dataset.point_colors is not None else None
        return GaussianScene.from_points(dataset.points, colors, sh_degree=cfg.sh_degree,
                                         init_opacity=cfg.init_opacity)
    half = cfg.init_box * dataset.extent
    return GaussianScene.random_in_box(cfg.init_points, [-half] * 3, [half] * 3, sh_degree=cfg.sh_degree,
                                       seed=cfg.seed, init_opacity=cfg.init_opacity)


def make_params(scene: GaussianScene, device) -> torch.nn.ParameterDict:
    return torch.nn.ParameterDict(
        {k: torch.nn.Parameter(v.detach().clone().to(device).contiguous()) for k, v in scene.items()}
    )


def make_optimizers(params, cfg: TrainConfig, extent: float) -> dict[str, torch.optim.Optimizer]:
    lrs = {
        "means": cfg.lr_means * extent, "scales": cfg.lr_scales, "quats": cfg.lr_quats,
        "opacities": cfg.lr_opacities, "sh0": cfg.lr_sh0, "shN": cfg.lr_shN,
    }
    # eps 1e-15 as in the Inria code and gsplat
    fused = {"fused": True} if fused_adam_ok() else {}
    return {k: torch.optim.Adam([{"params": params[k], "lr": lrs[k], "name": k}], eps=1e-15, **fused)
            for k in lrs}


def means_lr_gamma(cfg: TrainConfig) -> float:
    """Per-iteration factor of the exponential position-lr decay lr_means -> lr_means_final."""
    return math.exp(math.log(cfg.lr_means_final / cfg.lr_means) / max(1, cfg.iterations))


def make_strategy(cfg: TrainConfig, device: torch.device):
    if cfg.strategy == "mcmc":
        if device.type != "cuda":
            raise UserError(
                "--strategy mcmc needs a CUDA GPU (gsplat's MCMC relocation and noise ops are CUDA "
                "kernels); use --strategy default on the CPU"
            )
        from gsplat.strategy import MCMCStrategy

        return MCMCStrategy(
            cap_max=cfg.cap_max, refine_start_iter=cfg.at(cfg.refine_start, 1),
            refine_stop_iter=cfg.at(cfg.refine_stop * 25 / 15), refine_every=cfg.at(cfg.refine_every, 1),
        )
    from gsplat.strategy import DefaultStrategy

    return DefaultStrategy(
        prune_opa=cfg.prune_opa, grow_grad2d=cfg.grow_grad2d, grow_scale3d=cfg.grow_scale3d,
        prune_scale3d=cfg.prune_scale3d, refine_start_iter=cfg.at(cfg.refine_start, 1),
        refine_stop_iter=cfg.at(cfg.refine_stop), reset_every=cfg.at(cfg.reset_every, 1),
        refine_every=cfg.at(cfg.refine_every, cfg.refine_every_min), verbose=False,
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
