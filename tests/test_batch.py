"""``splatdistill batch``: jobs as Ray tasks on a local 2-CPU instance give the files of the single
commands; a killed worker's job is retried and resumes; finished jobs are skipped; a bad job fails
alone; flags are checked before anything runs; without Ray the jobs run one after another."""

import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli

# one Ray instance for the module: keep its tests on one xdist worker (`--dist loadgroup` in make test)
pytestmark = pytest.mark.xdist_group("ray")

COMPRESS = ["--iterations", "8", "--views", "4", "--resolution", "24", "--no-lpips"]
DISTILL = [
    "--teacher-iterations",
    "40",
    "--iterations",
    "20",
    "--keep",
    "0.3",
    "--pseudo-views",
    "2",
    "--teacher-init-points",
    "300",
]
# values that are measured times (or memory) and so differ between any two runs
TIMING_KEYS = {
    "mtime_ns",
    "peak_rss_bytes",
    "timings_s",
    "wall_s",
    "elapsed_s",
    "render_ms",
    "fps",
    "peak_memory_bytes",
    "seconds",
}


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    """One local Ray instance with 2 CPUs for the whole module."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'splatdistill[ray]')")
    from splatdistill.commands import batch

    old = os.environ.get("SPLATDISTILL_CACHE")
    os.environ["SPLATDISTILL_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")  # the workers' too
    started = batch.init_ray(None, 2)
    # warm both workers (imports, compiled kernels) while the first test runs its references here
    warm_dir = tmp_path_factory.mktemp("warm")
    _write_model(warm_dir / "w.ply", 60, 1, 9)
    warm = ray.remote(num_cpus=1)(_warm_up)
    refs = [warm.remote(str(warm_dir / "w.ply"), str(warm_dir / f"o{i}")) for i in range(2)]
    yield ray
    ray.wait(refs, num_returns=len(refs), timeout=0)
    if started:
        ray.shutdown()
    if old is None:
        os.environ.pop("SPLATDISTILL_CACHE", None)
    else:
        os.environ["SPLATDISTILL_CACHE"] = old


def _write_model(path, n, degree, seed):
    from splatdistill.formats.ply import write_ply
    from splatdistill.scene.gaussians import GaussianScene

    write_ply(GaussianScene.random_in_box(n, [-1, -1, -1], [1, 1, 1], sh_degree=degree, seed=seed), path)


def _warm_up(model, out):
    import contextlib
    import io

    from splatdistill.commands.compress import CompressCommand
    from splatdistill.compress.config import CompressConfig

    cmd = CompressCommand(Path(model), Path(out), cfg=CompressConfig(iterations=2, views=2, resolution=16, lpips=False))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cmd.run()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Three small models (SH degrees 1, 2, 3; written by the PLY writer) and a tiny dataset."""
    from splatdistill.data.demo_scene import make_demo_scene

    root = tmp_path_factory.mktemp("batch_inputs")
    models = root / "models"
    models.mkdir()
    for i, deg in enumerate((1, 2, 3)):
        _write_model(models / f"m{deg}.ply", 150 + 40 * i, deg, i)
    scenes = root / "scenes"
    make_demo_scene(scenes / "demo", resolution=24, train_views=4, test_views=1, seed=3)
    return models, scenes


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _plain(obj):
    import numpy as np
    import torch

    if isinstance(obj, torch.Tensor):
        return ("tensor", str(obj.dtype), tuple(obj.shape), obj.detach().cpu().contiguous().numpy().tobytes())
    if isinstance(obj, np.ndarray):
        return ("array", str(obj.dtype), obj.shape, obj.tobytes())
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _content(p: Path, root: Path):
    """A file as compared: bytes, except the measured times in JSON, JSON lines and Markdown tables,
    and the job's own folder in the paths that JSON files record."""
    if p.suffix == ".json":
        return _without_timings(json.loads(p.read_text().replace(str(root), "OUT")))
    if p.suffix == ".jsonl":
        return [_without_timings(json.loads(l)) for l in p.read_text().splitlines()]
    if p.suffix == ".pt":  # torch names the archive's folder after the (temporary) file: compare content
        import torch

        return _plain(torch.load(p, map_location="cpu", weights_only=False))
    if p.suffix == ".md":  # the report's last table column is the wall time
        return [re.sub(r"\|[^|]*\|$", "|", l) if l.startswith("|") else l for l in p.read_text().splitlines()]
    return p.read_bytes()


