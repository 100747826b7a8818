"""Batch benchmark: N data-free compress jobs, one after another in one process (``batch
--sequential``) against Ray tasks on a local instance (``batch``, one CPU per task), wall time of
the whole command (process start, Ray start and the final table included) and the ratio.

The models are synthetic and fixed by seeds: ``GaussianScene.random_in_box`` with ``--gaussians``
Gaussians of SH degree 3 in the unit cube (seed = job index), written as Inria PLY. The two runs
must give byte-identical model files; the script checks it.

    python benchmarks/batch.py [--jobs 8] [--gaussians 2000] [--ray-cpus N] [--ray-first] [--json]
        [--flags "--iterations 30 --views 12 --resolution 64 --no-lpips"] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_FLAGS = "--iterations 30 --views 12 --resolution 64 --no-lpips"


def make_models(folder: Path, jobs: int, gaussians: int) -> None:
    from splatdistill.formats.ply import write_ply
    from splatdistill.scene.gaussians import GaussianScene

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(jobs):
        write_ply(
            GaussianScene.random_in_box(gaussians, [-1, -1, -1], [1, 1, 1], sh_degree=3, seed=i),
            folder / f"model_{i:02d}.ply",
        )


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {shlex.join(cmd)}\n{r.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--gaussians", type=int, default=2000)
    ap.add_argument("--flags", default=DEFAULT_FLAGS, help="compress flags of every job")
    ap.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    ap.add_argument("--work", type=Path, default=None, help="keep the models and outputs here")
    ap.add_argument("--ray-first", action="store_true", help="run the Ray batch before the sequential one")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="splatdistill_batch_bench_"))
    models = work / "models"
    shutil.rmtree(work / "seq", ignore_errors=True)
    shutil.rmtree(work / "ray", ignore_errors=True)
    make_models(models, args.jobs, args.gaussians)
    flags = shlex.split(args.flags)
    base = [sys.executable, "-m", "splatdistill", "batch", "compress", str(models)]
    ray_opts = [] if args.ray_cpus is None else ["--ray-cpus", str(args.ray_cpus)]
    seq_cmd = base + ["--out", str(work / "seq"), "--sequential", *flags]
    ray_cmd = base + ["--out", str(work / "ray"), *ray_opts, *flags]
    if args.ray_first:  # the machine's load drifts: run the two in either order
        ray_s, seq_s = run(ray_cmd), run(seq_cmd)
    else:
        seq_s, ray_s = run(seq_cmd), run(ray_cmd)
    identical = all(
        (work / "seq" / f"model_{i:02d}" / f).read_bytes() == (work / "ray" / f"model_{i:02d}" / f).read_bytes()
        for i in range(args.jobs)
        for f in ("model.sdz", "model.ply", "model.spz")
    )
    ray_table = json.loads((work / "ray" / "batch.json").read_text())
    result = {
        "benchmark": "batch data-free compress",
        "jobs": args.jobs,
        "gaussians_per_model": args.gaussians,
        "flags": args.flags,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sequential_s": round(seq_s, 1),
        "ray_s": round(ray_s, 1),
        "speedup": round(seq_s / ray_s, 2),
        "order": "ray, sequential" if args.ray_first else "sequential, ray",
        "identical_models": identical,
        "ray_job_seconds": [r["seconds"] for r in ray_table["jobs"]],
        "sequential_command": shlex.join(["splatdistill", *seq_cmd[3:]]),
        "ray_command": shlex.join(["splatdistill", *ray_cmd[3:]]),
    }
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{args.jobs} jobs: sequential {result['sequential_s']} s, Ray {result['ray_s']} s "
            f"({result['speedup']}x); identical models: {identical}"
        )
    if not identical:
        sys.exit("the two runs wrote different model files")


if __name__ == "__main__":
    main()
