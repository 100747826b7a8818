"""Checkpoints: written atomically, the newest readable one is used to resume (even after kill -9)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from splatdistill.errors import UserError
from splatdistill.fileio import atomic_path

_NAME = re.compile(r"^ckpt_(\d{7})\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "ckpt"


def save_checkpoint(run_dir: Path, iteration: int, payload: dict, keep: int = 2) -> Path:
    d = checkpoint_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"ckpt_{iteration:07d}.pt"
    with atomic_path(path) as tmp:
        torch.save({"iteration": iteration, **payload}, tmp)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def save_branch_point(run_dir: Path, iteration: int, payload: dict) -> Path:
    """A checkpoint kept for branching other runs from (never pruned)."""
    path = checkpoint_dir(run_dir) / f"branch_{iteration:07d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"iteration": iteration, **payload}, tmp)
    return path


def branch_point(run_dir: Path, iteration: int) -> Path:
    return checkpoint_dir(run_dir) / f"branch_{iteration:07d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _NAME.match(p.name))


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise UserError("checkpoint not found", path) from None
    except Exception as e:  # truncated or not a checkpoint
        raise UserError(f"not a readable checkpoint ({type(e).__name__})", path) from None


def latest_checkpoint(run_dir: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads; unreadable ones (should never exist, writes are atomic) are skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path)
        except UserError:
            continue
    return None


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file, or the newest checkpoint of a run directory."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise UserError("no checkpoint in this run directory", path)
        return found[-1]
    if not path.exists():
        raise UserError("checkpoint not found", path)
    return path


def truncate_log(path: Path, upto: int) -> None:
    """On resume, drop the JSON-lines log records past the iteration the run continues from."""
    path = Path(path)
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["iteration"] <= upto:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    with atomic_path(path) as tmp:
        tmp.write_text("".join(k + "\n" for k in keep))
