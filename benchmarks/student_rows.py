"""Same-budget students from given teachers, one ablation row per call (so rows can run in parallel),
evaluated on the test split by PSNR and SSIM (no LPIPS: it dominates the time of small CPU runs).
Prints one JSON line.

    python benchmarks/student_rows.py DATA --teachers T1 [T2 ...] --row gt|kd|pseudo|far|anneal|alpha|agreement|margin|depth
        [--train-views N] [--downscale F] [--iterations N] [--keep 0.12] [--seed S] [--pseudo-views N]
        [--set KEY=VALUE ...]
        --out DIR

``--set`` overrides any ``StudentConfig`` field on top of the row (e.g. ``--set kd_anneal=0.75``), for
variants of a row without a new entry in ``ROWS``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from splatdistill.data.dataset import load_dataset, with_train_views
from splatdistill.distill.config import TEACHER_WEIGHT, StudentConfig
from splatdistill.distill.pipeline import train_student
from splatdistill.ops.evaluate import evaluate_scene

# Every row but ``gt`` turns the teacher term on at the release's weight: the student's default is
# ground truth only (lambda_kd 0), so a row that left lambda_kd unset would train ground truth only.
_KD = dict(lambda_kd=TEACHER_WEIGHT)
ROWS = {
    "gt": dict(lambda_kd=0.0, struct="none"),
    "kd": dict(_KD, struct="none"),
    "joint": dict(_KD, struct="joint"),
    "pseudo": dict(_KD, struct="none", kd_views="pseudo"),
    "far": dict(_KD, struct="none", kd_views="pseudo", kd_far=0.5),
    "anneal": dict(_KD, struct="none", kd_anneal=0.5),
    "alpha": dict(_KD, struct="none", kd_weight="alpha"),
    "agreement": dict(_KD, struct="none", kd_weight="agreement"),
    "margin": dict(_KD, struct="none", teacher_margin_db=0.5),
    "depth": dict(_KD, struct="none", lambda_depth=0.1),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--teachers", type=Path, nargs="+", required=True)
    ap.add_argument("--row", choices=sorted(ROWS), required=True)
    ap.add_argument("--train-views", type=int, default=None)
    ap.add_argument("--downscale", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--keep", type=float, default=0.12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pseudo-views", type=int, default=None, help="pseudo views (default: one per training view)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a StudentConfig field")
    a = ap.parse_args(argv)
    overrides = dict(parse_set(item) for item in a.set)
    ds = with_train_views(load_dataset(a.data, downscale=a.downscale), a.train_views)
    plys = [t / "point_cloud.ply" if t.is_dir() else t for t in a.teachers]
    cfg = replace(StudentConfig(iterations=a.iterations, keep=a.keep, seed=a.seed), **{**ROWS[a.row], **overrides})
    t0 = time.perf_counter()
    n_pseudo = a.pseudo_views if a.pseudo_views is not None else len(ds.split("train"))
    scene, _ = train_student(ds, plys if cfg.lambda_kd > 0 else [], plys[0], cfg, a.out, "cpu", n_pseudo, False)
    wall = time.perf_counter() - t0
    m = evaluate_scene(scene, ds, "test", lpips=False, progress=False)
    print(
        json.dumps(
            {
                "row": a.row,
                "set": overrides,
                "seed": a.seed,
                "train_views": len(ds.split("train")),
                "pseudo_views": n_pseudo,
                "psnr": m["psnr"],
                "ssim": m["ssim"],
                "num_gaussians": m["num_gaussians"],
                "wall_s": round(wall, 1),
            }
        )
    )
    return 0


def parse_set(item: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> (a StudentConfig field, the value typed as the field's default)."""
    key, sep, value = item.partition("=")
    fields = StudentConfig.__dataclass_fields__
    if not sep or key not in fields:
        raise SystemExit(f"student_rows: --set {item!r}: expected KEY=VALUE with KEY a StudentConfig field")
    default = getattr(StudentConfig(), key)
    if isinstance(default, bool):
        return key, value.lower() in ("1", "true", "yes")
    if isinstance(default, int):
        return key, int(value)
    if isinstance(default, float) or default is None:  # None: an optional number (teacher_margin_db)
        return key, float(value)
    return key, value


if __name__ == "__main__":
    raise SystemExit(main())
