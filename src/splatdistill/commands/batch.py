"""``splatdistill batch``: run one command over many inputs, as Ray tasks (or one after another).

``batch COMMAND INPUTS... --out DIR [COMMAND's flags]`` makes one job per input (a model file for
``compress`` / ``render``, a dataset folder for ``distill`` / ``train``; a folder that is not itself
an input stands for the inputs in it) writing ``DIR/<input name>/``; ``batch --manifest jobs.json``
reads the jobs (input, command, flags, optional name) from a file. Every job runs the very command
the single command line runs (``commands.registry.COMMANDS``), as tyro parses it from its flags, so a
batch writes the same files as the commands run one by one (timings aside). The flags of every job are
parsed before any job starts.

Scheduling: each job is a Ray task that declares its CPUs, GPUs and memory (``job_resources``). A
distillation that trains its teachers is a small graph: the vanilla run up to the branch point, then
the three teachers side by side (each its own task: on a machine with several GPUs, one GPU each),
then the student, which finds the teachers finished (``distill.pipeline.train_teacher`` reuses them).

Faults: a job that finished has ``DIR/<name>/batch_job.json`` (written last, atomically) and is
skipped when the batch runs again with the same command, input and flags; a job that fails reports
its one-line error and the others go on; a task whose worker dies is run once more (Ray's
``max_retries``) and continues from the job's checkpoints (teachers, students, ``train --resume``).
Each job's output (progress bars, messages) goes to ``DIR/<name>/batch_job*.log``; the batch prints
its progress and, at the end, a table (``DIR/batch.md``, ``DIR/batch.json``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import re
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splatdistill.commands.common import Pos
from splatdistill.errors import UserError
from splatdistill.fileio import write_bytes_atomic, write_json_atomic

MARKER = "batch_job.json"
MODEL_SUFFIXES = (".ply", ".spz", ".sdz")
# command -> what its positional input is
BATCHABLE = {"compress": "model", "render": "model", "distill": "dataset", "train": "dataset"}
TEACHER_STAGES = ("trunk", "vanilla", "noise", "dropout")
GIB = 2**30


@dataclass
class Job:
    name: str
    command: str
    input: str
    flags: list[str]
    out: str
    cmd: Any = None  # the command (a ``commands.registry.COMMANDS`` dataclass), parsed by tyro from its flags
    run_id: str = ""
    replace: bool = False  # its folder holds a finished job of other flags (or --force): start it over

    def spec(self) -> dict:
        return {"command": self.command, "input": str(Path(self.input).resolve()), "flags": list(self.flags)}

    @property
    def dir(self) -> Path:
        return Path(self.out)

    def log_path(self, stage: str = "job") -> Path:
        return self.dir / ("batch_job.log" if stage == "job" else f"batch_job.{stage}.log")

    def dag(self) -> bool:
        """A distillation that trains its own teachers runs as trunk -> three teachers -> student."""
        return self.command == "distill" and not self.cmd.teachers


# ---- parsing --------------------------------------------------------------------------------------
def _tyro_message(text: str) -> str:
    """tyro's boxed error text as one line: the first paragraph below the title."""
    lines = [ln.strip(" │╭╮╰╯─-━┃").strip() for ln in text.splitlines()]
    body, started = [], False
    for ln in lines[1:]:
        if not ln:
            if started:
                break
            continue
        if ln.startswith("For full helptext"):
            break
        started = True
        body.append(ln)
    return " ".join(body) or (lines[0] if lines else "invalid flags")


