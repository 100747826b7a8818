"""Training configuration. Schedules are fractions of the run, so a short run behaves like a scaled
30k-iteration run of the Inria code (Kerbl et al. 2023; METHODS.md §0)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Literal

# Inria defaults for 30,000 iterations, expressed as fractions of the run.
REF_ITERS = 30_000


@dataclass
class VariantConfig:
    """Distilled-3DGS teacher variants (METHODS.md §1), as the paper means them. Times are fractions
    of the run."""

    noise_start: float = 16_000 / REF_ITERS
    """noise variant: first perturbation of the clone candidates (fraction of the run)."""
    noise_end: float = 24_000 / REF_ITERS
    """noise variant: last perturbation (fraction of the run)."""
    noise_every: float = 1_000 / REF_ITERS
    """noise variant: perturb every this fraction of the run inside [noise-start, noise-end]."""
    noise_scale: float = 0.1
    """noise variant: the perturbation is eps * this * max(mean |p|, 1) per parameter, eps ~ N(0, 1)."""
    dropout_start: float = 7_750 / REF_ITERS
    """dropout variant: opacity dropout, rescaled by 1/(1-p), from this fraction of the run (7,750 of 30k)."""
    dropout_end: float = 1.0
    """dropout variant: ... until this fraction of the run."""
    dropout_p_start: float = 0.2
    """dropout variant: the drop probability at the start of the window (rising linearly)."""
    dropout_p_end: float = 0.35
    """dropout variant: the drop probability at the end of the window."""


@dataclass
class TrainConfig:
    """Every setting of one 3DGS training run (``splatdistill train``; the teachers of ``distill``)."""

    iterations: int = 3_000
    """training iterations; every schedule below scales with them."""
    variant: Literal["vanilla", "noise", "dropout"] = "vanilla"
    """teacher variant: plain 3DGS, noise-augmented densification or opacity dropout."""
    strategy: Literal["default", "mcmc"] = "default"
    """densification strategy: gsplat's DefaultStrategy (clone/split/prune) or MCMC."""
    seed: int = 0
    """random seed (initialisation, view order, backgrounds)."""
    downscale: int = 1
    """divide the dataset's image size by this factor."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where to train (auto: CUDA when available)."""
    sh_degree: int = 3
    """highest spherical-harmonics degree of the colours (0..3)."""
    sh_degree_every: float = 1_000 / REF_ITERS
    """raise the active SH degree by one every this fraction of the run."""
    lr_means: float = 1.6e-4
    """learning rate of the means at the start (scaled by the scene extent; Inria / gsplat default)."""
    lr_means_final: float = 1.6e-6
    """learning rate of the means at the end (exponential decay)."""
    lr_scales: float = 5e-3
    """learning rate of the log-scales."""
    lr_quats: float = 1e-3
    """learning rate of the rotations."""
    lr_opacities: float = 5e-2
    """learning rate of the opacity logits."""
    lr_sh0: float = 2.5e-3
    """learning rate of the SH degree-0 colour."""
    lr_shN: float = 2.5e-3 / 20
    """learning rate of the higher SH coefficients."""
    ssim_lambda: float = 0.2
    """weight of the D-SSIM term in the photometric loss (the rest is L1)."""
    refine_start: float = 500 / REF_ITERS
    """densification: first refinement (fraction of the run)."""
    refine_stop: float = 15_000 / REF_ITERS
    """densification: last refinement (fraction of the run)."""
    refine_every: float = 100 / REF_ITERS
    """densification: refine every this fraction of the run."""
    refine_every_min: int = 25
    """densification: at least this many iterations between refinements (short runs)."""
    reset_every: float = 3_000 / REF_ITERS
    """densification: reset the opacities every this fraction of the run."""
    grow_grad2d: float = 2e-4
    """densification: clone or split Gaussians whose mean screen-space gradient exceeds this."""
    grow_scale3d: float = 0.01
    """densification: split rather than clone above this scale (fraction of the scene extent)."""
    prune_opa: float = 0.005
    """densification: prune Gaussians less opaque than this."""
    prune_scale3d: float = 0.1
    """densification: prune Gaussians larger than this (fraction of the scene extent)."""
    cap_max: int = 1_000_000
    """MCMC only: the most Gaussians."""
    init_points: int = 20_000
    """random initial points when the dataset has no SfM points."""
    init_box: float = 0.3
    """half-size of the random initialisation's box (fraction of the scene extent)."""
    init_opacity: float = 0.1
    """opacity of the initial Gaussians."""
    train_views: int | None = None
    """use N evenly spaced views of the train split (sparse views; default: all)."""
    # "random": a random colour each iteration, the ground truth recomposited on it, which penalises
    # floaters in empty space (train/background.py); evaluation always uses the dataset's background
    background: Literal["auto", "dataset", "random", "black", "white"] = "auto"
    """while training: auto (random for images with alpha, else the dataset's), dataset, random, black or white."""
    checkpoint_every: int = 500
    """write a checkpoint every this many iterations (--resume continues from the newest)."""
    branch_points: tuple[int, ...] = ()
    """iterations whose checkpoints are kept for --branch-from."""
    log_every: int = 10
    """write a line to train_log.jsonl every this many iterations."""
    eval_every: int = 0
    """evaluate on the test split every this many iterations (0: only at the end)."""
    variant_cfg: VariantConfig = field(default_factory=VariantConfig)
    """the schedules of the noise and dropout variants."""

    def validate(self) -> "TrainConfig":
        """Reject settings a user can get wrong, with a one-line message (before any work)."""
        from splatdistill.validate import RULES, Rule, check

        check("iterations", self.iterations, RULES["iterations"])
        check("sh_degree", self.sh_degree, RULES["sh_degree"])
        check("init_points", self.init_points, RULES["init_points"])
        check("checkpoint_every", self.checkpoint_every, RULES["checkpoint_every"])
        check("downscale", self.downscale, RULES["downscale"])
        check("seed", self.seed, RULES["seed"])
        for name in (
            "lr_means",
            "lr_means_final",
            "lr_scales",
            "lr_quats",
            "lr_opacities",
            "lr_sh0",
            "lr_shN",
            "ssim_lambda",
            "grow_grad2d",
            "grow_scale3d",
            "prune_opa",
            "prune_scale3d",
            "init_box",
        ):
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
