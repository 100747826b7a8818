"""What the commands share: argument markers, JSON and summary printing, paths as recorded in
``run.json``, and publishing a run's staged outputs."""

from __future__ import annotations

import os
from pathlib import Path

import tyro

Pos = tyro.conf.Positional
"""Marks a command field as a positional argument."""

STAGING = ".incomplete"
"""The folder inside OUT where ``compress`` writes before its outputs appear together."""


def print_json(obj) -> None:
    """Print ``obj`` as strict one-line JSON (NaN / infinity become null)."""
    from splatdistill.fileio import dumps_json

    print(dumps_json(obj, indent=None))


def fmt(v, spec: str = ".4f") -> str:
    """``v`` formatted with ``spec``, or ``n/a`` for None."""
    return "n/a" if v is None else format(v, spec)


def abs_path(p) -> str | None:
    """The absolute path of ``p`` as text (None stays None), as ``run.json`` records inputs."""
    return None if p is None else str(Path(p).resolve())


def summary_line(m: dict) -> str:
    """One line of an evaluation's metrics (``ops.evaluate.evaluate_scene``'s dict)."""
    return (
        f"{m.get('split', 'test')} PSNR {fmt(m['psnr'], '.2f')} dB, SSIM {fmt(m['ssim'])}, "
        f"LPIPS-VGG {fmt(m['lpips_vgg'])}, LPIPS-Alex {fmt(m['lpips_alex'])}, {m['num_gaussians']} Gaussians, "
        f"{fmt(m['render_ms'], '.1f')} ms/view"
    )


def publish(staging: Path, out: Path) -> None:
    """Move a finished run's outputs from the staging folder into ``out`` (replacing older ones) and
    remove the staging folder."""
    import shutil

    for p in sorted(staging.iterdir()):
        dest = out / p.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(p, dest)
    staging.rmdir()


def run_staged(out: Path, job) -> None:
    """Run ``job(staging)`` writing into ``OUT/.incomplete`` and publish its outputs into ``out`` when
    it returns; a failed job leaves no staging folder (one left by a killed run is removed first)."""
    import shutil

    staging = out / STAGING
    if staging.exists():
        shutil.rmtree(staging)  # what a killed run of ours left
    try:
        job(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-done stays (kill -9 leaves it to the next run)
        raise
    publish(staging, out)
