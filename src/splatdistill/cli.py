"""The ``splatdistill`` command line. Each command is a small function over the library.

Errors a user can cause end with one line on stderr naming the file and the problem and exit code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import tyro

from splatdistill.errors import UserError
from splatdistill.validate import COUNT, Rule, check_flags

Pos = tyro.conf.Positional
JsonFlag = Annotated[bool, tyro.conf.arg(name="json")]


def _print_json(obj) -> None:
    from splatdistill.fileio import dumps_json

    print(dumps_json(obj, indent=None))


# --- commands --------------------------------------------------------------------------------------
def info(path: Pos[Path], json: JsonFlag = False) -> None:
    """Describe a dataset (format, splits, resolution, cameras, extent) or a model file (.ply, compressed
    .ply, .spz v1-v4, .sdz, .sog, SOG meta.json or folder)."""
    from splatdistill.commands.info import describe, format_info

    d = describe(path)
    _print_json(d) if json else print(format_info(d))


def convert(src: Pos[Path], dst: Pos[Path], spz_version: Optional[Literal[2, 3, 4]] = None) -> None:
    """Convert a model between formats. Reads .ply (Inria or compressed, told apart by the header),
    .spz (v1-v4), .sdz, .sog, a SOG meta.json or its folder; writes by the output name: .ply,
    .compressed.ply, .spz (v4; --spz-version 3 for readers without v4, such as Spark), .sdz, .sog,
    meta.json (SOG textures beside it)."""
    from splatdistill.fileio import check_output_file
    from splatdistill.formats.io import load_model, save_model, size_on_disk

    check_output_file(dst, min_free_bytes=src.stat().st_size if src.is_file() else 0)
    scene = load_model(src)
    written = save_model(scene, dst, spz_version=spz_version)
    print(f"wrote {written} ({len(scene)} Gaussians, SH degree {scene.sh_degree}, "
          f"{size_on_disk(written)} bytes)")


def make_scene(out: Pos[Path], resolution: int = 128, train_views: int = 100, test_views: int = 20,
               seed: int = 0) -> None:
    """Write the built-in procedural scene (ray-traced, not splatted) as a Blender-format dataset."""
    from splatdistill.data.demo_scene import make_demo_scene
    from splatdistill.fileio import check_output_dir

    check_flags(locals())
    check_output_dir(out)
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
    overwrite: bool = False,
) -> None:
    """Render a model to PNGs: the views of a dataset split (--data), an orbit (--orbit N, no dataset
    needed) or exactly the views of a cameras.json written earlier (--cameras). Writes OUT/cameras.json.
    OUT holding another render's images is refused unless --overwrite (which removes them)."""
    from splatdistill.commands.render import render_to_folder
    from splatdistill.commands.runs import run_folder

    check_flags(locals())
    config = {"model": _abs(model), "data": _abs(data), "split": split, "orbit": orbit, "cameras": _abs(cameras),
              "width": width, "height": height, "backend": backend, "downscale": downscale}
    with run_folder(out, "render", config, owned=("[0-9][0-9][0-9][0-9]_*.png", "cameras.json"),
                    overwrite=overwrite, can_resume=False):
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
    overwrite: bool = False,
) -> None:
    """Train a 3DGS teacher (vanilla, noise-augmented or dropout-regularised). Schedules scale with
    --iterations; checkpoints are written every --checkpoint-every iterations; --resume continues.
    OUT holding an earlier run is refused unless --resume or --overwrite (which removes its checkpoints).
    --background auto (default): a random colour each iteration for images with alpha, the dataset's
    otherwise; evaluation uses the dataset's. --train-views N: N evenly spaced training views."""
    from splatdistill.commands.runs import run_folder
    from splatdistill.train.config import TrainConfig
    from splatdistill.train.trainer import Trainer

    check_flags(locals())
    cfg = TrainConfig(iterations=iterations, variant=variant, downscale=downscale, device=device,
                      strategy=strategy, seed=seed, checkpoint_every=checkpoint_every,
                      init_points=init_points, background=background, train_views=train_views).validate()
    config = {"data": _abs(data), "branch_from": _abs(branch_from), **cfg.to_dict()}
    config.pop("device")
    with run_folder(out, "train", config, resume=resume, overwrite=overwrite, continue_same=False,
                    owned=("ckpt", "config.json", "train_log.jsonl", "point_cloud.ply", "metrics.json")):
        _train(data, out, cfg, resume, branch_from, eval)


