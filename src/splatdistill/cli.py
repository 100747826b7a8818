"""The ``splatdistill`` command line. Each command is a small function over the library.

Errors a user can cause end with one line on stderr naming the file and the problem and exit code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json as _json
import os
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import tyro

from .errors import UserError

Pos = tyro.conf.Positional
JsonFlag = Annotated[bool, tyro.conf.arg(name="json")]


def _print_json(obj) -> None:
    print(_json.dumps(obj, indent=None, default=str))


# --- commands --------------------------------------------------------------------------------------
def info(path: Pos[Path], json: JsonFlag = False) -> None:
    """Describe a dataset (format, splits, resolution, cameras, extent) or a model file (.ply/.spz/.sdz)."""
    from .info import describe, format_info

    d = describe(path)
    _print_json(d) if json else print(format_info(d))


def convert(src: Pos[Path], dst: Pos[Path]) -> None:
    """Convert a model between formats, chosen by the extensions (.ply, .spz, .sdz)."""
    from .info import load_model, save_model

    scene = load_model(src)
    save_model(scene, dst)
    print(f"wrote {dst} ({len(scene)} Gaussians, SH degree {scene.sh_degree}, {os.path.getsize(dst)} bytes)")


def make_scene(out: Pos[Path], resolution: int = 128, train_views: int = 100, test_views: int = 20,
               seed: int = 0) -> None:
    """Write the built-in procedural scene (ray-traced, not splatted) as a Blender-format dataset."""
    from .data.demo_scene import make_demo_scene

    path = make_demo_scene(out, resolution=resolution, train_views=train_views, test_views=test_views,
                           seed=seed)
    print(f"wrote {path}")


def render(
    model: Pos[Path],
    out: Path,
    data: Optional[Path] = None,
    split: str = "test",
    orbit: Optional[int] = None,
    cameras: Optional[Path] = None,
    width: Optional[int] = None,
    height: Optional[int] = None,
    backend: Literal["auto", "cpu", "gsplat", "reference"] = "auto",
    downscale: int = 1,
    device: Literal["auto", "cpu", "cuda"] = "auto",
) -> None:
    """Render a model to PNGs: the views of a dataset split (--data), an orbit (--orbit N, no dataset
    needed) or exactly the views of a cameras.json written earlier (--cameras). Writes OUT/cameras.json."""
    from .render.images import render_to_folder

    n = render_to_folder(model, out, data=data, split=split, orbit=orbit, cameras_file=cameras,
                         width=width, height=height, backend=backend, downscale=downscale, device=device)
    print(f"wrote {n} images and cameras.json to {out}")


def train(
    data: Pos[Path],
    out: Path,
    iterations: int = 3000,
    variant: Literal["vanilla", "noise", "dropout"] = "vanilla",
    downscale: int = 1,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    strategy: Literal["default", "mcmc"] = "default",
    seed: int = 0,
    resume: bool = False,
    branch_from: Optional[Path] = None,
    checkpoint_every: int = 500,
    init_points: int = 20_000,
    background: Literal["auto", "dataset", "random", "black", "white"] = "auto",
    train_views: Optional[int] = None,
    eval: bool = True,
) -> None:
    """Train a 3DGS teacher (vanilla, noise-augmented or dropout-regularised). Schedules scale with
    --iterations; checkpoints are written every --checkpoint-every iterations; --resume continues.
    --background auto (default): a random colour each iteration for images with alpha, the dataset's
    otherwise; evaluation uses the dataset's. --train-views N: N evenly spaced training views."""
    from .train.config import TrainConfig
    from .train.trainer import Trainer

    cfg = TrainConfig(iterations=iterations, variant=variant, downscale=downscale, device=device,
                      strategy=strategy, seed=seed, checkpoint_every=checkpoint_every,
                      init_points=init_points, background=background, train_views=train_views)
    trainer = Trainer(data, out, cfg, resume=resume, branch_from=branch_from)
    result = trainer.run()
    print(f"trained {result.iterations} iterations in {result.wall_s:.1f} s: {len(result.scene)} Gaussians "
          f"-> {out / 'point_cloud.ply'}")
    if eval and trainer.dataset.splits.get("test"):
        from .evaluate.evaluator import evaluate_scene
        from .fileio import write_json_atomic

        m = evaluate_scene(result.scene.to(trainer.device), trainer.dataset, "test",
                           model_path=out / "point_cloud.ply")
        write_json_atomic(out / "metrics.json", m)
        print(_summary_line(m))


