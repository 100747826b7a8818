"""Run folders: locked while a job writes them, never holding two runs' files at once.

A job that writes a folder (``train``, ``distill``, ``compress``, ``render``, ``demo``) holds
``OUT/.splatdistill.lock`` for as long as it runs: an advisory ``flock`` on a file that holds the
job's pid. A second job on the same folder fails at once with one line naming that pid; a lock left
by a process that died (even by ``kill -9``) is no longer held and is taken over.

``OUT/run.json`` records which command and settings the folder holds. A job into a folder holding
a run of other settings refuses, unless ``--resume`` (continue it, reusing what still matches) or
``--overwrite`` (remove that run's files first, then start over). The same command with the same
settings continues where it stopped (``distill``, ``compress``, ``render``, ``demo``); ``train`` asks
for ``--resume`` even then, since starting again from iteration 0 is the other reading.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Iterable

from splatdistill.errors import UserError
from splatdistill.fileio import check_output_dir, dumps_json, write_json_atomic

LOCK_NAME = ".splatdistill.lock"
MANIFEST = "run.json"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class FolderLock:
    """An exclusive advisory lock on a folder (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None

    def _busy(self, pid: int | None) -> UserError:
        who = f"pid {pid}" if pid else "another process"
        return UserError(
            f"another splatdistill job ({who}) is writing this folder; wait for it to finish or choose another --out",
            self.folder,
        )

    def acquire(self) -> "FolderLock":
        import fcntl

        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._busy(_read_pid(self.path)) from None
            except OSError as e:  # a file system without flock: fall back to the pid alone
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    os.close(fd)
                    raise
                pid = _read_pid(self.path)
                if pid and pid != os.getpid() and _pid_alive(pid):
                    os.close(fd)
                    raise self._busy(pid) from None
            try:  # the file may have been removed by its previous holder between open and flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd
            return self
        raise self._busy(_read_pid(self.path))

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class RunFolder:
    """Lock ``folder`` and settle which run it holds (see the module docstring).

    ``owned``: names (files, folders, glob patterns) of a run's files, removed by ``--overwrite``;
    any of them present (or ``run.json``) means the folder holds a run. ``continue_same``: the same
    command and settings continue without ``--resume``. After entering, ``state`` is ``"new"``,
    ``"continue"`` (same settings), ``"resume"`` or ``"overwrite"``.
    """

    def __init__(
        self,
        folder,
        command: str,
        config: dict,
        *,
        owned: Iterable[str] = (),
        resume: bool = False,
        overwrite: bool = False,
        continue_same: bool = True,
    ):
        self.folder = Path(folder)
        self.command, self.config = command, _normalise(config)
        self.owned = tuple(owned)
        self.resume, self.overwrite, self.continue_same = resume, overwrite, continue_same
        self.lock = FolderLock(self.folder)
        self.state = "new"

    def _existing(self) -> list[Path]:
        """The run's outputs present (a manifest alone, of a run that made nothing, does not count)."""
        found = []
        for name in self.owned:
            found.extend(
                sorted(self.folder.glob(name))
                if any(c in name for c in "*?[")
                else [self.folder / name]
                if (self.folder / name).exists()
                else []
            )
        return found

    def __enter__(self) -> "RunFolder":
        if self.resume and self.overwrite:
            raise UserError("give either --resume or --overwrite, not both")
        check_output_dir(self.folder)
        self.created = []  # folders made here, removed again if the job fails before writing anything
        d = self.folder
        while not d.exists() and d.parent != d:
            self.created.insert(0, d)
            d = d.parent
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            self._settle()
        except BaseException:
            self.lock.release()
            self._remove_created()
            raise
        return self

    def _remove_created(self) -> None:
        """Remove the (still empty) folders this job created, innermost first."""
        for d in reversed(self.created):
            try:
                d.rmdir()
            except OSError:
                break

    def _settle(self) -> None:
        existing = self._existing()
        manifest = None
        if (self.folder / MANIFEST).exists():
            try:
                import json

                manifest = json.loads((self.folder / MANIFEST).read_text())
            except (OSError, ValueError):
                manifest = None
        same = (
            isinstance(manifest, dict)
            and manifest.get("command") == self.command
            and manifest.get("config") == self.config
        )
        if not existing:
            self.state = "new"
        elif self.overwrite:
            for p in existing + [self.folder / MANIFEST]:
                if not p.exists():
                    continue
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
            self.state = "overwrite"
        elif self.resume:
            self.state = "resume"
        elif same and self.continue_same:
            self.state = "continue"
        else:
            if same:
                what = f"this {self.command} run"
            elif isinstance(manifest, dict) and manifest.get("command") == self.command:
                what = f"a {self.command} run with other settings"
            elif isinstance(manifest, dict) and manifest.get("command"):
                what = f"a {manifest.get('command')} run"
            else:
                what = "an earlier run"
            hint = (
                "add --resume to continue it or --overwrite to start over"
                if self._can_resume
                else "add --overwrite to replace it"
            )
            raise UserError(f"holds {what} ({existing[0].name}); {hint}", self.folder)
        write_json_atomic(self.folder / MANIFEST, {"command": self.command, "config": self.config})

    _can_resume = True

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self._existing():  # failed before making anything: leave no trace
            (self.folder / MANIFEST).unlink(missing_ok=True)
            self.lock.release()
            self._remove_created()
            return
        self.lock.release()


def _normalise(config: dict) -> dict:
    """The settings as they read back from run.json (so a comparison is exact)."""
    import json

    return json.loads(dumps_json(config, indent=None))


def run_folder(
    folder,
    command: str,
    config: dict,
    *,
    owned: Iterable[str] = (),
    resume: bool = False,
    overwrite: bool = False,
    continue_same: bool = True,
    can_resume: bool = True,
) -> RunFolder:
    rf = RunFolder(
        folder, command, config, owned=owned, resume=resume, overwrite=overwrite, continue_same=continue_same
    )
    rf._can_resume = can_resume
    return rf
