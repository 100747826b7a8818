"""The settings of ``distill``: ``StudentConfig`` (the distilled student), ``TeacherConfig`` (the teachers'
training, a ``TrainConfig``) and ``DistillConfig``, which holds both."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import tyro

from splatdistill.errors import UserError
from splatdistill.train.config import TrainConfig

# The same choices as ``ops.importance.Score`` and ``ops.policies.PolicyName`` (tests/test_cli_help.py
# holds them equal), written here so that reading the command line's settings does not load torch.
Score = Literal["significance", "blend", "opacity"]
PolicyName = Literal["significance", "mask", "confidence"]

TEACHER_WEIGHT = 0.4  # the teacher term's weight when one is asked for (--lambda-kd, the ablation rows)


@dataclass
class StudentConfig:
    """Every setting of the distilled student."""

    iterations: int = 3000
    """student training iterations."""
    keep: float = 0.12
    """the student's Gaussians, as a fraction of the vanilla teacher's."""
    target_gaussians: int | None = None
    """the student's number of Gaussians (overrides --keep)."""
    init: Annotated[Literal["teacher", "sfm"], tyro.conf.arg(name="student-init")] = "teacher"
    """start the student from the vanilla teacher pruned by importance, or from the SfM points."""
    score: Score = "significance"
    """how Gaussians are ranked for pruning."""
    # mask: Compact-3DGS's learned mask; confidence: Confident Splatting's Beta confidence (its mean is reported)
    prune_policy: PolicyName = "significance"
    """prune by --score alone, or by a learned gate baked into the opacities: mask or confidence."""
    prune_steps: int = 3
    """prune in this many steps."""
    prune_window: float = 0.4
    """pruning happens in this first fraction of the run."""
    lambda_gt: float = 1.0
    """weight of the ground-truth term."""
    # 0 by default: no teacher-guided student beat it in any setting measured (docs/benchmarks.md);
    # TEACHER_WEIGHT is the Distilled-3DGS release's weight (METHODS.md §1)
    lambda_kd: float = 0.0
    """weight of the teacher term (0: ground truth only, which measured best; 0.4: the paper's weight)."""
    pseudo_fraction: float = 0.5
    """share of iterations spent on pseudo views (teacher term only)."""
    kd_views: Literal["all", "pseudo"] = "all"
    """pseudo: the teacher term only on pseudo views (the ground truth alone on the training views)."""
    # agreement: std is the teachers' per-pixel standard deviation; alpha: a is the teachers' mean alpha
    # (low where they are semi-transparent: floaters, fuzzy edges)
    kd_weight: Literal["uniform", "agreement", "alpha"] = "uniform"
    """per-pixel weights of the teacher term: uniform, agreement exp(-std / --kd-spread-scale) or alpha |2a-1|."""
    kd_spread_scale: float = 0.05
    """the spread scale of --kd-weight agreement."""
    kd_anneal: float = 0.0
    """> 0: --lambda-kd falls linearly to 0 at this fraction of the run."""
    kd_far: float = 1.0
    """use only this share of the pseudo views, the farthest from every training camera."""
    lambda_depth: float = 0.0
    """weight of a depth term on pseudo views: L1 of the student's expected depth against the teachers', over the scene extent, where they are opaque."""
    teacher_margin_db: float | None = None
    """leave out teachers more than this many dB below the best on the training views (default: keep all)."""
    # random: a random colour each iteration, the soft targets rendered with alpha and recomposited
    # on the same colour as the ground truth (train/background.py)
    background: Literal["auto", "dataset", "random", "black", "white"] = "auto"
    """teachers' and student's: auto (random for RGBA images, else the dataset's), dataset, random, black, white."""
    struct: Literal["joint", "marginal", "none"] = "none"
    """structural loss between student and teachers (joint: neutral or worse where measured)."""
    lambda_struct: float = 0.01
    """weight of the structural loss."""
    ssim_lambda: float = 0.2
    """weight of the D-SSIM term in the photometric losses."""
    lr_means: float = 1.6e-5
    """learning rate of the means at the start (fine-tuning a trained teacher: a tenth of 3DGS's)."""
    lr_means_final: float = 1.6e-6
    """learning rate of the means at the end."""
    seed: int = 0
    """random seed of the teachers and the student."""
    init_points: int = 20_000
    """random initial points for --student-init sfm when the dataset has no points."""
    log_every: int = 10
    """write a log line every this many iterations."""
    checkpoint_every: int = 500
    """checkpoint every this many iterations (the student resumes from its newest after a crash)."""

    def validate(self) -> "StudentConfig":
        """Reject settings a user can get wrong, with a one-line message (before any teacher trains)."""
        from splatdistill.ops.policies import POLICIES
        from splatdistill.validate import RULES, SIZE, Rule, check

        for name in (
            "iterations",
            "keep",
            "target_gaussians",
            "lambda_gt",
            "lambda_kd",
            "lambda_struct",
            "lambda_depth",
            "seed",
            "init_points",
            "checkpoint_every",
        ):
            check(name, getattr(self, name), RULES[name])
        check("prune_steps", self.prune_steps, SIZE)
        check("pseudo_fraction", self.pseudo_fraction, Rule(minimum=0, maximum=1))
        check("prune_window", self.prune_window, Rule(minimum=0, maximum=1))
        check("lr_means", self.lr_means, Rule(above=0))
        check("lr_means_final", self.lr_means_final, Rule(above=0))
        checks = [
            (self.lambda_gt > 0 or self.lambda_kd > 0, "--lambda-gt and --lambda-kd are both 0: nothing to fit"),
            (
                self.lambda_gt > 0 or self.kd_views == "all",
                "--kd-views pseudo with --lambda-gt 0 leaves the training views without a loss",
            ),
            (
                self.lambda_depth == 0 or self.lambda_kd > 0,
                "--lambda-depth needs the teacher term (--lambda-kd > 0): its pseudo views come with it",
            ),
            (self.kd_spread_scale > 0, f"--kd-spread-scale must be > 0, got {self.kd_spread_scale}"),
            (0.0 <= self.kd_anneal <= 1.0, f"--kd-anneal must be in [0, 1], got {self.kd_anneal}"),
            (0.0 < self.kd_far <= 1.0, f"--kd-far must be in (0, 1], got {self.kd_far}"),
            (
                self.prune_policy in POLICIES,
                f"unknown prune policy '{self.prune_policy}' (choose {', '.join(POLICIES)})",
            ),
        ]
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