def _fmt(v, spec=".4f"):
    return "n/a" if v is None else format(v, spec)


def _summary_line(m: dict) -> str:
    return (f"test PSNR {_fmt(m['psnr'], '.2f')} dB, SSIM {_fmt(m['ssim'])}, LPIPS-VGG {_fmt(m['lpips_vgg'])}, "
            f"LPIPS-Alex {_fmt(m['lpips_alex'])}, {m['num_gaussians']} Gaussians, "
            f"{_fmt(m['render_ms'], '.1f')} ms/view")


def eval(
    model: Pos[Path],
    data: Path,
    split: str = "test",
    out: Optional[Path] = None,
    downscale: int = 1,
    backend: Literal["auto", "cpu", "gsplat", "reference"] = "auto",
    device: Literal["auto", "cpu", "cuda"] = "auto",
    lpips: bool = True,
    json: JsonFlag = False,
) -> None:
    """Evaluate a model on a dataset split: PSNR, SSIM, LPIPS-VGG, LPIPS-AlexNet, Gaussians, bytes,
    render time, peak memory, per-view values (written to --out as JSON)."""
    from .data.dataset import load_dataset
    from .evaluate.evaluator import evaluate_scene
    from .fileio import write_json_atomic
    from .info import load_model
    from .train.setup import pick_device

    scene = load_model(model).to(pick_device(device))
    ds = load_dataset(data, downscale=downscale)
    m = evaluate_scene(scene, ds, split, backend=backend, lpips=lpips, model_path=model)
    if out:
        write_json_atomic(out, m)
    _print_json({k: v for k, v in m.items() if k != "per_view"}) if json else print(_summary_line(m))


def metrics(a: Pos[Path], b: Pos[Path], json: JsonFlag = False) -> None:
    """Image metrics (PSNR, SSIM, LPIPS-VGG, LPIPS-AlexNet) between two images or two folders of
    same-named images."""
    from .evaluate.metrics import compare_paths

    m = compare_paths(a, b)
    if json:
        _print_json(m)
    else:
        print(f"{m.get('count', 1)} image(s): PSNR {_fmt(m['psnr'], '.3f')} dB, SSIM {_fmt(m['ssim'])}, "
              f"LPIPS-VGG {_fmt(m['lpips_vgg'])}, LPIPS-Alex {_fmt(m['lpips_alex'])}")
        if m.get("lpips_error"):
            print(f"LPIPS unavailable: {m['lpips_error']}")


