"""``splatdistill distill``: teachers (trained or given), soft targets, student, evaluation, report."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

from splatdistill.data.dataset import Dataset, load_dataset, with_train_views
from splatdistill.device import pick_device
from splatdistill.distill.report import write_report
from splatdistill.distill.student import TEACHER_WEIGHT, StudentConfig, StudentTrainer
from splatdistill.distill.targets import build_soft_targets, make_pseudo_cameras, select_teachers
from splatdistill.errors import UserError
from splatdistill.fileio import dumps_json, write_json_atomic
from splatdistill.formats.io import load_model
from splatdistill.ops.background import fixed_background, resolve_background
from splatdistill.ops.evaluate import evaluate_scene
from splatdistill.ops.lpips import LPIPSBank
from splatdistill.train.checkpoint import branch_point
from splatdistill.train.config import TrainConfig
from splatdistill.train.trainer import Trainer

VARIANTS = ("vanilla", "noise", "dropout")
METRICS = ("psnr", "ssim", "lpips_vgg", "lpips_alex")


def train_teachers(
    dataset: Dataset,
    out: Path,
    iterations: int,
    device: str,
    seed: int = 0,
    progress: bool = True,
    init_points: int = 20_000,
    background: str = "auto",
    base: TrainConfig | None = None,
) -> list[Path]:
    """The three teachers, the noise and dropout ones branched from the vanilla run at the start of
    their windows (until there the three are the same procedure). Finished teachers are reused.
    ``base``: the teachers' other training settings (default: ``TrainConfig``'s)."""
    base = teacher_config(iterations, device, seed, init_points, background, base=base)
    return [train_teacher(dataset, out, variant, base, progress) for variant in VARIANTS]


def teacher_config(
    iterations: int,
    device: str,
    seed: int = 0,
    init_points: int = 20_000,
    background: str = "dataset",
    base: TrainConfig | None = None,
) -> TrainConfig:
    """The teachers' shared training configuration (variant vanilla), its branch point set.

    Args:
        iterations, device, seed, init_points, background: the settings distill decides for every teacher.
        base: the rest of the teachers' training settings (default: ``TrainConfig``'s defaults).

    Returns:
        A plain ``TrainConfig`` (what each teacher's run folder records).
    """
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(TrainConfig)} if base is not None else {}
    fields.update(
        iterations=iterations,
        device=device,
        seed=seed,
        init_points=init_points,
        background=background,
        variant="vanilla",
        checkpoint_every=max(100, iterations // 10),
    )
    base = TrainConfig(**fields)
    base.branch_points = (base.branch_iteration(),)
    return base


def train_teacher(
    dataset: Dataset, out: Path, variant: str, base: TrainConfig, progress: bool = True, stop_at: int | None = None
) -> Path:
    """One teacher of ``train_teachers`` (reused when finished with the same settings). ``stop_at``
    (the vanilla run only) stops at that iteration with a checkpoint, from which the next call continues."""
    run = out / variant
    ply = run / "point_cloud.ply"
    cfg = replace(base, variant=variant)
    if ply.exists() and _same_teacher(run, cfg):
        return ply
    if (run / "config.json").exists() and not _same_teacher(run, cfg):
        shutil.rmtree(run)  # a teacher of other settings (the run was resumed with new flags)
    b_it = base.branch_points[0]
    branch = None if variant == "vanilla" else branch_point(out / "vanilla", b_it)
    if branch is not None and not branch.exists():
        raise UserError("the vanilla teacher has no branch checkpoint; delete it and run again", branch)
    # an interrupted teacher continues from its own newest checkpoint; a new one starts (or branches)
    Trainer(dataset, run, cfg, resume=True, branch_from=branch, progress=progress).run(stop_at=stop_at)
    return ply


def _same_teacher(run: Path, cfg: TrainConfig) -> bool:
    """Whether the teacher run folder was trained with ``cfg`` (the device aside)."""
    try:
        old = TrainConfig.from_dict(json.loads((run / "config.json").read_text())).to_dict()
    except (OSError, ValueError, KeyError, TypeError):
        return False
    new = json.loads(dumps_json(cfg.to_dict(), indent=None))
    old = json.loads(dumps_json(old, indent=None))
    old.pop("device", None)
    new.pop("device", None)
    return old == new


def teacher_variant(path: Path) -> str:
    cfg = path.parent / "config.json"
    try:
        return json.loads(cfg.read_text())["variant"]
    except (OSError, ValueError, KeyError):
        return path.stem


def resolve_teacher(p: Path) -> Path:
    p = Path(p)
    if p.is_dir():
        p = p / "point_cloud.ply"
    if not p.exists():
        raise UserError("teacher model not found", p)
    return p


def teacher_wall_s(ply: Path) -> float | None:
    """Training wall time of a teacher run from its ``train_log.jsonl`` (segments of a resumed run
    added up; a branched run counts only its own iterations), or None without a log."""
    total, last = 0.0, 0.0
    try:
        lines = (Path(ply).parent / "train_log.jsonl").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            e = float(json.loads(line)["elapsed_s"])
        except (ValueError, KeyError, TypeError):
            continue
        if e < last:  # the run was resumed: a new segment starts
            total += last
        last = e
    return round(total + last, 1) if lines else None


def _metrics(m: dict) -> dict:
    return {k: m.get(k) for k in (*METRICS, "num_gaussians")}


def _cache_key(ply: Path, dataset) -> dict:
    st = Path(ply).stat()
    test = dataset.split("test")
    size = [test[0].camera.width, test[0].camera.height] if test else None
    return {
        "model": str(Path(ply).resolve()),
        "bytes": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "data": str(dataset.root),
        "test_views": len(test),
        "size": size,
    }


def evaluate_cached(scene, dataset, ply: Path, bank, device, progress, cache: Path | None = None) -> dict:
    """Evaluate on the test split, cached in ``cache`` (a file of the run folder, never beside an input
    model); the cache holds the model's size, time and the dataset it was measured on."""
    key = _cache_key(ply, dataset)
    if cache is not None and cache.exists():
        try:
            d = json.loads(cache.read_text())
            if d.get("key") == json.loads(dumps_json(key, indent=None)):
                return d["metrics"]
        except (ValueError, KeyError, AttributeError):
            pass
    m = evaluate_scene(scene.to(device), dataset, "test", lpips_bank=bank, progress=progress, model_path=ply)
    if cache is not None:
        write_json_atomic(cache, {"key": key, "metrics": m})
    return m


def teacher_cache(out: Path, ply: Path) -> Path:
    """Where a teacher's test metrics are cached: inside the run folder (OUT/cache/teachers/)."""
    import hashlib

    ply = Path(ply).resolve()
    try:  # a teacher of this run: named relative to it, so the same run elsewhere names it the same
        name = str(ply.relative_to(Path(out).resolve()))
    except ValueError:
        name = str(ply)
    h = hashlib.sha256(name.encode()).hexdigest()[:16]
    return Path(out) / "cache" / "teachers" / f"{Path(ply).parent.name}-{h}.json"


def finished_student(run: Path, cfg: StudentConfig, teacher_plys: Sequence[Path]) -> dict | None:
    """The record of a student trained to the end with ``cfg`` on these teachers, or None."""
    try:
        rec = json.loads((Path(run) / "student.json").read_text())
    except (OSError, ValueError):
        return None
    want = {"config": asdict(cfg), "teachers": [str(Path(p).resolve()) for p in teacher_plys]}
    want = json.loads(dumps_json(want, indent=None))
    if (
        not (Path(run) / "point_cloud.ply").exists()
        or rec.get("config") != want["config"]
        or rec.get("teachers") != want["teachers"]
    ):
        return None
    return rec


def train_student(
    dataset,
    teacher_plys: Sequence[Path],
    vanilla: Path,
    cfg: StudentConfig,
    out: Path,
    device,
    n_pseudo: int,
    progress: bool,
):
    teacher0 = load_model(vanilla)
    train_cams = [v.camera for v in dataset.split("train")]
    targets = None
    if cfg.lambda_kd > 0 and teacher_plys:
        teacher_plys, _ = select_teachers(teacher_plys, dataset, cfg.teacher_margin_db, device, progress)
        cams = train_cams + make_pseudo_cameras(train_cams, n_pseudo, dataset.extent, seed=cfg.seed)
        random_bg = resolve_background(cfg.background, dataset) == "random"
        targets = build_soft_targets(
            list(teacher_plys),
            cams,
            len(train_cams),
            fixed_background(resolve_background(cfg.background, dataset), dataset),
            device,
            spill_dir=out / "cache",
            progress=progress,
            with_alpha=random_bg,
            with_spread=cfg.kd_weight == "agreement",
            with_depth=cfg.lambda_depth > 0,
        )
    st = StudentTrainer(dataset, targets, teacher0, cfg, out, device, progress=progress)
    st.done_record = {"teachers": [str(Path(p).resolve()) for p in teacher_plys]}
    scene, _ = st.run()
    return scene, st.policy_stats


def ablation_runs(cfg: StudentConfig, plys: Sequence[Path], vanilla: Path) -> dict:
    """label -> (student config, teachers) of ``--ablation``: the same-budget rows, the configured
    student under "student" (one of the rows when it equals one: without a teacher term the teachers
    do not matter). Every row's config is valid (the ground-truth row drops the terms that need
    the teachers)."""
    kd = cfg.lambda_kd if cfg.lambda_kd > 0 else TEACHER_WEIGHT  # the teacher rows need a teacher term
    runs = {
        "gt_only": (replace(cfg, lambda_kd=0.0, lambda_depth=0.0, struct="none"), []),
        "one_teacher": (replace(cfg, lambda_kd=kd, struct="none"), [vanilla]),
        "three_teachers": (replace(cfg, lambda_kd=kd, struct="none"), plys),
        "three_teachers_joint": (replace(cfg, lambda_kd=kd, struct="joint"), plys),
        "three_teachers_pseudo": (replace(cfg, lambda_kd=kd, struct="none", kd_views="pseudo"), plys),
    }
    same = [k for k, (c, tp) in runs.items() if c == cfg and (list(tp) == list(plys) or c.lambda_kd == 0)]
    runs = {("student" if k in same else k): v for k, v in runs.items()}
    if not same:
        runs["student"] = (cfg, plys)
    return runs


def run_distill(
    data,
    out,
    teachers: Sequence[Path] | None = None,
    cfg: StudentConfig | None = None,
    teacher_iterations: int = 3000,
    downscale: int = 1,
    device: str = "auto",
    n_pseudo: int | None = None,
    ablation: bool = False,
    progress: bool = True,
    teacher_init_points: int = 20_000,
    teacher_background: str = "auto",
    train_views: int | None = None,
    teacher: TrainConfig | None = None,
) -> dict:
    cfg = (cfg or StudentConfig()).validate()
    if teacher_iterations < 1:
        raise UserError(f"--teacher-iterations must be at least 1, got {teacher_iterations}")
    out = Path(out)
    dev = pick_device(device)
    dataset = data if isinstance(data, Dataset) else load_dataset(data, downscale=downscale)
    dataset = with_train_views(dataset, train_views)  # sparse views: an evenly spaced subset
    if teachers:
        plys = [resolve_teacher(t) for t in teachers]
        for p in plys:  # before any work: a teacher must have Gaussians to render soft targets from
            if len(load_model(p)) == 0:
                raise UserError("the teacher model has no Gaussians", p)
    else:
        plys = train_teachers(
            dataset,
            out / "teachers",
            teacher_iterations,
            device,
            cfg.seed,
            progress,
            teacher_init_points,
            teacher_background,
            base=teacher,
        )
    variants = [teacher_variant(p) for p in plys]
    vanilla = plys[variants.index("vanilla")] if "vanilla" in variants else plys[0]
    n_pseudo = len(dataset.split("train")) if n_pseudo is None else n_pseudo
    bank = LPIPSBank()
    teacher_rows = []
    for v, p in zip(variants, plys):
        m = evaluate_cached(load_model(p), dataset, p, bank, dev, progress, cache=teacher_cache(out, p))
        teacher_rows.append({"variant": v, "path": str(p), **_metrics(m), "wall_s": teacher_wall_s(p)})
    summary = {"data": str(dataset.root), "teachers": teacher_rows, "student_config": cfg.__dict__}

    # label -> (config, teachers); the configured student is trained once, under "student"
    runs = ablation_runs(cfg, plys, vanilla) if ablation else {"student": (cfg, plys)}
    rows = {}
    for name, (c, tp) in runs.items():
        done = finished_student(out / name, c, tp)
        if done is not None:  # finished before an interruption: evaluated and summarised, not retrained
            scene, policy_stats, wall = load_model(out / name / "point_cloud.ply"), done["policy_stats"], done["wall_s"]
        else:
            t0 = time.perf_counter()
            scene, policy_stats = train_student(dataset, tp, vanilla, c, out / name, dev, n_pseudo, progress)
            wall = time.perf_counter() - t0
            rec = finished_student(out / name, c, tp)
            if rec is not None:  # the record keeps the whole time, soft targets included
                write_json_atomic(out / name / "student.json", {**rec, "wall_s": round(wall, 1)})
        m = evaluate_cached(
            scene, dataset, out / name / "point_cloud.ply", bank, dev, progress, cache=out / name / "metrics_cache.json"
        )
        write_json_atomic(out / name / "metrics.json", m)
        rows[name] = {
            **_metrics(m),
            "wall_s": round(wall, 1),
            "teachers": len(tp),
            "struct": c.struct if c.lambda_struct > 0 else "none",
            "prune_policy": policy_stats,
        }
    summary["student"] = rows["student"]
    if ablation:
        labels = {
            "gt_only": "ground truth only",
            "one_teacher": "one teacher",
            "three_teachers": "three teachers",
            "three_teachers_joint": "three teachers + joint",
            "three_teachers_pseudo": "three teachers, pseudo views only",
        }
        summary["ablation"] = {labels.get(k, k): v for k, v in rows.items() if k != "student"}
        same = [k for k in labels if k not in runs]  # the row the configured student is, if any
        if same:
            summary["ablation"][labels[same[0]] + " (student)"] = rows["student"]
    write_json_atomic(out / "summary.json", summary)
    write_report(out, dataset, summary, vanilla, out / "student" / "point_cloud.ply", dev)
    return summary