def assert_same_files(ref: Path, got: Path):
    def tree(d):
        return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and not p.name.startswith("batch_job"))

    assert tree(ref) == tree(got)
    for rel in tree(ref):
        assert _content(ref / rel, ref) == _content(got / rel, got), rel


def _table(out: Path) -> dict:
    doc = json.loads((out / "batch.json").read_text())
    return {r["name"]: r for r in doc["jobs"]}


def _stage_times(log: Path) -> tuple[float, float]:
    text = log.read_text()
    start = float(re.findall(r"^== batch \S+ \S+ pid \d+ start ([\d.]+)", text, re.M)[-1])
    end = float(re.findall(r"^== end done ([\d.]+)", text, re.M)[-1])
    return start, end


def test_batch_on_ray_gives_the_files_of_the_single_commands(ray_local, inputs, tmp_path, capsys):
    models, scenes = inputs
    # the reference: each job run by the single command, one after another
    ref = tmp_path / "ref"
    for m in sorted(models.iterdir()):
        assert run_cli(capsys, "compress", m, "--out", ref / m.stem, *COMPRESS)[0] == 0
    assert run_cli(capsys, "distill", scenes / "demo", "--out", ref / "demo", *DISTILL)[0] == 0

    out = tmp_path / "batch"
    code, stdout, err = run_cli(capsys, "batch", "compress", models, "--out", out, *COMPRESS)
    assert code == 0, err
    assert "| m1 | compress | done |" in stdout
    assert "running" in err and "3/3 done, 0 running, 0 failed" in err
    code, _, err = run_cli(capsys, "batch", "distill", scenes, "--out", out, *DISTILL)
    assert code == 0, err
    rows = _table(out)
    assert {n: r["status"] for n, r in rows.items()} == {"demo": "done"}
    assert rows["demo"]["metric"]["psnr"] > 0
    for name in ("m1", "m2", "m3", "demo"):
        assert_same_files(ref / name, out / name)
    # the distillation ran as a graph: the vanilla run to the branch point, the three teachers after
    # it, the student after all three
    d = out / "demo"
    trunk = _stage_times(d / "batch_job.trunk.log")
    teachers = [_stage_times(d / f"batch_job.{v}.log") for v in ("vanilla", "noise", "dropout")]
    student = _stage_times(d / "batch_job.log")
    assert all(trunk[1] <= t[0] for t in teachers)
    assert max(t[1] for t in teachers) <= student[0]
    # the table is strict JSON and Markdown
    json.loads((out / "batch.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert (out / "batch.md").read_text().startswith("| job | command | status |")

    # a rerun skips the finished jobs and writes nothing in their folders
    before = {p: p.stat().st_mtime_ns for p in (out / "m1").rglob("*")}
    code, _, err = run_cli(capsys, "batch", "compress", models, "--out", out, *COMPRESS)
    assert code == 0
    assert err.count("finished earlier, skipped") == 3
    assert {r["status"] for r in _table(out).values()} == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in (out / "m1").rglob("*")} == before
    # other flags are another job: it runs again
    code, _, err = run_cli(capsys, "batch", "compress", models / "m1.ply", "--out", out, *COMPRESS, "--prune", "0.5")
    assert code == 0 and _table(out)["m1"]["status"] == "done"


def test_a_bad_job_fails_alone_with_its_one_line_error(ray_local, inputs, tmp_path, capsys):
    models, _ = inputs
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a_good.ply").write_bytes((models / "m1.ply").read_bytes())
    (mixed / "b_bad.ply").write_bytes(b"ply\nformat ascii 1.0\nthis is not a model\n")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:  # a batch with a failed job exits 1
        run_cli(capsys, "batch", "compress", mixed, "--out", out, *COMPRESS)
    assert e.value.code == 1
    stdout, err = capsys.readouterr()
    rows = _table(out)
    assert rows["a_good"]["status"] == "done" and (out / "a_good" / "model.sdz").exists()
    assert rows["b_bad"]["status"] == "failed"
    assert "b_bad.ply" in rows["b_bad"]["error"] and "\n" not in rows["b_bad"]["error"]
    assert "Traceback" not in err and "| b_bad | compress | failed |" in stdout
    assert not (out / "b_bad" / "batch_job.json").exists()


def test_a_killed_worker_is_retried_and_the_job_resumes_from_its_checkpoint(ray_local, inputs, tmp_path, capsys):
    from splatdistill.commands import batch

    _, scenes = inputs
    flags = ["--iterations", "150", "--checkpoint-every", "10", "--init-points", "300", "--no-eval"]
    ref = tmp_path / "ref"
    assert run_cli(capsys, "train", scenes / "demo", "--out", ref, *flags)[0] == 0

    out = tmp_path / "out"
    jobs = batch.make_jobs([("demo", "train", scenes / "demo", flags)], out)
    log = jobs[0].log_path()
    result = {}
    t = threading.Thread(target=lambda: result.update(rows=batch.run_batch(jobs, out, quiet=True)[0]))
    t.start()
    pid, deadline = None, time.time() + 60
    while time.time() < deadline:  # the first attempt has written a checkpoint and is still training
        m = re.search(r"pid (\d+)", log.read_text()) if log.exists() else None
        if m and list((out / "demo" / "ckpt").glob("ckpt_*.pt")) and not (out / "demo" / "point_cloud.ply").exists():
            pid = int(m.group(1))
            break
        time.sleep(0.02)
    assert pid is not None, "the job never got going"
    os.kill(pid, signal.SIGKILL)
    t.join(120)
    assert result["rows"][0]["status"] == "done", result
    first, retry = log.read_text().split("(retry)")
    assert "pid" in first and "== end" not in first  # the first attempt died without an end line
    resumed_at = int(re.search(r"(\d+)/150", retry).group(1))  # the retry's progress bar starts there
    assert 0 < resumed_at < 150
    assert (out / "demo" / "point_cloud.ply").read_bytes() == (ref / "point_cloud.ply").read_bytes()


def test_bad_flags_are_one_line_and_nothing_runs(inputs, tmp_path, capsys):
    models, _ = inputs
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "batch", "compress", models, "--out", out, "--qualty", "small")
    assert_one_line_error(code, err, "batch compress", "--qualty")
    code, _, err = run_cli(capsys, "batch", "compress", models, "--out", out, "--quality", "tiny")
    assert_one_line_error(code, err, "tiny")
    code, _, err = run_cli(capsys, "batch", "eval", models, "--out", out)
    assert_one_line_error(code, err, "eval")
    code, _, err = run_cli(capsys, "batch", "compress", tmp_path / "nothing", "--out", out)
    assert_one_line_error(code, err, "nothing")
    assert not out.exists()