def distill(
    data: Pos[Path],
    out: Path,
    teachers: Optional[list[Path]] = None,
    keep: float = 0.12,
    target_gaussians: Optional[int] = None,
    iterations: int = 3000,
    teacher_iterations: int = 3000,
    teacher_init_points: int = 20_000,
    background: Literal["auto", "dataset", "random", "black", "white"] = "auto",
    train_views: Optional[int] = None,
    student_init: Literal["teacher", "sfm"] = "teacher",
    struct: Literal["joint", "marginal", "none"] = "none",
    lambda_struct: float = 0.01,
    lambda_kd: float = 0.0,
    lambda_gt: float = 1.0,
    kd_views: Literal["all", "pseudo"] = "all",
    kd_weight: Literal["uniform", "agreement", "alpha"] = "uniform",
    kd_spread_scale: float = 0.05,
    kd_anneal: float = 0.0,
    kd_far: float = 1.0,
    teacher_margin_db: Optional[float] = None,
    score: Literal["significance", "blend", "opacity"] = "significance",
    prune_policy: Literal["significance", "mask", "confidence"] = "significance",
    pseudo_views: Optional[int] = None,
    downscale: int = 1,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    seed: int = 0,
    ablation: bool = False,
) -> None:
    """Multi-teacher distillation: train (or reuse, or take with --teachers) the vanilla, noise and
    dropout teachers, average their renders into soft targets on training and pseudo views, and train
    a student with --keep of the vanilla teacher's Gaussians. Default: the student is the vanilla
    teacher pruned by importance and fine-tuned on the ground truth alone (--lambda-kd 0 --struct
    none), which beat every teacher-guided student measured, with 100 and with 12 training views
    (docs/benchmarks.md); --lambda-kd 0.4 (the paper's weight) --struct joint turns the teachers on. Writes OUT/student/point_cloud.ply,
    OUT/summary.json and OUT/report.md; --ablation adds same-budget students (ground truth only, one
    teacher, three teachers, three teachers + joint structural loss, three teachers on pseudo views
    only). --kd-views pseudo applies the teacher term only on pseudo views (ground truth alone on the
    training views). --score ranks Gaussians for pruning; --prune-policy mask|confidence adds a
    learned gate (Compact-3DGS mask, Confident-Splatting Beta confidence) that is baked into the
    exported opacities; the mean confidence is reported. --background auto (default): teachers and
    student on a random colour each iteration for images with alpha (the soft targets recomposited
    on it), the dataset's otherwise. --train-views N: N evenly spaced training views (sparse views).
    Teacher term: --kd-weight agreement|alpha weighs pixels by the teachers' agreement (exp(-std /
    --kd-spread-scale)) or alpha confidence |2a-1|; --kd-anneal F lowers --lambda-kd to 0 at F of
    the run; --kd-far F uses only the share F of pseudo views farthest from the training cameras;
    --teacher-margin-db D leaves out teachers more than D dB below the best on the training views."""
    from .distill.pipeline import run_distill
    from .distill.report import markdown_table, table_rows
    from .distill.student import StudentConfig

    cfg = StudentConfig(iterations=iterations, keep=keep, target_gaussians=target_gaussians, init=student_init,
                        struct=struct, lambda_struct=lambda_struct, lambda_kd=lambda_kd, lambda_gt=lambda_gt,
                        score=score, prune_policy=prune_policy, kd_views=kd_views, seed=seed,
                        kd_weight=kd_weight, kd_spread_scale=kd_spread_scale, kd_anneal=kd_anneal, kd_far=kd_far,
                        teacher_margin_db=teacher_margin_db, background=background)
    summary = run_distill(data, out, teachers=teachers, cfg=cfg, teacher_iterations=teacher_iterations,
                          downscale=downscale, device=device, n_pseudo=pseudo_views, ablation=ablation,
                          teacher_init_points=teacher_init_points, teacher_background=background,
                          train_views=train_views)
    print(markdown_table(table_rows(summary)))
    stats = summary["student"].get("prune_policy") or {}
    if stats.get("mean_confidence") is not None:
        print(f"student mean confidence: {stats['mean_confidence']:.3f} (Confident Splatting's scene-quality indicator)")
    print(f"report: {out / 'report.md'}")


def demo(out: Path = Path("demo_out"), teacher_iterations: int = 1500, student_iterations: int = 1000,
         resolution: int = 128, compress_iterations: int = 300) -> None:
    """Run the main job on the built-in scene: generate it, train the three teachers, distil a student
    with 12 % of the Gaussians, evaluate everything, print the table (report in OUT/distill) and
    compress the student (OUT/compressed: model.sdz, viewer-ready model.ply and model.spz)."""
    from .pipeline import run_demo

    run_demo(out, teacher_iterations=teacher_iterations, student_iterations=student_iterations,
             resolution=resolution, compress_iterations=compress_iterations)


