"""Training configuration. Schedules are fractions of the run, so a short run behaves like a scaled
30k-iteration run of the Inria code (Kerbl et al. 2023; METHODS.md §0)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Literal

from splatdistill.errors import UserError

# Inria defaults for 30,000 iterations, expressed as fractions of the run.
REF_ITERS = 30_000


@dataclass
class VariantConfig:
    """Distilled-3DGS teacher variants (METHODS.md §1), as the paper means them."""

    # noise: every `noise_every` of the run inside [noise_start, noise_end], perturb clone candidates
    noise_start: float = 16_000 / REF_ITERS
    noise_end: float = 24_000 / REF_ITERS
    noise_every: float = 1_000 / REF_ITERS
    noise_scale: float = 0.1
    # dropout: opacity dropout with 1/(1-p) rescaling on every iteration of [start, end];
    # default from the middle of densification (7,750 of 30k) to the end, p rising 0.2 -> 0.35
    dropout_start: float = 7_750 / REF_ITERS
    dropout_end: float = 1.0
    dropout_p_start: float = 0.2
    dropout_p_end: float = 0.35


@dataclass
class TrainConfig:
    iterations: int = 3_000
    variant: Literal["vanilla", "noise", "dropout"] = "vanilla"
    strategy: Literal["default", "mcmc"] = "default"
    seed: int = 0
    downscale: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    sh_degree: int = 3
    sh_degree_every: float = 1_000 / REF_ITERS  # +1 SH degree every this fraction
    # learning rates (Inria / gsplat defaults); means are scaled by the scene extent
    lr_means: float = 1.6e-4
    lr_means_final: float = 1.6e-6
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacities: float = 5e-2
    lr_sh0: float = 2.5e-3
    lr_shN: float = 2.5e-3 / 20
    ssim_lambda: float = 0.2
    # densification (gsplat DefaultStrategy), fractions of the run
    refine_start: float = 500 / REF_ITERS
    refine_stop: float = 15_000 / REF_ITERS
    refine_every: float = 100 / REF_ITERS
    refine_every_min: int = 25  # at least this many iterations between refinements (short runs)
    reset_every: float = 3_000 / REF_ITERS
    grow_grad2d: float = 2e-4
    grow_scale3d: float = 0.01
    prune_opa: float = 0.005
    prune_scale3d: float = 0.1
    cap_max: int = 1_000_000  # MCMC only
    # initialisation
    init_points: int = 20_000  # random init when the dataset has no SfM points
    init_box: float = 0.3  # random-init half-size, fraction of the scene extent
    init_opacity: float = 0.1
    train_views: int | None = None  # an evenly spaced subset of the train split (sparse views)
    # "random": a random background colour each iteration, for datasets with transparent images
    # (the ground truth is recomposited on it), which penalises floaters in empty space; "auto":
    # random when the dataset's images have alpha, the dataset's background otherwise (train/background.py)
    background: Literal["auto", "dataset", "random", "black", "white"] = "auto"
    # bookkeeping
    checkpoint_every: int = 500
    branch_points: tuple[int, ...] = ()  # iterations whose checkpoints are kept for --branch-from
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    variant_cfg: VariantConfig = field(default_factory=VariantConfig)

    def validate(self) -> "TrainConfig":
        """Reject settings a user can get wrong, with a one-line message (before any work)."""
        from splatdistill.validate import RULES, Rule, check

        check("iterations", self.iterations, RULES["iterations"])
        check("sh_degree", self.sh_degree, RULES["sh_degree"])
        check("init_points", self.init_points, RULES["init_points"])
        check("checkpoint_every", self.checkpoint_every, RULES["checkpoint_every"])
        check("downscale", self.downscale, RULES["downscale"])
        check("seed", self.seed, RULES["seed"])
        for name in ("lr_means", "lr_means_final", "lr_scales", "lr_quats", "lr_opacities", "lr_sh0", "lr_shN",
                     "ssim_lambda", "grow_grad2d", "grow_scale3d", "prune_opa", "prune_scale3d", "init_box"):
            check(name, getattr(self, name), Rule(minimum=0))
        if self.train_views is not None:
            check("train_views", self.train_views, RULES["train_views"])
        return self

    def at(self, fraction: float, minimum: int = 0) -> int:
        """The iteration at ``fraction`` of the run."""
        return max(minimum, int(round(fraction * self.iterations)))

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        d = dict(d)
        v = VariantConfig(**d.pop("variant_cfg", {}))
        known = {f.name for f in fields(TrainConfig)}
        d = {k: val for k, val in d.items() if k in known}
        d["branch_points"] = tuple(d.get("branch_points", ()))
        return TrainConfig(**d, variant_cfg=v)

    def branch_iteration(self) -> int:
        """Until here the three teacher variants are the same procedure, so they can share a run."""
        v = self.variant_cfg
        return self.at(min(v.noise_start, v.dropout_start))
