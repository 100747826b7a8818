"""``splatdistill make-scene``: the built-in procedural scene as a dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from splatdistill.commands.common import Pos
from splatdistill.validate import check_config


@dataclass
class MakeSceneCommand:
    """Write the built-in procedural scene (ray-traced, not splatted) as a Blender-format dataset."""

    out: Pos[Path]
    """the dataset folder to write."""
    resolution: int = 128
    """image side in pixels."""
    train_views: int = 100
    """views of the train split."""
    test_views: int = 20
    """views of the test split."""
    seed: int = 0
    """random seed of the camera placement."""

    def run(self) -> None:
        from splatdistill.data.demo_scene import make_demo_scene
        from splatdistill.fileio import check_output_dir

        check_config(self)
        check_output_dir(self.out)
        path = make_demo_scene(
            self.out,
            resolution=self.resolution,
            train_views=self.train_views,
            test_views=self.test_views,
            seed=self.seed,
        )
        print(f"wrote {path}")