Hidden = tyro.conf.Suppress


@dataclass
class TeacherConfig(TrainConfig):
    """The teachers' training: every ``TrainConfig`` setting, as ``--teacher.NAME``. The variant is
    each teacher's own; the seed and background are the student's (--seed, --background), the device,
    image size and training views distill's own; checkpoints come every tenth of the run."""

    iterations: Annotated[int, tyro.conf.arg(name="teacher-iterations", prefix_name=False)] = 3000
    """training iterations of each teacher (ignored with --teachers)."""
    init_points: Annotated[int, tyro.conf.arg(name="teacher-init-points", prefix_name=False)] = 20_000
    """random initial points of the teachers when the dataset has no SfM points."""
    # set by distill, not by the user: hidden from the command line
    variant: Hidden[Literal["vanilla", "noise", "dropout"]] = "vanilla"
    seed: Hidden[int] = 0
    downscale: Hidden[int] = 1
    device: Hidden[Literal["auto", "cpu", "cuda"]] = "auto"
    train_views: Hidden[int | None] = None
    background: Hidden[Literal["auto", "dataset", "random", "black", "white"]] = "auto"
    checkpoint_every: Hidden[int] = 500
    branch_points: Hidden[tuple[int, ...]] = ()


@dataclass
class DistillConfig:
    """Every setting of ``splatdistill distill``: the teachers' training and the student. The teachers
    share the student's --seed and --background (``distill.pipeline.teacher_config``)."""

    train_views: int | None = None
    """use N evenly spaced views of the train split (sparse views; default: all)."""
    pseudo_views: int | None = None
    """pseudo views for the teacher term (default: as many as training views)."""
    downscale: int = 1
    """divide the dataset's image size by this factor."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where to train (auto: CUDA when available)."""
    ablation: bool = False
    """also train same-budget students: ground truth only, one / three teachers, + joint, pseudo views only."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """the teachers' training."""
    student: Annotated[StudentConfig, tyro.conf.arg(name="")] = field(default_factory=StudentConfig)
    """the student."""

    def teacher_train_config(self) -> TrainConfig:
        """The teachers' shared training configuration (variant vanilla, its branch point set), as
        ``distill.pipeline.teacher_config`` makes it from these settings."""
        from splatdistill.distill.pipeline import teacher_config

        return teacher_config(
            self.teacher.iterations,
            self.device,
            self.student.seed,
            self.teacher.init_points,
            self.student.background,
            base=self.teacher,
        )