def parse_job_args(command: str, input: str, out: str, flags: list[str]):
    """The command of one job (its ``commands.registry.COMMANDS`` dataclass), parsed from ``flags``
    with the same tyro machinery as the single command. Bad flags raise a one-line UserError."""
    import tyro

    from splatdistill.commands.registry import COMMANDS

    if command not in BATCHABLE:
        raise UserError(f"batch runs {', '.join(BATCHABLE)}; got '{command}'")
    if any(f == "--out" or f.startswith("--out=") for f in flags):
        raise UserError(f"batch {command}: --out is the batch's folder; each job writes DIR/<input name>/")
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            return tyro.cli(COMMANDS[command], args=[input, "--out", out, *flags], prog=f"splatdistill {command}")
    except SystemExit:
        raise UserError(f"batch {command}: {_tyro_message(buf.getvalue())}") from None


def _is_dataset(p: Path) -> bool:
    from splatdistill.data.dataset import detect_format

    try:
        detect_format(p)
        return True
    except UserError:
        return False


def expand_inputs(command: str, inputs: list[str]) -> list[tuple[str, Path]]:
    """(job name, input path) for each input; a folder that is not itself an input stands for the
    model files (or dataset folders) in it."""
    kind = BATCHABLE.get(command)
    if kind is None:
        raise UserError(f"batch runs {', '.join(BATCHABLE)}; got '{command}'")
    found: list[Path] = []
    for raw in inputs:
        before = len(found)
        p = Path(raw)
        if not p.exists():
            raise UserError("no such file or folder", p)
        if kind == "model":
            if p.is_file():
                found.append(p)
            else:
                found += sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in MODEL_SUFFIXES)
        elif _is_dataset(p):
            found.append(p)
        elif p.is_dir():
            found += sorted(q for q in p.iterdir() if q.is_dir() and _is_dataset(q))
        else:
            raise UserError("a dataset is a folder, not a file", p)
        if len(found) == before:
            raise UserError(
                f"no {'model files (.ply, .spz, .sdz)' if kind == 'model' else 'datasets'} in this folder", p
            )
    names = [q.stem if q.is_file() else q.name for q in found]
    return _unique(names, found)


def _unique(names: list[str], paths: list[Path]) -> list[tuple[str, Path]]:
    seen: dict[str, Path] = {}
    for n, p in zip(names, paths):
        if n in seen:
            raise UserError(
                f"two jobs would write the same folder '{n}' ({seen[n]} and {p}); give them names in a manifest", p
            )
        seen[n] = p
    return list(zip(names, paths))


def _flags_of(obj) -> list[str]:
    """Manifest flags: a list of strings as on the command line, or a mapping {flag: value}."""
    if isinstance(obj, list) and all(isinstance(x, str) for x in obj):
        return list(obj)
    if not isinstance(obj, dict):
        raise ValueError("flags must be a list of strings or an object")
    out: list[str] = []
    for k, v in obj.items():
        flag = "--" + str(k).lstrip("-").replace("_", "-")
        if isinstance(v, bool):
            out.append(flag if v else "--no-" + flag[2:])
        elif isinstance(v, list):
            out += [flag, *map(str, v)]
        elif v is not None:
            out += [flag, str(v)]
    return out


