"""Training-free ``compress`` time and memory against the model size (100k .. 3M Gaussians, SH 3).

    PYTHONPATH=src python benchmarks/datafree_scaling.py [--sizes 100000,300000,1000000,3000000]
        [--out benchmarks/out/datafree_scaling] [--threads 2]

Models are synthesised from the garden SfM points (``benchmarks/synthetic.py``). Every size runs
``splatdistill compress MODEL --out DIR`` (defaults: training-free, balanced) in its own process, so
the peak resident memory (``wait4``'s ru_maxrss of that process) belongs to that run alone; the
per-stage seconds and peak memory come from its ``summary.json``. Prints and writes JSON
(``scaling.json``) with seconds per million Gaussians, to check linear growth.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,300000,1000000,3000000")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "datafree_scaling")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--extra", default="", help="extra compress flags, e.g. '--no-lpips'")
    a = ap.parse_args(argv)
    from splatdistill.formats.ply import write_ply
    from synthetic import synthetic_model

    a.out.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT / "src"),
        OMP_NUM_THREADS=str(a.threads),
        NUMBA_NUM_THREADS=str(a.threads),
        OPENBLAS_NUM_THREADS=str(a.threads),
        MKL_NUM_THREADS=str(a.threads),
    )
    rows = []
    for n in [int(x) for x in a.sizes.split(",")]:
        ply = a.out / f"synthetic_{n}.ply"
        if not ply.exists():
            write_ply(synthetic_model(n, 3, seed=0), ply)
        out = a.out / f"run_{n}"
        cmd = [sys.executable, "-m", "splatdistill", "compress", str(ply), "--out", str(out)] + a.extra.split()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        err = proc.stderr.read()
        if os.waitstatus_to_exitcode(status) != 0:
            print(err, file=sys.stderr)
            return 1
        s = json.loads((out / "summary.json").read_text())
        row = {
            "gaussians": n,
            "wall_s": wall,
            "process_peak_rss_bytes": ru.ru_maxrss * 1024,
            "cpu_s": ru.ru_utime + ru.ru_stime,
            "total_s": s["timings_s"]["total"],
            "total_without_evaluate_s": s["timings_s"]["total_without_evaluate"],
            "stages": s["stage_metrics"],
            "output_gaussians": s["num_gaussians"],
            "sdz_bytes": s["output_bytes"],
            "spz_bytes": s["spz_bytes"],
            "psnr": s["psnr"],
        }
        row["seconds_per_million"] = row["wall_s"] / (n / 1e6)
        rows.append(row)
        print(
            f"{n:>9,} Gaussians: {wall:7.1f} s wall ({row['total_without_evaluate_s']:.1f} s without evaluate), "
            f"{row['cpu_s']:.1f} CPU s, peak {row['process_peak_rss_bytes'] / 2**30:.2f} GiB, "
            f"{row['seconds_per_million']:.1f} s/M; "
            + ", ".join(
                f"{k} {v['seconds']:.1f}s/{v['peak_rss_bytes'] / 2**30:.2f}G" for k, v in s["stage_metrics"].items()
            ),
            flush=True,
        )
    result = {
        "command": " ".join(["python", "benchmarks/datafree_scaling.py"] + (argv or sys.argv[1:])),
        "threads": a.threads,
        "runs": rows,
    }
    (a.out / "scaling.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
