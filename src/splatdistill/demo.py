"""The main job on the built-in scene: ``splatdistill demo`` / ``make demo``.

Generates the procedural scene, trains the three teachers (branched from one shared run), distils
a student with 12 % of the vanilla teacher's Gaussians, evaluates all of them, writes the report,
and compresses the student into a viewer-ready package.
"""

from __future__ import annotations

import time
from pathlib import Path

from splatdistill.data.demo_scene import make_demo_scene


def run_demo(
    out: Path,
    teacher_iterations: int = 1500,
    student_iterations: int = 1000,
    resolution: int = 128,
    keep: float = 0.12,
    compress_iterations: int = 300,
    train_views: int = 100,
    test_views: int = 20,
    init_points: int = 20_000,
) -> dict:
    from splatdistill.data.describe import describe_dataset
    from splatdistill.distill.pipeline import run_distill
    from splatdistill.distill.report import markdown_table, table_rows
    from splatdistill.distill.student import StudentConfig
    from splatdistill.fileio import write_json_atomic

    out = Path(out)
    t0 = time.perf_counter()
    scene_dir = make_demo_scene(out / "scene", resolution=resolution, train_views=train_views, test_views=test_views)
    info = describe_dataset(scene_dir)
    print(
        f"demo scene: {info['num_train']} train / {info['num_test']} test views at "
        f"{info['width']}x{info['height']} in {scene_dir}",
        flush=True,
    )
    cfg = StudentConfig(iterations=student_iterations, keep=keep)
    # the demo scene has a transparent background: teachers train on random backgrounds (see
    # docs/benchmarks.md: it removes floaters that a constant background never penalises)
    summary = run_distill(
        scene_dir,
        out / "distill",
        cfg=cfg,
        teacher_iterations=teacher_iterations,
        teacher_background="random",
        teacher_init_points=init_points,
    )
    from splatdistill.compress.pipeline import CompressConfig, compress_model

    student_ply = out / "distill" / "student" / "point_cloud.ply"
    # the student is already pruned to 12 % by distillation: compress it without a second pruning
    # (measured on the demo scene, 300 iterations: balanced preset 28.34 dB at 0.037 MB, the same
    # with --prune 0 30.13 dB at 0.098 MB, against 30.34 dB uncompressed)
    comp = compress_model(
        student_ply, out / "compressed", data=scene_dir, cfg=CompressConfig(iterations=compress_iterations, prune=0.0)
    )
    teacher_bytes = (out / "distill" / "teachers" / "vanilla" / "point_cloud.ply").stat().st_size
    summary["compressed"] = {k: comp.get(k) for k in ("output_bytes", "num_gaussians", "psnr", "lpips_vgg")}
    summary["wall_s"] = time.perf_counter() - t0
    write_json_atomic(out / "summary.json", summary)
    print(markdown_table(table_rows(summary)))
    print(
        f"compressed student: {out / 'compressed' / 'model.sdz'}, {comp['output_bytes'] / 1e6:.3f} MB "
        f"({teacher_bytes / comp['output_bytes']:.0f}x smaller than the vanilla teacher's PLY), "
        f"test PSNR {comp['psnr']:.2f} dB; viewer-ready: {out / 'compressed' / 'model.ply'}"
    )
    print(f"done in {summary['wall_s']:.0f} s; report: {out / 'distill' / 'report.md'}")
    return summary