def load_manifest(path: Path) -> tuple[list[tuple[str, str, Path, list[str]]], str | None]:
    """[(name, command, input, flags)] and the manifest's ``out`` folder (or None). Relative paths
    are relative to the manifest's folder."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError("no such manifest", path) from None
    except (OSError, ValueError) as e:
        raise UserError(f"not a JSON manifest ({e})", path) from None
    jobs = doc.get("jobs") if isinstance(doc, dict) else doc
    if not isinstance(jobs, list) or not jobs:
        raise UserError(
            'a manifest is a list of jobs or {"out": DIR, "jobs": [...]}, each '
            '{"input": PATH, "command": NAME, "flags": [...]}',
            path,
        )
    base = path.parent
    entries, names, paths = [], [], []
    for i, j in enumerate(jobs):
        try:
            if not isinstance(j, dict) or not isinstance(j.get("input"), str) or not isinstance(j.get("command"), str):
                raise ValueError('needs "input" and "command" strings')
            flags = _flags_of(j.get("flags", []))
        except ValueError as e:
            raise UserError(f"job {i}: {e}", path) from None
        inp = Path(j["input"]) if Path(j["input"]).is_absolute() else base / j["input"]
        if not inp.exists():
            raise UserError(f"job {i}: no such input", inp)
        if j["command"] not in BATCHABLE:
            raise UserError(f"job {i}: batch runs {', '.join(BATCHABLE)}; got '{j['command']}'", path)
        name = str(j.get("name") or (inp.stem if inp.is_file() else inp.name))
        if not name or "/" in name or name.startswith("."):
            raise UserError(f"job {i}: bad name '{name}'", path)
        entries.append((j["command"], inp, flags))
        names.append(name)
        paths.append(inp)
    _unique(names, paths)
    out = doc.get("out") if isinstance(doc, dict) else None
    if out is not None:
        out = str(Path(out) if Path(out).is_absolute() else base / out)
    return [(n, c, i, f) for n, (c, i, f) in zip(names, entries)], out


def make_jobs(entries, out: Path) -> list[Job]:
    """Jobs with their flags parsed (all of them before any runs)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError("exists and is not a directory", out)
    run_id = uuid.uuid4().hex[:12]
    jobs = []
    for name, command, inp, flags in entries:
        jdir = out / name
        cmd = parse_job_args(command, str(inp), str(jdir), flags)
        jobs.append(Job(name, command, str(inp), list(flags), str(jdir), cmd, run_id))
    return jobs


