"""``splatdistill demo``: the main job on the built-in scene."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from splatdistill.validate import check_config


@dataclass
class DemoCommand:
    """Run the main job on the built-in scene: generate it, train the three teachers, distil a student
    with 12 % of the Gaussians, evaluate everything, print the table (report in OUT/distill) and
    compress the student (OUT/compressed: model.sdz, viewer-ready model.ply and model.spz)."""

    out: Path = Path("demo_out")
    """the demo's folder."""
    teacher_iterations: int = 1500
    """training iterations of each teacher."""
    student_iterations: int = 1000
    """training iterations of the student."""
    resolution: int = 128
    """image side of the built-in scene."""
    compress_iterations: int = 300
    """fine-tune iterations of the compression."""
    overwrite: bool = False
    """remove an earlier demo's files from OUT first."""

    def run(self) -> None:
        from splatdistill.commands.runs import run_folder
        from splatdistill.demo import run_demo

        check_config(self)
        out = self.out
        config = {
            "teacher_iterations": self.teacher_iterations,
            "student_iterations": self.student_iterations,
            "resolution": self.resolution,
            "compress_iterations": self.compress_iterations,
        }
        with run_folder(
            out,
            "demo",
            config,
            owned=("scene", "distill", "compressed", "summary.json"),
            overwrite=self.overwrite,
            can_resume=False,
        ):
            run_demo(
                out,
                teacher_iterations=self.teacher_iterations,
                student_iterations=self.student_iterations,
                resolution=self.resolution,
                compress_iterations=self.compress_iterations,
            )
        from splatdistill.view.server import view_command

        print(
            "see them side by side: "
            + view_command(
                [
                    out / "distill" / "teachers" / "vanilla" / "point_cloud.ply",
                    out / "distill" / "student" / "point_cloud.ply",
                    out / "compressed" / "model.sdz",
                ],
                out / "scene",
            )
        )
