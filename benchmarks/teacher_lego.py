"""Teacher benchmark on NeRF-synthetic lego: train, evaluate on the 200 test views, print JSON.

CPU scale: downscale 4 (100x100). With a GPU: downscale 1 of the 400x400 copy, 30k iterations.
``--variants`` also trains the noise and dropout teachers, branched from the vanilla run's checkpoint
at the start of their windows, and reports the compute that branching saves against three runs.

    python benchmarks/teacher_lego.py [--json] [--iterations N] [--downscale F] [--variants]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from splatdistill.data.dataset import load_dataset
from splatdistill.ops.evaluate import evaluate_scene
from splatdistill.train.config import TrainConfig
from splatdistill.train.trainer import Trainer

LEGO = Path(__file__).resolve().parents[2] / "shared" / "data" / "nerf_synthetic" / "lego"


def evaluate(tr: Trainer, scene, ply: Path) -> dict:
    m = evaluate_scene(scene.to(tr.device), tr.dataset, "test", progress=False, model_path=ply)
    return {k: m[k] for k in ("psnr", "ssim", "lpips_vgg", "lpips_alex", "num_gaussians", "bytes", "render_ms")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--data", type=Path, default=LEGO)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_lego"))
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--downscale", type=int, default=None)
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    if not args.data.exists():
        print(f"lego not found at {args.data}", file=sys.stderr)
        return 2
    gpu = torch.cuda.is_available()
    iters = args.iterations or (30_000 if gpu else 3_000)
    ds_factor = args.downscale or (1 if gpu else 4)
    dataset = load_dataset(args.data, downscale=ds_factor)
    base = TrainConfig(iterations=iters, downscale=ds_factor, checkpoint_every=max(100, iters // 20))
    branch_it = base.branch_iteration()
    base.branch_points = (branch_it,)
    results = {
        "device": torch.cuda.get_device_name(0) if gpu else "cpu",
        "iterations": iters,
        "downscale": ds_factor,
        "resolution": dataset.split("train")[0].camera.width,
        "teachers": [],
    }
    t0 = time.perf_counter()
    tr = Trainer(dataset, args.out / "vanilla", base, resume=args.resume, progress=not args.json)
    res = tr.run()
    wall_vanilla = time.perf_counter() - t0
    results["teachers"].append(
        {
            "variant": "vanilla",
            "wall_s": round(wall_vanilla, 1),
            **evaluate(tr, res.scene, args.out / "vanilla" / "point_cloud.ply"),
        }
    )
    if args.variants:
        from splatdistill.train.checkpoint import branch_point

        branch_walls = []
        for variant in ("noise", "dropout"):
            cfg = TrainConfig(**{**base.__dict__, "variant": variant})
            t2 = time.perf_counter()
            trv = Trainer(
                dataset,
                args.out / variant,
                cfg,
                progress=not args.json,
                branch_from=branch_point(args.out / "vanilla", branch_it),
            )
            rv = trv.run()
            branch_walls.append(time.perf_counter() - t2)
            results["teachers"].append(
                {
                    "variant": variant,
                    "wall_s": round(branch_walls[-1], 1),
                    **evaluate(trv, rv.scene, args.out / variant / "point_cloud.ply"),
                }
            )
        # three separate runs would each cost about one vanilla run
        separate = wall_vanilla * 3
        branched = wall_vanilla + sum(branch_walls)
        results["branching"] = {
            "branch_iteration": branch_it,
            "three_separate_runs_s_estimate": round(separate, 1),
            "branched_s": round(branched, 1),
            "saved_fraction": round(1 - branched / separate, 3),
        }
    results["total_wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(results, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
