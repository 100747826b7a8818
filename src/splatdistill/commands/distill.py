"""``splatdistill distill``: multi-teacher distillation into a run folder."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import tyro

from splatdistill.commands.common import Pos, abs_path
from splatdistill.distill.config import DistillConfig
from splatdistill.validate import check_config

OWNED = (
    "teachers",
    "student",
    "gt_only",
    "one_teacher",
    "three_teachers",
    "three_teachers_joint",
    "three_teachers_pseudo",
    "cache",
    "summary.json",
    "report.md",
    "views.png",
    "psnr_vs_gaussians.png",
)
"""The files of a distillation in its folder (removed by --overwrite)."""


@dataclass
class DistillCommand:
    """Multi-teacher distillation: train (or reuse, or take with --teachers) the vanilla, noise and
    dropout teachers, average their renders into soft targets on training and pseudo views, and train
    a student with --keep of the vanilla teacher's Gaussians. Default: the student is the vanilla
    teacher pruned by importance and fine-tuned on the ground truth alone (--lambda-kd 0 --struct
    none), which beat every teacher-guided student measured, with 100 and with 12 training views
    (docs/benchmarks.md); --lambda-kd 0.4 (the paper's weight) --struct joint turns the teachers on.
    Writes OUT/student/point_cloud.ply, OUT/summary.json and OUT/report.md; --ablation adds same-budget
    students (ground truth only, one teacher, three teachers, three teachers with the joint structural
    loss, three teachers on pseudo views only). Run again, the same
    command finishes from whatever was done; other settings into the same OUT need --resume (reuse
    what still matches) or --overwrite. Nothing is written into the --teachers folders."""

    data: Pos[Path]
    """the dataset folder (Blender, COLMAP or nerfstudio)."""
    out: Path
    """the run folder (teachers/, student/, summary.json, report.md)."""
    teachers: Optional[list[Path]] = None
    """use these trained teachers (run folders or .ply files) instead of training them."""
    resume: bool = False
    """continue a run of other settings in OUT, reusing what still matches."""
    overwrite: bool = False
    """remove an earlier run's files from OUT first."""
    cfg: Annotated[DistillConfig, tyro.conf.arg(name="")] = field(default_factory=DistillConfig)
    """the teachers' and the student's settings."""

    def run_config(self) -> dict:
        """The settings ``run.json`` records (what a rerun compares)."""
        c = self.cfg
        return {
            "data": abs_path(self.data),
            "teachers": [abs_path(t) for t in self.teachers or []],
            "student": asdict(c.student),
            "teacher": asdict(c.teacher_train_config()),
            "background": c.student.background,
            "train_views": c.train_views,
            "pseudo_views": c.pseudo_views,
            "downscale": c.downscale,
            "ablation": c.ablation,
        }

    def run(self) -> None:
        from splatdistill.commands.runs import run_folder
        from splatdistill.distill.pipeline import run_distill
        from splatdistill.distill.report import markdown_table, table_rows

        check_config(self)
        c = self.cfg
        student = c.student.validate()
        out = self.out
        with run_folder(out, "distill", self.run_config(), owned=OWNED, resume=self.resume, overwrite=self.overwrite):
            summary = run_distill(
                self.data,
                out,
                teachers=self.teachers,
                cfg=student,
                teacher_iterations=c.teacher.iterations,
                downscale=c.downscale,
                device=c.device,
                n_pseudo=c.pseudo_views,
                ablation=c.ablation,
                teacher_init_points=c.teacher.init_points,
                teacher_background=student.background,
                train_views=c.train_views,
                teacher=c.teacher,
            )
        print(markdown_table(table_rows(summary)))
        stats = summary["student"].get("prune_policy") or {}
        if stats.get("mean_confidence") is not None:
            print(
                f"student mean confidence: {stats['mean_confidence']:.3f} (Confident Splatting's scene-quality "
                "indicator)"
            )
        print(f"report: {out / 'report.md'}")
        from splatdistill.view.server import view_command

        models = [row["path"] for row in summary["teachers"]] + [out / "student" / "point_cloud.ply"]
        print(f"see them side by side: {view_command(models, self.data)}")
