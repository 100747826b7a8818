"""Floaters from a constant training background: the built-in (RGBA) scene with few training views,
trained once on white (the dataset's convention) and once with the default (``auto``: random on RGBA
data); both evaluated on the white test views. Prints a table, or JSON with ``--json``.

    python benchmarks/background_floaters.py [--views 16] [--resolution 96] [--iterations 1500]
        [--init-points 20000] [--out DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from splatdistill.data.dataset import load_dataset
from splatdistill.data.demo_scene import make_demo_scene
from splatdistill.ops.evaluate import evaluate_scene
from splatdistill.train.config import TrainConfig
from splatdistill.train.trainer import Trainer


def run(views: int, resolution: int, iterations: int, init_points: int, out: Path, seed: int = 0) -> dict:
    scene_dir = make_demo_scene(out / "scene", resolution=resolution, train_views=views, test_views=20)
    ds = load_dataset(scene_dir)
    rows = {}
    for bg in ("white", "auto"):
        t0 = time.perf_counter()
        tr = Trainer(
            ds,
            out / bg,
            TrainConfig(
                iterations=iterations, init_points=init_points, background=bg, seed=seed, checkpoint_every=iterations
            ),
            progress=False,
        )
        res = tr.run()
        wall = time.perf_counter() - t0
        m = evaluate_scene(res.scene, ds, "test", lpips=False, progress=False)
        tr_m = evaluate_scene(res.scene, ds, "train", lpips=False, progress=False)
        rows[bg] = {
            "mode": tr.bg_mode,
            "test_psnr": m["psnr"],
            "train_psnr": tr_m["psnr"],
            "num_gaussians": m["num_gaussians"],
            "wall_s": round(wall, 1),
        }
    return {
        "views": views,
        "resolution": resolution,
        "iterations": iterations,
        "init_points": init_points,
        "seed": seed,
        "rows": rows,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--resolution", type=int, default=96)
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--init-points", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        r = run(a.views, a.resolution, a.iterations, a.init_points, a.out or Path(tmp), a.seed)
    if a.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"built-in scene, {r['views']} training views at {r['resolution']} px, {r['iterations']} iterations")
    print("| training background | test PSNR | train PSNR | Gaussians | wall s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for bg, row in r["rows"].items():
        print(
            f"| {bg} ({row['mode']}) | {row['test_psnr']:.2f} | {row['train_psnr']:.2f} | "
            f"{row['num_gaussians']:,} | {row['wall_s']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
