"""Atomic file writes: a crash never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from splatdistill.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` that becomes ``path`` only if the block succeeds.

    On success the temporary file is fsynced and renamed onto ``path``; on any exception it is removed
    and ``path`` is left as it was. The parent folder is created if missing.

    Args:
        path: The final file.

    Returns:
        A context manager yielding the temporary ``Path`` to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_path``).

    Args:
        path: The file to write.
        data: Its whole content.

    Returns:
        None.
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Strict JSON (no NaN / Infinity; see ``dumps_json``), written atomically.

    Args:
        path: The file to write.
        obj: Any value ``dumps_json`` accepts (dicts, lists, numbers, numpy arrays and scalars, paths).

    Returns:
        None.
    """
    write_bytes_atomic(path, (dumps_json(obj, indent=2) + "\n").encode())


# --- strict JSON: every JSON file and every ``--json`` print goes through here --------------------------
# JSON has no Infinity or NaN (RFC 8259), and strict parsers reject them. A non-finite number is
# written as ``null`` and the reason goes into a ``<key>_note`` key beside it; an infinite PSNR means
# the two images are identical (mean squared error 0).
_NONFINITE_NOTES = {"psnr": "infinite: the images are identical (mean squared error 0)"}


def _nonfinite_note(key: str, value: float) -> str:
    if math.isnan(value):
        return "not a number"
    if key in _NONFINITE_NOTES or key.startswith("psnr") or key.endswith("psnr"):
        return _NONFINITE_NOTES["psnr"] if value > 0 else "negative infinity"
    return "infinite" if value > 0 else "negative infinity"


def _json_ready(obj):
    """``obj`` with non-finite floats replaced by None (and noted), numpy / torch scalars and arrays
    as Python values, paths as strings."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            k = str(k)
            if isinstance(v, (float, np.floating)) and not math.isfinite(float(v)):
                out[k] = None
                out.setdefault(f"{k}_note", _nonfinite_note(k, float(v)))
            else:
                out[k] = _json_ready(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return _json_ready(obj.tolist())
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # a torch tensor
        return _json_ready(obj.tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def dumps_json(obj, indent: int | None = 2) -> str:
    """Strict JSON text (``allow_nan=False``) of ``obj``.

    Non-finite numbers become ``null`` with a ``<key>_note`` beside them (see the note above); numpy
    arrays and scalars become lists and numbers, paths strings.

    Args:
        obj: The value to encode.
        indent: As for ``json.dumps``; ``None`` for one line.

    Returns:
        The JSON text.
    """
    return json.dumps(_json_ready(obj), indent=indent, allow_nan=False)


# --- output paths: checked before any work --------------------------------------------------------------
def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError:
        return False


def _nearest_existing(p: Path) -> Path:
    anc = p
    while not _exists(anc) and anc.parent != anc:
        anc = anc.parent
    return anc


def _probe_writable(folder: Path, named: Path, min_free_bytes: int = 0) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=".splatdistill-probe.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        where = "" if folder == named else f" (in {folder})"
        raise UserError(f"cannot write here{where}: {(e.strerror or str(e)).lower()}", named) from None
    if min_free_bytes > 0:
        try:
            st = os.statvfs(folder)
        except OSError:
            return
        free = st.f_bavail * st.f_frsize
        if free < min_free_bytes:
            raise UserError(
                f"not enough free space: {free / 1e6:.1f} MB free, about {min_free_bytes / 1e6:.1f} MB needed", named
            )


def check_output_dir(path: str | os.PathLike, min_free_bytes: int = 0) -> Path:
    """Check (before any work) that ``path`` is, or can be created as, a writable folder.

    A temporary file is really created and removed in it (or in its nearest existing ancestor), so a
    read-only mount or a missing permission shows here, for root too. Nothing is created.

    Args:
        path: The output folder.
        min_free_bytes: Fail when the file system has less free space than this (0: no check).

    Returns:
        ``path`` as a ``Path``. Raises ``UserError`` naming the path otherwise.
    """
    p = Path(path)
    if _exists(p):
        if not p.is_dir():
            raise UserError("exists and is not a folder", p)
        _probe_writable(p, p, min_free_bytes)
        return p
    anc = _nearest_existing(p.parent)
    if not anc.is_dir():
        raise UserError(f"cannot be created: {anc} is a file, not a folder", p)
    _probe_writable(anc, p, min_free_bytes)
    return p


def check_output_file(path: str | os.PathLike, min_free_bytes: int = 0) -> Path:
    """Check (before any work) that a file can be written at ``path``.

    ``path`` must not be a folder or end with a slash, and its folder must be writable or creatable
    (probed as in ``check_output_dir``). Nothing is created.

    Args:
        path: The output file.
        min_free_bytes: Fail when the file system has less free space than this (0: no check).

    Returns:
        ``path`` as a ``Path``. Raises ``UserError`` naming the path otherwise.
    """
    p = Path(path)
    if _exists(p) and p.is_dir():
        raise UserError("is a folder; expected a file name", p)
    if str(path).endswith(("/", os.sep)):
        raise UserError("names a folder (ends with a slash); expected a file name", p)
    parent = p.parent
    if _exists(parent):
        if not parent.is_dir():
            raise UserError(f"cannot be created: {parent} is a file, not a folder", p)
        _probe_writable(parent, p, min_free_bytes)
        return p
    anc = _nearest_existing(parent)
    if not anc.is_dir():
        raise UserError(f"cannot be created: {anc} is a file, not a folder", p)
    _probe_writable(anc, p, min_free_bytes)
    return p