def test_manifest_jobs_and_sequential_without_ray(inputs, tmp_path, capsys, monkeypatch):
    models, _ = inputs
    manifest = tmp_path / "jobs.json"
    manifest.write_text(
        json.dumps(
            {
                "out": "runs",
                "jobs": [
                    {
                        "input": str(models / "m2.ply"),
                        "command": "compress",
                        "name": "m2_small",
                        "flags": {"quality": "small", "iterations": 8, "views": 4, "resolution": 24, "lpips": False},
                    },
                    {
                        "input": str(models / "m2.ply"),
                        "command": "compress",
                        "name": "m2_high",
                        "flags": ["--quality", "high", *COMPRESS],
                    },
                ],
            }
        )
    )
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, _, err = run_cli(capsys, "batch", "--manifest", manifest)
    assert code == 0, err
    warn = [l for l in err.splitlines() if l.startswith("splatdistill: warning:")]
    assert len(warn) == 1 and "Ray is not installed" in warn[0] and "one after another" in warn[0]
    rows = _table(tmp_path / "runs")
    assert {n: r["status"] for n, r in rows.items()} == {"m2_small": "done", "m2_high": "done"}
    small = json.loads((tmp_path / "runs" / "m2_small" / "summary.json").read_text())
    high = json.loads((tmp_path / "runs" / "m2_high" / "summary.json").read_text())
    assert small["settings"]["quality"] == "small" and high["settings"]["quality"] == "high"
    assert small["output_bytes"] < high["output_bytes"]
    # the same job by the single command gives the same files
    assert (
        run_cli(capsys, "compress", models / "m2.ply", "--out", tmp_path / "one", "--quality", "small", *COMPRESS)[0]
        == 0
    )
    assert_same_files(tmp_path / "one", tmp_path / "runs" / "m2_small")
