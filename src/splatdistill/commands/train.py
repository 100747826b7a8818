"""``splatdistill train``: one 3DGS training run into a run folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import tyro

from splatdistill.commands.common import Pos, abs_path, summary_line
from splatdistill.train.config import TrainConfig
from splatdistill.validate import check_config

OWNED = ("ckpt", "config.json", "train_log.jsonl", "point_cloud.ply", "metrics.json")
"""The files of a training run in its folder (removed by --overwrite)."""


@dataclass
class TrainCommand:
    """Train a 3DGS teacher (vanilla, noise-augmented or dropout-regularised). Schedules scale with
    --iterations; checkpoints are written every --checkpoint-every iterations; --resume continues.
    OUT holding an earlier run is refused unless --resume or --overwrite (which removes its checkpoints).
    --background auto (default): a random colour each iteration for images with alpha, the dataset's
    otherwise; evaluation uses the dataset's. --train-views N: N evenly spaced training views."""

    data: Pos[Path]
    """the dataset folder (Blender, COLMAP or nerfstudio)."""
    out: Path
    """the run folder (point_cloud.ply, checkpoints, train_log.jsonl, metrics.json)."""
    resume: bool = False
    """continue the run in OUT from its newest checkpoint."""
    branch_from: Optional[Path] = None
    """start from a checkpoint of another run (a teacher variant branched from a shared run)."""
    eval: bool = True
    """evaluate the trained model on the test split (OUT/metrics.json)."""
    overwrite: bool = False
    """remove an earlier run's files from OUT first."""
    cfg: Annotated[TrainConfig, tyro.conf.arg(name="")] = field(default_factory=TrainConfig)
    """the training settings."""

    def run(self) -> None:
        from splatdistill.commands.runs import run_folder

        check_config(self)
        cfg = self.cfg.validate()
        config = {"data": abs_path(self.data), "branch_from": abs_path(self.branch_from), **cfg.to_dict()}
        config.pop("device")
        with run_folder(
            self.out, "train", config, resume=self.resume, overwrite=self.overwrite, continue_same=False, owned=OWNED
        ):
            self.train(cfg)

    def train(self, cfg: TrainConfig) -> None:
        """Train (the run folder is settled), print the result and evaluate it."""
        from splatdistill.train.trainer import Trainer

        out = self.out
        trainer = Trainer(self.data, out, cfg, resume=self.resume, branch_from=self.branch_from)
        result = trainer.run()
        print(
            f"trained {result.iterations} iterations in {result.wall_s:.1f} s: {len(result.scene)} Gaussians "
            f"-> {out / 'point_cloud.ply'}"
        )
        if self.eval and trainer.dataset.splits.get("test"):
            from splatdistill.fileio import write_json_atomic
            from splatdistill.ops.evaluate import evaluate_scene

            m = evaluate_scene(
                result.scene.to(trainer.device), trainer.dataset, "test", model_path=out / "point_cloud.ply"
            )
            write_json_atomic(out / "metrics.json", m)
            print(summary_line(m))