def _train(data, out, cfg, resume, branch_from, eval) -> None:
    from splatdistill.train.trainer import Trainer

    trainer = Trainer(data, out, cfg, resume=resume, branch_from=branch_from)
    result = trainer.run()
    print(f"trained {result.iterations} iterations in {result.wall_s:.1f} s: {len(result.scene)} Gaussians "
          f"-> {out / 'point_cloud.ply'}")
    if eval and trainer.dataset.splits.get("test"):
        from splatdistill.ops.evaluate import evaluate_scene
        from splatdistill.fileio import write_json_atomic

        m = evaluate_scene(result.scene.to(trainer.device), trainer.dataset, "test",
                           model_path=out / "point_cloud.ply")
        write_json_atomic(out / "metrics.json", m)
        print(_summary_line(m))


def _fmt(v, spec=".4f"):
    return "n/a" if v is None else format(v, spec)


def _abs(p):
    return None if p is None else str(Path(p).resolve())


def _summary_line(m: dict) -> str:
    return (f"{m.get('split', 'test')} PSNR {_fmt(m['psnr'], '.2f')} dB, SSIM {_fmt(m['ssim'])}, LPIPS-VGG {_fmt(m['lpips_vgg'])}, "
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
    from splatdistill.data.dataset import load_dataset
    from splatdistill.ops.evaluate import evaluate_scene
    from splatdistill.fileio import write_json_atomic
    from splatdistill.formats.io import load_model
    from splatdistill.fileio import check_output_file
    from splatdistill.device import pick_device

    check_flags(locals())
    if out:
        check_output_file(out)
    scene = load_model(model).to(pick_device(device))
    ds = load_dataset(data, downscale=downscale)
    m = evaluate_scene(scene, ds, split, backend=backend, lpips=lpips, model_path=model)
    if out:
        write_json_atomic(out, m)
    _print_json({k: v for k, v in m.items() if k != "per_view"}) if json else print(_summary_line(m))


def metrics(a: Pos[Path], b: Pos[Path], json: JsonFlag = False) -> None:
    """Image metrics (PSNR, SSIM, LPIPS-VGG, LPIPS-AlexNet) between two images or two folders of
    same-named images."""
    from splatdistill.ops.metrics import compare_paths

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
    resume: bool = False,
    overwrite: bool = False,
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
    --teacher-margin-db D leaves out teachers more than D dB below the best on the training views.
    Run again, the same command finishes from whatever was done; other settings into the same OUT
    need --resume (reuse what still matches) or --overwrite. Nothing is written into the --teachers
    folders."""
    from dataclasses import asdict

    from splatdistill.distill.pipeline import run_distill
    from splatdistill.distill.report import markdown_table, table_rows
    from splatdistill.distill.student import StudentConfig
    from splatdistill.commands.runs import run_folder

    check_flags(locals())
    cfg = StudentConfig(iterations=iterations, keep=keep, target_gaussians=target_gaussians, init=student_init,
                        struct=struct, lambda_struct=lambda_struct, lambda_kd=lambda_kd, lambda_gt=lambda_gt,
                        score=score, prune_policy=prune_policy, kd_views=kd_views, seed=seed,
                        kd_weight=kd_weight, kd_spread_scale=kd_spread_scale, kd_anneal=kd_anneal, kd_far=kd_far,
                        teacher_margin_db=teacher_margin_db, background=background).validate()
    config = {"data": _abs(data), "teachers": [_abs(t) for t in teachers or []], "student": asdict(cfg),
              "teacher_iterations": teacher_iterations, "teacher_init_points": teacher_init_points,
              "background": background, "train_views": train_views, "pseudo_views": pseudo_views, "downscale": downscale, "ablation": ablation}
    owned = ("teachers", "student", "gt_only", "one_teacher", "three_teachers", "three_teachers_joint",
             "three_teachers_pseudo", "cache", "summary.json", "report.md", "views.png", "psnr_vs_gaussians.png")
    with run_folder(out, "distill", config, owned=owned, resume=resume, overwrite=overwrite):
        summary = run_distill(data, out, teachers=teachers, cfg=cfg, teacher_iterations=teacher_iterations,
                              downscale=downscale, device=device, n_pseudo=pseudo_views, ablation=ablation,
                              teacher_init_points=teacher_init_points, teacher_background=background,
                              train_views=train_views)
    print(markdown_table(table_rows(summary)))
    stats = summary["student"].get("prune_policy") or {}
    if stats.get("mean_confidence") is not None:
        print(f"student mean confidence: {stats['mean_confidence']:.3f} (Confident Splatting's scene-quality indicator)")
    print(f"report: {out / 'report.md'}")
    from splatdistill.view.server import view_command

    models = [row["path"] for row in summary["teachers"]] + [out / "student" / "point_cloud.ply"]
    print(f"see them side by side: {view_command(models, data)}")


def demo(out: Path = Path("demo_out"), teacher_iterations: int = 1500, student_iterations: int = 1000,
         resolution: int = 128, compress_iterations: int = 300, overwrite: bool = False) -> None:
    """Run the main job on the built-in scene: generate it, train the three teachers, distil a student
    with 12 % of the Gaussians, evaluate everything, print the table (report in OUT/distill) and
    compress the student (OUT/compressed: model.sdz, viewer-ready model.ply and model.spz)."""
    from splatdistill.demo import run_demo
    from splatdistill.commands.runs import run_folder

    check_flags(locals())
    config = {"teacher_iterations": teacher_iterations, "student_iterations": student_iterations,
              "resolution": resolution, "compress_iterations": compress_iterations}
    with run_folder(out, "demo", config, owned=("scene", "distill", "compressed", "summary.json"),
                    overwrite=overwrite, can_resume=False):
        run_demo(out, teacher_iterations=teacher_iterations, student_iterations=student_iterations,
                 resolution=resolution, compress_iterations=compress_iterations)
    from splatdistill.view.server import view_command

    print("see them side by side: " + view_command(
        [out / "distill" / "teachers" / "vanilla" / "point_cloud.ply", out / "distill" / "student" / "point_cloud.ply",
         out / "compressed" / "model.sdz"], out / "scene"))


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
    spz_version: Literal[2, 3, 4] = 4,
    lpips: bool = True,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    seed: int = 0,
    overwrite: bool = False,
    training_free: bool = True,
    refine: int = 0,
    importance_views: int = 8,
    merge: bool = True,
    lod: Optional[str] = None,
) -> None:
    """Compress a model (any format convert reads): prune (--prune-policy), distil SH to --sh-degree, colour VQ,
    quantise + Morton order + zstd. Writes OUT/model.sdz, OUT/model.ply (decompressed, for any viewer),
    OUT/model.spz (v4; --spz-version 3 for Spark) and OUT/summary.json (sizes, PSNR/LPIPS of the decoded model). With --data the
    dataset's views are the targets; without, views sampled around the model and its own renders.
    Presets --quality high|balanced|small (prune/SH/VQ: 0.5/3/0.4, 0.66/2/0.6, 0.8/1/0.8); explicit
    flags override them. --rvq-stages S (Compact-3DGS: 6, with --rvq-size 64) stores scales and
    rotations as residual-VQ indices after a short fine-tune of the codebooks. --sweep runs the
    presets and two prune ratios: OUT/sweep.json, sweep.md, rate_distortion.png. The outputs appear
    together when the run ends; OUT holding another run's is refused unless --overwrite.
    Without --data the default is training-free (no gradient steps; --no-training-free for the
    fine-tuning path): importance from --importance-views forward renders (0: opacity x volume),
    pairwise merges where they beat pruning (--no-merge: prune only), closed-form SH fit, k-means
    palettes, packed .sdz; --refine N adds N fine-tune iterations; --lod 1,0.5,0.25,0.1 also writes
    a ladder of models (shares of the input's Gaussians) to OUT/lod/."""
    from dataclasses import asdict

    from splatdistill.compress.pipeline import CompressConfig
    from splatdistill.commands.runs import run_folder

    check_flags(locals(), iterations=COUNT, resolution=Rule(minimum=8))
    cfg = CompressConfig(quality=quality, prune=prune, sh_degree=sh_degree, vq_size=vq_size, vq_ratio=vq_ratio,
                         prune_policy=prune_policy, rvq_stages=rvq_stages, rvq_size=rvq_size,
                         iterations=iterations, downscale=downscale, device=device,
                         views=views, resolution=resolution, write_spz=spz, lpips=lpips, seed=seed,
                         spz_version=spz_version, training_free=None if training_free else False, refine=refine,
                         importance_views=importance_views, merge=merge, lod=lod)
    config = {"model": _abs(model), "data": _abs(data), "sweep": sweep, **asdict(cfg)}
    config.pop("device", None)
    config.pop("progress", None)
    owned = ("model.sdz", "model.ply", "model.spz", "summary.json", "sweep.json", "sweep.md", "rate_distortion.png",
             "high", "balanced", "small", "balanced_prune50", "balanced_prune80", "lod", _STAGING)
    with run_folder(out, "compress", config, owned=owned, overwrite=overwrite, can_resume=False):
        staging = out / _STAGING
        if staging.exists():
            import shutil

            shutil.rmtree(staging)  # what a killed run of ours left
        try:
            _compress(model, out, staging, data, cfg, sweep)
        except BaseException:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)  # nothing half-done stays (kill -9 leaves it to the next run)
            raise
        _publish(staging, out)


_STAGING = ".incomplete"


def _publish(staging: Path, out: Path) -> None:
    """Move a finished run's outputs from the staging folder into OUT (replacing older ones)."""
    import shutil

    for p in sorted(staging.iterdir()):
        dest = out / p.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(p, dest)
    staging.rmdir()


def _compress(model, out, staging, data, cfg, sweep) -> None:
    from splatdistill.compress.pipeline import compress_model, run_sweep, sweep_markdown

    if sweep:
        print(sweep_markdown(run_sweep(model, staging, data, cfg)))
        print(f"wrote {out / 'sweep.json'}, {out / 'sweep.md'}, {out / 'rate_distortion.png'}")
        return
    s = compress_model(model, staging, data, cfg)
    lp = "n/a" if s["lpips_vgg"] is None else f"{s['lpips_vgg']:.4f}"
    print(f"{s['num_gaussians_input']} -> {s['num_gaussians']} Gaussians, {s['input_bytes'] / 1e6:.2f} MB -> "
          f"{s['output_bytes'] / 1e6:.3f} MB ({s['ratio']:.1f}x); PSNR {s['psnr']:.2f} dB, LPIPS-VGG {lp} "
          f"on {s['evaluated_on']}")
    conf = s["stages"].get("prune", {}).get("policy_stats", {}).get("mean_confidence")
    if conf is not None:
        print(f"mean confidence {conf:.3f} (Confident Splatting's scene-quality indicator)")
    print(f"wrote {out / 'model.sdz'}, {out / 'model.ply'}, {out / 'summary.json'}")
    for lv in s.get("lod") or []:
        print(f"LOD {lv['level']}: {lv['num_gaussians']} Gaussians ({lv['share']:g}), {lv['sdz_bytes'] / 1e6:.3f} MB "
              f"in {out / 'lod'}")
    from splatdistill.view.server import view_command

    print(f"see them side by side: {view_command([model, out / 'model.sdz'], data)}")


def view(
    models: Pos[list[Path]],
    port: int = 8765,
    host: str = "127.0.0.1",
    data: Optional[Path] = None,
    downscale: int = 1,
) -> None:
    """Show models side by side in a local browser page (any format we read), all from one camera:
    orbit/fly controls, t toggles side by side / one at a time, captions give Gaussians, bytes and
    format. --data adds the dataset's cameras to jump to and the ground-truth photo beside the
    renders. Serves on 127.0.0.1 only unless --host says otherwise; --port 0 picks a free port.
    Every asset is local: the page needs no network. Stop with Ctrl-C."""
    from splatdistill.view.server import is_loopback, make_server

    server = make_server(models, data=data, host=host, port=port, downscale=downscale)
    if not is_loopback(host):
        from splatdistill.errors import warn

        warn(f"serving on {host}: anyone who can reach this machine on port "
             f"{server.server_address[1]} can see these models")
    print(f"serving {len(models)} model(s) at {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def batch(args: Pos[list[str]] = []) -> None:  # noqa: B006 (tyro reads the default)
    """Run compress, render, distill or train on many inputs as Ray tasks (one after another without
    Ray): batch COMMAND INPUTS... --out DIR [COMMAND's flags], or batch --manifest jobs.json. Each job
    writes DIR/<input name>/ as the single command would; finished jobs are skipped on a rerun; the
    table of jobs goes to DIR/batch.md and DIR/batch.json. See batch --help."""
    from splatdistill.commands.batch import batch_main

    code = batch_main(list(args))
    if code:
        raise SystemExit(code)


COMMANDS = {
    "info": info, "convert": convert, "make-scene": make_scene, "render": render, "train": train,
    "eval": eval, "metrics": metrics, "distill": distill, "demo": demo, "compress": compress,
    "batch": batch,
    "view": view,
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or bool(os.environ.get("SPLATDISTILL_DEBUG"))
    args = [a for a in args if a != "--debug"]
    if args[:1] == ["batch"]:  # the sub-command's flags pass through tyro unparsed (batch.py parses them)
        args = ["batch", "--", *args[1:]]
    try:
        try:
            _run(args)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not at exit
    except UserError as e:
        if debug:
            raise
        return _error(str(e))
    except BrokenPipeError:  # `splatdistill info m.ply --json | head -c1`: the reader left; stay quiet
        _silence_stdout()
        return 141
    except KeyboardInterrupt:
        _close_progress_bars()
        print("splatdistill: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # no permission, read-only file system, disk full, ... (mid-run)
        if debug or e.errno not in _USER_ERRNOS:
            raise
        where = e.filename if e.filename is not None else ""
        return _error(f"{where}: {(e.strerror or str(e)).lower()}" if where else (e.strerror or str(e)).lower())
    except Exception as e:  # out of memory (host or GPU) is the user's to fix; anything else is a bug
        if debug or not _is_out_of_memory(e):
            raise
        return _error("out of memory (try --downscale, fewer Gaussians or --device cpu)")
    return 0


_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST,
                errno.EISDIR, errno.ENAMETOOLONG, errno.EMFILE, errno.ENFILE, errno.ENOENT}


def _error(message: str) -> int:
    _close_progress_bars()
    print(f"splatdistill: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return 2


def _close_progress_bars() -> None:
    """Clear the progress bars a failed job left open, so its message starts on a clean line."""
    try:
        from tqdm import tqdm

        for bar in list(getattr(tqdm, "_instances", ())):
            bar.leave = False
            bar.close()
    except Exception:
        pass


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


# --- one error path for tyro's parse errors ---------------------------------------------------------------
class _ParseCapture:
    """While tyro parses, stderr is captured and parse errors become one line (``UserError``).

    tyro's error hook (``tyro._errors.on_parse_error``) gives the structured error; where it is absent
    or the event is of a kind not known here, tyro's printed box is flattened to its first message
    instead. Capture ends as soon as the chosen command starts (its wrapper calls ``end()``)."""

    def __init__(self, args: list[str]):
        self.args = args
        self.buffer = None
        self.saved = None

    def __enter__(self):
        import io

        self.saved, self.buffer = sys.stderr, io.StringIO()
        sys.stderr = self.buffer
        return self

    def end(self) -> None:
        if self.saved is not None:
            sys.stderr, self.saved = self.saved, None
            text = self.buffer.getvalue()
            if text:
                sys.stderr.write(text)  # warnings printed while parsing

    def __exit__(self, exc_type, exc, tb) -> bool:
        parsing = self.saved is not None  # False once the command runs: its own exits pass through
        captured = self.buffer.getvalue() if parsing else ""
        if parsing:
            sys.stderr, self.saved = self.saved, None
        if parsing and exc_type is SystemExit and exc.code not in (0, None):
            raise UserError(_flatten_box(captured) or "invalid command line (see splatdistill --help)") from None
        if captured and exc_type is not None and exc_type is not _ParseError:
            sys.stderr.write(captured)  # --help, or an error that is not tyro's
        return False


def _command_of(args: list[str]) -> str | None:
    for a in args:
        if not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def _flags_of(name: str) -> list[str]:
    import inspect

    flags = []
    for p in inspect.signature(COMMANDS[name]).parameters.values():
        if str(p.annotation).startswith(("Pos[", "Positional", "tyro.conf.Positional")):
            continue
        f = "--" + p.name.replace("_", "-")
        flags.append(f)
        if p.annotation in (bool, "bool", "JsonFlag") or isinstance(p.default, bool):
            flags.append("--no-" + p.name.replace("_", "-"))
    return flags + ["--help", "--debug"]


def _nearest(word: str, choices: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]}?" if close else ""


def _arg_name(arg) -> str:
    try:
        if arg.is_positional():
            return str(arg.field.extern_name).upper().replace("-", "_")
        return "/".join(arg.lowered.name_or_flags)
    except Exception:
        return "an argument"


def _value_of(flag: str, args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _expected(arg) -> str:
    import typing

    try:
        t = arg.field.type_stripped
        kinds = [a for a in typing.get_args(t) if a is not type(None)] or [t]
        names = {int: "an integer", float: "a number", bool: "true or false", Path: "a path", str: "text"}
        if len(kinds) == 1 and kinds[0] in names:
            return names[kinds[0]]
        return str(arg.lowered.metavar)
    except Exception:
        return "another kind of value"


def _parse_error_message(event, args: list[str]) -> str | None:
    """One line for a tyro parse-error event, or None for a kind not known here."""
    import tyro._errors as te

    cmd = _command_of(args)
    if isinstance(event, te.InvalidChoice):
        choices = ", ".join(str(c) for c in event.choices)
        return f"{_arg_name(event.argument)}: invalid choice '{event.value}' (choose from {choices})"
    if isinstance(event, te.InstantiationFailure):
        if event.argument is None:
            return event.message.splitlines()[0]
        name = _arg_name(event.argument)
        value = _value_of(name.split("/")[0], args)
        got = f", got '{value}'" if value is not None else ""
        return f"{name}: expected {_expected(event.argument)}{got}"
    if isinstance(event, te.UnrecognizedArgs):
        tok = event.tokens[0] if event.tokens else ""
        if cmd is None:
            first = next((a for a in args if not a.startswith("-")), None)
            names = list(COMMANDS)
            if first is None:
                return f"unrecognized option {tok} (give a command first: {', '.join(names)})"
            return f"unknown command '{first}' (choose from {', '.join(names)}){_nearest(first, names)}"
        if tok.startswith("-"):
            return f"{cmd}: unrecognized option {tok.split('=')[0]}{_nearest(tok.split('=')[0], _flags_of(cmd))}"
        return f"{cmd}: unexpected argument '{tok}' (see splatdistill {cmd} --help)"
    if isinstance(event, te.MissingArgs):
        names = [_arg_name(a.arg) for a in event.missing_arguments]
        where = f"{cmd}: " if cmd else ""
        return f"{where}missing required {'argument' if len(names) == 1 else 'arguments'} {', '.join(names)} " \
               f"(see splatdistill {cmd or ''} --help)".replace("  ", " ")
    if isinstance(event, te.MissingSubcommand):
        return f"missing command (choose from {', '.join(COMMANDS)})"
    if isinstance(event, te.BadValue):
        return f"{_arg_name(event.argument)}: " + (f"expected a value" if event.offending_value is None
                                                   else f"does not take the value '{event.offending_value}'")
    return None


def _flatten_box(text: str) -> str:
    """The first message of one of tyro's error boxes, on one line (title: message)."""
    rows, title = [], ""
    for line in text.splitlines():
        inner = line.strip().strip("│").strip()
        if line.strip().startswith("╭"):
            title = line.strip().strip("╭╮─ ").strip()
            continue
        if line.strip().startswith("╰"):
            break
        if set(inner) <= set("─ ") and inner:
            break  # the first rule ends the message
        if inner:
            rows.append(inner)
    msg = " ".join(rows)
    if title and msg and not msg.lower().startswith(title.lower()):
        return f"{title.lower()}: {msg}"
    return msg or title


def _run(args: list[str]) -> None:
    import functools

    capture = _ParseCapture(args)

    def entered(fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            capture.end()
            return fn(*a, **k)

        return wrapper

    def hook(event):
        if capture.saved is None:  # the command runs (e.g. batch parsing its jobs' flags): tyro's own way
            return
        try:
            msg = _parse_error_message(event, args)
        except Exception:  # an event shaped differently in another tyro: its box is flattened instead
            msg = None
        if msg is not None:
            raise _ParseError(msg)

    try:
        import tyro._errors as te

        on_error = te.on_parse_error(hook)
    except (ImportError, AttributeError):  # another tyro: the box is flattened instead
        import contextlib

        on_error = contextlib.nullcontext()
    try:
        with capture, on_error:
            tyro.extras.subcommand_cli_from_dict(
                {name: entered(fn) for name, fn in COMMANDS.items()}, prog="splatdistill", args=args,
                description="splatdistill: make 3D Gaussian Splatting scenes small and fast. "
                            "Add --debug to any command to see tracebacks.",
            )
    except _ParseError as e:
        raise UserError(str(e)) from None


class _ParseError(Exception):
    pass


def _is_out_of_memory(e: BaseException) -> bool:
    """MemoryError, torch's (CUDA) OutOfMemoryError, or the CPU allocator's failure message."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


if __name__ == "__main__":
    sys.exit(main())