def compress(
    model: Pos[Path],
    out: Path,
    data: Optional[Path] = None,
    quality: Literal["high", "balanced", "small"] = "balanced",
    prune: Optional[float] = None,
    sh_degree: Optional[int] = None,
    vq_size: Optional[int] = None,
    vq_ratio: Optional[float] = None,
    prune_policy: Literal["significance", "mask", "confidence"] = "significance",
    rvq_stages: int = 0,
    rvq_size: int = 64,
    sweep: bool = False,
    downscale: int = 1,
    iterations: int = 1000,
    views: int = 48,
    resolution: int = 192,
    spz: bool = True,
    lpips: bool = True,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    seed: int = 0,
) -> None:
    """Compress a model (.ply/.spz/.sdz): prune (--prune-policy), distil SH to --sh-degree, colour VQ,
    quantise + Morton order + zstd. Writes OUT/model.sdz, OUT/model.ply (decompressed, for any viewer),
    OUT/model.spz and OUT/summary.json (sizes, PSNR/LPIPS of the decoded model). With --data the
    dataset's views are the targets; without, views sampled around the model and its own renders.
    Presets --quality high|balanced|small (prune/SH/VQ: 0.5/3/0.4, 0.66/2/0.6, 0.8/1/0.8); explicit
    flags override them. --rvq-stages S (Compact-3DGS: 6, with --rvq-size 64) stores scales and
    rotations as residual-VQ indices after a short fine-tune of the codebooks. --sweep runs the
    presets and two prune ratios: OUT/sweep.json, sweep.md, rate_distortion.png."""
    from .compress.pipeline import CompressConfig, compress_model, run_sweep, sweep_markdown

    cfg = CompressConfig(quality=quality, prune=prune, sh_degree=sh_degree, vq_size=vq_size, vq_ratio=vq_ratio,
                         prune_policy=prune_policy, rvq_stages=rvq_stages, rvq_size=rvq_size,
                         iterations=iterations, downscale=downscale, device=device,
                         views=views, resolution=resolution, write_spz=spz, lpips=lpips, seed=seed)
    if sweep:
        print(sweep_markdown(run_sweep(model, out, data, cfg)))
        print(f"wrote {out / 'sweep.json'}, {out / 'sweep.md'}, {out / 'rate_distortion.png'}")
        return
    s = compress_model(model, out, data, cfg)
    lp = "n/a" if s["lpips_vgg"] is None else f"{s['lpips_vgg']:.4f}"
    print(f"{s['num_gaussians_input']} -> {s['num_gaussians']} Gaussians, {s['input_bytes'] / 1e6:.2f} MB -> "
          f"{s['output_bytes'] / 1e6:.3f} MB ({s['ratio']:.1f}x); PSNR {s['psnr']:.2f} dB, LPIPS-VGG {lp} "
          f"on {s['evaluated_on']}")
    conf = s["stages"]["prune"].get("policy_stats", {}).get("mean_confidence")
    if conf is not None:
        print(f"mean confidence {conf:.3f} (Confident Splatting's scene-quality indicator)")
    print(f"wrote {out / 'model.sdz'}, {out / 'model.ply'}, {out / 'summary.json'}")


COMMANDS = {
    "info": info, "convert": convert, "make-scene": make_scene, "render": render, "train": train,
    "eval": eval, "metrics": metrics, "distill": distill, "demo": demo, "compress": compress,
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or bool(os.environ.get("SPLATDISTILL_DEBUG"))
    args = [a for a in args if a != "--debug"]
    try:
        tyro.extras.subcommand_cli_from_dict(
            COMMANDS, prog="splatdistill", args=args,
            description="splatdistill: make 3D Gaussian Splatting scenes small and fast. "
                        "Add --debug to any command to see tracebacks.",
        )
    except UserError as e:
        if debug:
            raise
        print(f"splatdistill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("splatdistill: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # out of memory (host or GPU) is the user's to fix; anything else is a bug
        if debug or not _is_out_of_memory(e):
            raise
        print("splatdistill: error: out of memory (try --downscale, fewer Gaussians or --device cpu)",
              file=sys.stderr)
        return 2
    return 0


def _is_out_of_memory(e: BaseException) -> bool:
    """MemoryError, torch's (CUDA) OutOfMemoryError, or the CPU allocator's failure message."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


if __name__ == "__main__":
    sys.exit(main())