# ---- one job (or one stage of a distillation), in whichever process runs it ------------------------
def read_marker(job: Job) -> dict | None:
    try:
        m = json.loads((job.dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return m if m.get("status") == "done" and m.get("spec") == job.spec() else None


def key_metric(job: Job) -> dict:
    """The number a user looks at first, from the files the command wrote."""

    def load(p):
        try:
            return json.loads(Path(p).read_text())
        except (OSError, ValueError):
            return {}

    if job.command == "compress":
        s = load(job.dir / "summary.json")  # (a --sweep writes sweep.json instead)
        return {k: s.get(k) for k in ("psnr", "ratio", "output_bytes") if k in s}
    if job.command == "distill":
        st = load(job.dir / "summary.json").get("student", {})
        return {k: st.get(k) for k in ("psnr", "num_gaussians") if k in st}
    if job.command == "train":
        m = load(job.dir / "metrics.json")
        return {k: m.get(k) for k in ("psnr", "num_gaussians") if k in m}
    return {}


def _set_threads() -> None:
    """Inside a Ray task: torch and numba use the CPUs the task was given, not the whole node."""
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:
        return
    if not cpus:
        return
    n = max(1, int(cpus))
    import torch

    torch.set_num_threads(n)
    with contextlib.suppress(Exception):
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def _one_line(e: BaseException) -> str:
    if isinstance(e, UserError):
        return str(e)
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def run_stage(job: Job, stage: str = "job", *deps: dict, in_ray: bool = False) -> dict:
    """Run ``stage`` of ``job`` here: "job" is the whole command (for a graph-scheduled
    distillation, its student once the teachers are done); "trunk" / "vanilla" / "noise" /
    "dropout" are the teacher stages. Never raises for the job's own errors: returns a record."""
    t0 = time.time()
    rec = {"name": job.name, "stage": stage, "status": "failed", "started": t0, "error": None}
    failed = [d for d in deps if isinstance(d, dict) and d.get("status") != "done"]
    if failed:
        rec.update(error=f"{failed[0]['stage']}: {failed[0]['error']}", ended=time.time())
        return rec
    if in_ray:
        _set_threads()
    log = job.log_path(stage)
    log.parent.mkdir(parents=True, exist_ok=True)
    header = f"== batch {job.run_id} {stage} "
    retry = _started(log, job.run_id, stage)
    with open(log, "a" if retry else "w", buffering=1) as f:  # a new batch run starts a new log
        f.write(f"{header}pid {os.getpid()} start {t0:.3f}{' (retry)' if retry else ''}\n")
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                if stage == "job":
                    _run_command(job, retry)
                else:
                    _run_teacher(job, stage)
            rec["status"] = "done"
        except BaseException as e:  # the job's error, whatever it is, is reported, not raised
            if isinstance(e, KeyboardInterrupt):
                raise
            rec["error"] = _one_line(e)
            if not isinstance(e, UserError):  # a bug: its traceback goes to the job's log
                traceback.print_exc(file=f)
            f.write(f"error: {rec['error']}\n")
        rec["ended"] = time.time()
        f.write(f"== end {rec['status']} {rec['ended']:.3f}\n")
    if stage == "job" and rec["status"] == "done":
        start = min([t0] + [d["started"] for d in deps if isinstance(d, dict)])
        rec["seconds"] = round(rec["ended"] - start, 2)
        rec["metric"] = key_metric(job)
        write_json_atomic(
            job.dir / MARKER,
            _strict({"status": "done", "spec": job.spec(), "seconds": rec["seconds"], "metric": rec["metric"]}),
        )
    return rec


def _run_command(job: Job, retry: bool) -> None:
    cmd = job.cmd
    if job.command == "train" and retry:
        cmd = dataclasses.replace(cmd, resume=True)  # a killed run continues from its newest checkpoint
    if job.replace and not retry and job.command != "distill":
        cmd = dataclasses.replace(cmd, overwrite=True)  # replaces the finished run of other flags in its folder
    if job.dag():
        cmd = dataclasses.replace(cmd, resume=True)  # the stages before trained its teachers into the run folder
    cmd.run()


def _run_teacher(job: Job, stage: str) -> None:
    """One teacher stage of a distillation, with the distill command's own settings."""
    from splatdistill.data.dataset import load_dataset
    from splatdistill.distill.pipeline import train_teacher

    c = job.cmd.cfg
    if c.teacher.iterations < 1:
        raise UserError(f"--teacher-iterations must be at least 1, got {c.teacher.iterations}")
    dataset = load_dataset(job.cmd.data, downscale=c.downscale)
    base = c.teacher_train_config()
    out = Path(job.cmd.out) / "teachers"
    b_it = base.branch_points[0]
    if stage == "trunk":
        train_teacher(dataset, out, "vanilla", base, stop_at=b_it)
        return
    train_teacher(dataset, out, stage, base)
    if stage == "vanilla" and b_it % base.checkpoint_every and b_it != base.iterations:
        # the trunk's stopping checkpoint, which the straight run does not write
        from splatdistill.train.checkpoint import checkpoint_dir

        (checkpoint_dir(out / "vanilla") / f"ckpt_{b_it:07d}.pt").unlink(missing_ok=True)


def job_device(job: Job) -> str:
    """The --device a job asked for."""
    cmd = job.cmd
    return getattr(cmd, "device", None) or getattr(cmd.cfg, "device", "auto")


# ---- resources --------------------------------------------------------------------------------------
def job_resources(job: Job, stage: str, gpus_available: bool, overrides: dict | None = None) -> dict:
    """Ray resource requests of one task: a teacher or a student takes a GPU when the cluster has
    GPUs (and the job does not ask for --device cpu); data-free compression takes a CPU; memory is a
    rough upper bound of what the job holds (scheduling only; Ray does not enforce it)."""
    on_gpu = gpus_available and job_device(job) != "cpu"
    if job.command == "compress":
        size = os.path.getsize(job.input) if os.path.isfile(job.input) else 0
        gpu = 1 if on_gpu and job.cmd.data is not None else 0
        mem = GIB + 40 * size
    elif job.command == "render":
        size = os.path.getsize(job.input) if os.path.isfile(job.input) else 0
        gpu, mem = (1 if on_gpu else 0), GIB // 2 + 20 * size
    else:  # train, distill and its stages
        gpu, mem = (1 if on_gpu else 0), 2 * GIB
    res = {"num_cpus": 1, "num_gpus": gpu, "memory": mem}
    for key, v in (overrides or {}).items():
        if v is not None:
            res[key] = v
    return res


def _fit(res: dict, nodes: list[dict]) -> dict:
    """Cap a request at the largest node, so that no task waits forever for a node that cannot exist."""
    out = dict(res)
    for key, name in (("num_cpus", "CPU"), ("num_gpus", "GPU"), ("memory", "memory")):
        cap = max((n.get(name, 0) for n in nodes), default=0)
        if out.get(key) and out[key] > cap:
            out[key] = cap if name != "memory" else int(cap)
    return out


# ---- progress and the table ---------------------------------------------------------------------------
_BAR = re.compile(r"^(?P<desc>[^|]*?):?\s*(?P<pct>\d+%)\|[^|]*\|\s*(?P<n>[\d.]+[kM]?/[\d.]+[kM]?)")


def last_progress(path: Path) -> str:
    """The newest progress-bar state in a job's log, e.g. 'train vanilla 40% 120/300'."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    for part in reversed(re.split(r"[\r\n]", tail)):
        m = _BAR.match(part.strip())
        if m:
            return f"{m['desc'].strip()} {m['pct']} {m['n']}".strip()
    return ""


def metric_text(m: dict | None) -> str:
    if not m:
        return ""
    bits = []
    if m.get("psnr") is not None:
        bits.append(f"PSNR {m['psnr']:.2f} dB")
    if m.get("ratio") is not None:
        bits.append(f"{m['ratio']:.1f}x")
    if m.get("num_gaussians") is not None:
        bits.append(f"{m['num_gaussians']} Gaussians")
    return ", ".join(bits)


class Progress:
    """One line per event on stderr: the batch's counts and what happened to which job; while jobs
    run, every ``every`` seconds the state of each running job (its newest progress bar)."""

    def __init__(self, jobs: list[Job], every: float = 15.0, stream=None, quiet: bool = False):
        self.jobs = {j.name: j for j in jobs}
        self.state = {j.name: "queued" for j in jobs}
        self.every, self.stream, self.quiet = every, stream or sys.stderr, quiet
        self.last = time.time()

    def counts(self) -> str:
        c = {s: sum(1 for v in self.state.values() if v == s) for s in ("done", "skipped", "running", "failed")}
        return f"{c['done'] + c['skipped']}/{len(self.state)} done, {c['running']} running, {c['failed']} failed"

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"batch: [{self.counts()}] {text}", file=self.stream, flush=True)

    def set(self, name: str, state: str, text: str) -> None:
        self.state[name] = state
        self.say(f"{name}: {text}")

    def poll(self) -> None:
        """Mark jobs whose log shows this run's header as running; report them periodically."""
        for name, st in self.state.items():
            if st == "queued":
                j = self.jobs[name]
                logs = [j.log_path(s) for s in ("job", *TEACHER_STAGES)]
                if any(_started(p, j.run_id) for p in logs):
                    self.set(name, "running", "started")
        if time.time() - self.last >= self.every:
            self.last = time.time()
            running = [n for n, s in self.state.items() if s == "running"]
            if running:
                parts = []
                for n in running:
                    j = self.jobs[n]
                    stages = ["job", *TEACHER_STAGES] if j.dag() else ["job"]
                    bars = [b for b in (last_progress(j.log_path(s)) for s in stages) if b]
                    parts.append(f"{n} ({'; '.join(bars) or 'starting'})")
                self.say("running: " + ", ".join(parts))


def _started(path: Path, run_id: str, stage: str = "") -> bool:
    """Whether this batch run has started the stage that logs to ``path`` (its header is there)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode(errors="replace")  # a log starts with this run's first header
    except OSError:
        return False
    return f"== batch {run_id} {stage}" in head


def _strict(obj):
    """JSON without NaN / Infinity (they become null)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def table_markdown(rows: list[dict]) -> str:
    lines = ["| job | command | status | seconds | key metric | error |", "|---|---|---|---:|---|---|"]
    for r in rows:
        sec = "" if r.get("seconds") is None else f"{r['seconds']:.1f}"
        err = (r.get("error") or "").replace("|", "\\|")
        lines.append(
            f"| {r['name']} | {r['command']} | {r['status']} | {sec} | {metric_text(r.get('metric'))} | {err} |"
        )
    return "\n".join(lines)


def write_table(out: Path, rows: list[dict], mode: str, wall_s: float) -> None:
    doc = _strict({"mode": mode, "wall_s": round(wall_s, 2), "jobs": rows})
    write_bytes_atomic(out / "batch.json", (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode())
    write_bytes_atomic(out / "batch.md", (table_markdown(rows) + "\n").encode())


# ---- the batch ----------------------------------------------------------------------------------------
def run_batch(
    jobs: list[Job],
    out: Path,
    *,
    ray_address: str | None = None,
    sequential: bool = False,
    ray_cpus: int | None = None,
    retries: int = 1,
    force: bool = False,
    overrides: dict | None = None,
    progress_every: float = 15.0,
    quiet: bool = False,
) -> tuple[list[dict], str]:
    """Run the jobs (skipping finished ones unless ``force``); returns (table rows, mode) where
    mode is "ray" or "sequential". Writes DIR/batch.md and DIR/batch.json."""
    from splatdistill.errors import warn

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prog = Progress(jobs, every=progress_every, quiet=quiet)
    rows: dict[str, dict] = {}
    todo = []
    for j in jobs:
        m = None if force else read_marker(j)
        if m is not None:
            rows[j.name] = {"status": "skipped", "seconds": m.get("seconds"), "metric": m.get("metric"), "error": None}
            prog.set(j.name, "skipped", "finished earlier, skipped")
        else:
            if (j.dir / MARKER).exists():
                j.replace = True
            (j.dir / MARKER).unlink(missing_ok=True)
            todo.append(j)
    mode = "sequential"
    if todo and not sequential:
        try:
            import ray  # noqa: F401

            mode = "ray"
        except ImportError:
            warn(
                f"Ray is not installed (pip install 'splatdistill[ray]'): running the {len(todo)} jobs one after "
                "another"
            )
    t0 = time.time()
    if todo:
        if mode == "ray":
            _run_ray(todo, prog, rows, ray_address, ray_cpus, retries, overrides)
        else:
            stop = threading.Event()
            watch = threading.Thread(
                target=lambda: [prog.poll() for _ in iter(lambda: stop.wait(1.0), True)], daemon=True
            )
            watch.start()
            try:
                for j in todo:
                    prog.set(j.name, "running", "started")
                    _finish(prog, rows, j, run_stage(j, "job"))
            finally:
                stop.set()
                watch.join()
    wall = time.time() - t0
    table = [{"name": j.name, "command": j.command, "input": j.input, **rows[j.name]} for j in jobs]
    write_table(out, table, mode, wall)
    if not quiet:
        prog.say(f"finished in {wall:.1f} s ({mode}); table: {out / 'batch.md'}")
    return table, mode


def _finish(prog: Progress, rows: dict, job: Job, rec: dict) -> None:
    if rec["status"] == "done":
        rows[job.name] = {"status": "done", "seconds": rec.get("seconds"), "metric": rec.get("metric"), "error": None}
        mt = metric_text(rec.get("metric"))
        prog.set(job.name, "done", f"done in {rec.get('seconds', 0):.1f} s" + (f", {mt}" if mt else ""))
    else:
        sec = None if rec.get("started") is None else round(rec.get("ended", time.time()) - rec["started"], 2)
        rows[job.name] = {"status": "failed", "seconds": sec, "metric": None, "error": rec.get("error")}
        prog.set(job.name, "failed", f"failed: {rec.get('error')}")


def init_ray(address: str | None, cpus: int | None) -> bool:
    """Join the cluster at ``address`` or start a local instance sized to this machine (Ray counts
    its CPUs and GPUs, container limits included); True when this call started it (and should stop it)."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
        return True
    # local workers import splatdistill the way this process did
    here = str(Path(__file__).resolve().parents[2])
    paths = [here] + [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    ray.init(
        num_cpus=cpus, include_dashboard=False, log_to_driver=False, object_store_memory=128 * 2**20
    )  # the tasks pass small records; outputs go to files
    return True


def _run_ray(jobs: list[Job], prog: Progress, rows: dict, address, cpus, retries: int, overrides) -> None:
    import ray

    started = init_ray(address, cpus)
    try:
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        gpus = any(n.get("GPU", 0) > 0 for n in nodes)
        task = ray.remote(run_stage)
        finals = {}
        for j in jobs:

            def opts(stage, j=j):
                return task.options(
                    **_fit(job_resources(j, stage, gpus, overrides), nodes),
                    max_retries=retries,
                    retry_exceptions=False,
                    name=f"{j.name}:{stage}",
                )

            if j.dag():
                trunk = opts("trunk").remote(j, "trunk", in_ray=True)
                teachers = [opts(v).remote(j, v, trunk, in_ray=True) for v in TEACHER_STAGES[1:]]
                ref = opts("job").remote(j, "job", *teachers, in_ray=True)
            else:
                ref = opts("job").remote(j, "job", in_ray=True)
            finals[ref] = j
        pending = list(finals)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in ready:
                j = finals[ref]
                try:
                    rec = ray.get(ref)
                except Exception as e:  # the worker died more often than retries allow, or a stage did
                    rec = {
                        "name": j.name,
                        "stage": "job",
                        "status": "failed",
                        "started": None,
                        "error": _ray_error(e, retries),
                    }
                _finish(prog, rows, j, rec)
            prog.poll()
    finally:
        if started:
            ray.shutdown()


def _ray_error(e: BaseException, retries: int) -> str:
    name = type(e).__name__
    if "WorkerCrashed" in name or "NodeDied" in name or "OutOfMemory" in name or "ActorDied" in name:
        return f"its worker died ({name}), also on the {retries} retr{'y' if retries == 1 else 'ies'}"
    return _one_line(e).splitlines()[0][:300]


# ---- the command line -----------------------------------------------------------------------------------
USAGE = """usage: splatdistill batch COMMAND INPUTS... --out DIR [COMMAND's flags] [batch options]
       splatdistill batch --manifest jobs.json [--out DIR] [batch options]

Run COMMAND (compress, render: model files; distill, train: dataset folders) on every input, each
job writing DIR/<input name>/ exactly as `splatdistill COMMAND INPUT --out DIR/<name> FLAGS` would.
A folder that is not itself an input stands for the inputs in it. Jobs run as Ray tasks (a local
Ray instance sized to this machine, or --ray-address); without Ray, one after another. Finished
jobs are skipped on a rerun; the table goes to DIR/batch.md and DIR/batch.json.

A manifest is {"out": DIR, "jobs": [{"input": PATH, "command": NAME, "flags": [...] or {...},
"name": FOLDER}, ...]} (or just the list); relative paths are relative to the manifest.

batch options:
  --out DIR             the batch's folder (required unless the manifest has "out")
  --manifest FILE       jobs from a JSON file instead of COMMAND INPUTS
  --ray-address ADDR    join this Ray cluster (default: start a local instance)
  --ray-cpus N          CPUs of the local instance (default: all of this machine's)
  --sequential          run the jobs one after another in this process, without Ray
  --force               run finished jobs again
  --retries N           reruns of a task whose worker died (default 1)
  --job-cpus N, --job-gpus N, --job-memory-gb X
                        override every task's resource request
  --progress-every S    seconds between progress reports of the running jobs (default 15)
"""

_OPTS = {
    "--out": str,
    "--manifest": str,
    "--ray-address": str,
    "--ray-cpus": int,
    "--retries": int,
    "--job-cpus": float,
    "--job-gpus": float,
    "--job-memory-gb": float,
    "--progress-every": float,
}
_SWITCHES = ("--sequential", "--force")


def parse_batch_args(argv: list[str]) -> tuple[dict, list[str]]:
    """The batch's own options, and the rest (COMMAND INPUTS... and the command's flags)."""
    opts: dict = {"sequential": False, "force": False}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        key, _, val = a.partition("=")
        if key in _OPTS:
            if not _:
                if i + 1 >= len(argv):
                    raise UserError(f"batch: {key} needs a value")
                val = argv[i + 1]
                i += 1
            try:
                opts[key[2:].replace("-", "_")] = _OPTS[key](val)
            except ValueError:
                raise UserError(f"batch: {key} expects {_OPTS[key].__name__}, got '{val}'") from None
        elif a in _SWITCHES:
            opts[a[2:]] = True
        else:
            rest.append(a)
        i += 1
    return opts, rest


def batch_main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        raise SystemExit(0)  # as every command's --help
    opts, rest = parse_batch_args(argv)
    if opts.get("manifest"):
        if rest:
            raise UserError(f"batch: with --manifest, give no COMMAND or INPUTS (got {' '.join(rest)})")
        entries, mout = load_manifest(Path(opts["manifest"]))
        out = opts.get("out") or mout
        if not out:
            raise UserError('batch: give --out DIR (or "out" in the manifest)', opts["manifest"])
    else:
        if not rest or rest[0].startswith("-"):
            raise UserError("batch: give COMMAND INPUTS... --out DIR (or --manifest FILE); see batch --help")
        command, rest = rest[0], rest[1:]
        n = next((i for i, a in enumerate(rest) if a.startswith("-")), len(rest))
        inputs, flags = rest[:n], rest[n:]
        if not inputs:
            raise UserError(f"batch {command}: give at least one input")
        out = opts.get("out")
        if not out:
            raise UserError(f"batch {command}: give --out DIR")
        entries = [(name, command, p, flags) for name, p in expand_inputs(command, inputs)]
    if opts.get("retries", 1) < 0:
        raise UserError("batch: --retries must be >= 0")
    jobs = make_jobs(entries, Path(out))
    overrides = {
        "num_cpus": opts.get("job_cpus"),
        "num_gpus": opts.get("job_gpus"),
        "memory": None if opts.get("job_memory_gb") is None else int(opts["job_memory_gb"] * GIB),
    }
    rows, _ = run_batch(
        jobs,
        Path(out),
        ray_address=opts.get("ray_address"),
        sequential=opts["sequential"],
        ray_cpus=opts.get("ray_cpus"),
        retries=opts.get("retries", 1),
        force=opts["force"],
        overrides=overrides,
        progress_every=opts.get("progress_every", 15.0),
    )
    print(table_markdown(rows))
    return 1 if any(r["status"] == "failed" for r in rows) else 0


@dataclass
class BatchCommand:
    """Run compress, render, distill or train on many inputs as Ray tasks (one after another without
    Ray): batch COMMAND INPUTS... --out DIR [COMMAND's flags], or batch --manifest jobs.json. Each job
    writes DIR/<input name>/ as the single command would; finished jobs are skipped on a rerun; the
    table of jobs goes to DIR/batch.md and DIR/batch.json. See batch --help."""

    args: Pos[list[str]] = field(default_factory=list)
    """COMMAND INPUTS... and the flags of COMMAND and of the batch (see batch --help)."""

    def run(self) -> None:
        code = batch_main(list(self.args))
        if code:
            raise SystemExit(code)
