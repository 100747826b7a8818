"""The main job on the built-in scene: ``splatdistill demo`` / ``make demo``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .data.demo_scene import make_demo_scene


def run_demo(out: Path, iterations: int = 2000, resolution: int = 128) -> dict:
    from .cli import _summary_line
    from .evaluate.evaluator import evaluate_scene
    from .fileio import write_json_atomic
    from .info import describe_dataset
    from .train.config import TrainConfig
    from .train.trainer import Trainer

    out = Path(out)
    t0 = time.perf_counter()
    scene_dir = make_demo_scene(out / "scene", resolution=resolution)
    info = describe_dataset(scene_dir)
    print(f"demo scene: {info['num_train']} train / {info['num_test']} test views at "
          f"{info['width']}x{info['height']} in {scene_dir}")
    cfg = TrainConfig(iterations=iterations, checkpoint_every=max(100, iterations // 4))
    trainer = Trainer(scene_dir, out / "teacher_vanilla", cfg, resume=True)
    result = trainer.run()
    m = evaluate_scene(result.scene, trainer.dataset, "test", model_path=out / "teacher_vanilla" / "point_cloud.ply")
    write_json_atomic(out / "teacher_vanilla" / "metrics.json", m)
    print("vanilla teacher: " + _summary_line(m))
    summary = {"scene": info, "teacher": {k: v for k, v in m.items() if k != "per_view"},
               "wall_s": time.perf_counter() - t0}
    write_json_atomic(out / "summary.json", summary)
    print(f"done in {summary['wall_s']:.0f} s; results in {out}")
    return summary
