"""``StudentConfig``: every setting of the distilled student."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from splatdistill.errors import UserError
from splatdistill.ops.importance import Score
from splatdistill.ops.policies import POLICIES, PolicyName


TEACHER_WEIGHT = 0.4  # the teacher term's weight when one is asked for (--lambda-kd, the ablation rows)


@dataclass
class StudentConfig:
    iterations: int = 3000
    keep: float = 0.12  # fraction of the vanilla teacher's Gaussians
    target_gaussians: int | None = None  # overrides keep
    init: Literal["teacher", "sfm"] = "teacher"
    score: Score = "significance"
    prune_policy: PolicyName = "significance"  # or a learned gate: "mask" | "confidence"
    prune_steps: int = 3
    prune_window: float = 0.4  # pruning happens in the first 40% of the run
    lambda_gt: float = 1.0
    # 0: ground truth only, the default: no teacher-guided student beat it in any setting measured
    # (docs/benchmarks.md); TEACHER_WEIGHT is the Distilled-3DGS release's weight (METHODS.md §1)
    lambda_kd: float = 0.0
    pseudo_fraction: float = 0.5  # share of iterations spent on pseudo views (kd term only)
    kd_views: Literal["all", "pseudo"] = "all"  # "pseudo": the teacher term only where there is no GT
    # per-pixel weights of the teacher term: "agreement" exp(-spread / kd_spread_scale), the spread
    # being the teachers' per-pixel standard deviation; "alpha" |2 a - 1| of the teachers' mean alpha
    # (low where they are semi-transparent: floaters, fuzzy edges); "uniform": every pixel the same
    kd_weight: Literal["uniform", "agreement", "alpha"] = "uniform"
    kd_spread_scale: float = 0.05
    kd_anneal: float = 0.0  # > 0: lambda_kd falls linearly to 0 at this fraction of the run
    kd_far: float = 1.0  # the share of pseudo views used, the farthest from every training camera
    # teachers whose PSNR on the training views is more than this many dB below the best teacher's
    # are left out of the soft targets (None: keep every teacher)
    teacher_margin_db: float | None = None
    # "auto": random for RGBA data, else the dataset's (train/background.py); the soft targets are
    # then rendered with alpha and recomposited on the same colour as the ground truth each step
    background: Literal["auto", "dataset", "random", "black", "white"] = "auto"
    struct: Literal["joint", "marginal", "none"] = "none"  # "joint": neutral or worse where measured
    lambda_struct: float = 0.01
    ssim_lambda: float = 0.2
    lr_means: float = 1.6e-5  # fine-tuning from a trained teacher: a tenth of the 3DGS start value
    lr_means_final: float = 1.6e-6
    seed: int = 0
    init_points: int = 20_000  # random init for --student-init sfm when the dataset has no points
    log_every: int = 10
    checkpoint_every: int = 500  # the student resumes from its newest checkpoint after a crash

    def validate(self) -> "StudentConfig":
        """Reject settings a user can get wrong, with a one-line message (before any teacher trains)."""
        from splatdistill.validate import RULES, SIZE, Rule, check

        for name in ("iterations", "keep", "target_gaussians", "lambda_gt", "lambda_kd", "lambda_struct", "seed",
                     "init_points", "checkpoint_every"):
            check(name, getattr(self, name), RULES[name])
        check("prune_steps", self.prune_steps, SIZE)
        check("pseudo_fraction", self.pseudo_fraction, Rule(minimum=0, maximum=1))
        check("prune_window", self.prune_window, Rule(minimum=0, maximum=1))
        check("lr_means", self.lr_means, Rule(above=0))
        check("lr_means_final", self.lr_means_final, Rule(above=0))
        checks = [(self.lambda_gt > 0 or self.lambda_kd > 0, "--lambda-gt and --lambda-kd are both 0: nothing to fit"),
                  (self.lambda_gt > 0 or self.kd_views == "all",
                   "--kd-views pseudo with --lambda-gt 0 leaves the training views without a loss"),
                  (self.kd_spread_scale > 0, f"--kd-spread-scale must be > 0, got {self.kd_spread_scale}"),
                  (0.0 <= self.kd_anneal <= 1.0, f"--kd-anneal must be in [0, 1], got {self.kd_anneal}"),
                  (0.0 < self.kd_far <= 1.0, f"--kd-far must be in (0, 1], got {self.kd_far}"),
                  (self.prune_policy in POLICIES,
                   f"unknown prune policy '{self.prune_policy}' (choose {', '.join(POLICIES)})")]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        return self

    def kd_at(self, step: int) -> float:
        """The teacher weight at ``step`` (annealed to 0 with ``kd_anneal``)."""
        if self.kd_anneal <= 0:
            return self.lambda_kd
        return self.lambda_kd * max(0.0, 1.0 - step / (self.kd_anneal * self.iterations))

    def target_count(self, n_teacher: int) -> int:
        if self.target_gaussians is not None:
            return max(1, int(self.target_gaussians))
        return max(1, int(round(self.keep * n_teacher)))
