"""``compress``'s output files: checked before the work, committed together after it.

* ``preflight`` runs in the first seconds of ``compress``: it checks that the output folder can be
  created and written (a probe file), that no output name is taken by a folder, and encodes and
  decodes the input model once through every writer the run will use — the ``.sdz`` codec with the
  run's SH degree, bit depths, colour-VQ and residual-VQ layout (in memory, fast zstd level), then
  ``.ply`` and ``.spz`` written to temporary files in the output folder and read back. A codec or
  path problem is then a one-line error before any optimisation instead of after it.
* ``StagedOutputs`` writes every output under a temporary name in the output folder and renames
  them onto their final names only once all of them are written and read back (``commit``). A
  failure before the commit removes the temporary files; a failure during it removes the final
  files it had already renamed. Nothing half-written or unreadable is left under a final name.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from pathlib import Path

import numpy as np

from splatdistill.errors import UserError
from splatdistill.scene.gaussians import GaussianScene


class StagedOutputs:
    """Temporary paths for the final files ``out / name``; ``commit`` renames them into place."""

    def __init__(self, out_dir: Path):
        self.out = Path(out_dir)
        self.staged: dict[Path, Path] = {}  # final -> temporary

    def path(self, name: str) -> Path:
        """A fresh temporary path in the output folder standing for ``out / name`` (same suffix)."""
        final = self.out / name
        p = Path(name)
        tmp = self.out / f".{p.stem}.{secrets.token_hex(4)}.partial{p.suffix}"
        old = self.staged.get(final)
        if old is not None:
            _unlink(old)
        self.staged[final] = tmp
        return tmp

    def commit(self) -> list[Path]:
        """Rename every staged file onto its final name (in the order they were staged)."""
        done: list[Path] = []
        try:
            for final, tmp in self.staged.items():
                os.replace(tmp, final)
                done.append(final)
        except BaseException:
            for f in done:
                _unlink(f)
            self.discard()
            raise
        self.staged = {}
        return done

    def drop(self, name: str) -> None:
        """Forget (and remove) the staged file for ``out / name``."""
        tmp = self.staged.pop(self.out / name, None)
        if tmp is not None:
            _unlink(tmp)

    def final_name(self, error: UserError) -> UserError:
        """``error`` naming the final file instead of its temporary stand-in."""
        for final, tmp in self.staged.items():
            if error.path == str(tmp):
                return UserError(error.message, final)
        return error

    def discard(self) -> None:
        for tmp in self.staged.values():
            _unlink(tmp)
        self.staged = {}

    def __enter__(self) -> "StagedOutputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.discard()  # no-op after a commit


def _unlink(p: Path) -> None:
    with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
        p.unlink()


def check_outputs(out: Path, names: list[str]) -> None:
    """The output folder exists or can be created and accepts files (``fileio.check_output_dir``), and
    no ``out / name`` is a folder; the folder is created."""
    from splatdistill.fileio import check_output_dir

    out = check_output_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the output folder ({e.strerror or e})", out) from None
    for name in names:
        if (out / name).is_dir():
            raise UserError("is a directory; the output file cannot be written", out / name)


def vq_layout(n: int, k: int, ratio: float, points_per_codeword: int) -> tuple[int, int, bool]:
    """(VQ'd Gaussians, effective codebook size, skipped) of the colour VQ of ``n`` Gaussians."""
    n_vq = int(math.floor(ratio * n))
    k_eff = min(int(k), max(1, n_vq // points_per_codeword))
    return n_vq, k_eff, n_vq < 2 * points_per_codeword


def probe_codec_inputs(scene: GaussianScene, settings: dict, n_after_prune: int, points_per_codeword: int) -> dict:
    """``encode_scene`` keyword arguments with the layout the run will produce, for ``scene``
    (truncated to the run's SH degree): the colour VQ's codebook size and index type (the layout of
    ``n_after_prune`` Gaussians applied to all of ``scene``'s, so every value is encoded) and the
    residual VQ's stages; codewords are taken from the scene's own values."""
    from splatdistill.formats.sdz import canonical_quats, color_features

    s = settings
    n = len(scene)
    opts: dict = {"bits": s["bits"], "position": s["position"]}
    n_vq, k_eff, skipped = vq_layout(n_after_prune, s["vq_size"], s["vq_ratio"], points_per_codeword)
    if not skipped and n:
        keep = np.ones(n, dtype=bool)
        keep[n - min(n_vq, n) :] = False
        feats = color_features(scene)
        cb = feats[np.arange(k_eff) % n]
        assign = np.arange(int((~keep).sum())) % k_eff
        opts["vq"] = {"codebook": cb, "assign": assign, "keep_mask": keep, "kept_encoding": s["kept_encoding"]}
    if s["rvq_stages"] > 0:
        k_rvq = min(int(s["rvq_size"]), max(1, n_after_prune // points_per_codeword))
        rvq = {}
        for name, x in (
            ("scales", scene.scales.detach().cpu().numpy()),
            ("quats", canonical_quats(scene.quats.detach().cpu().numpy()).astype(np.float32)),
        ):
            books = np.zeros((s["rvq_stages"], k_rvq, x.shape[1]), dtype=np.float32)
            if n:
                books[0] = x[np.arange(k_rvq) % n]
            idx = np.zeros((n, s["rvq_stages"]), dtype=np.int64)
            idx[:, 0] = np.arange(n) % k_rvq
            rvq[name] = (books, idx)
        opts["rvq"] = rvq
    return opts


def preflight(
    scene: GaussianScene,
    out: Path,
    settings: dict,
    n_after_prune: int,
    write_spz: bool,
    points_per_codeword: int,
    spz_version: int = 4,
) -> dict:
    """Check the output folder and run ``scene`` through every writer ``compress`` will use (see the
    module docstring). Returns what it checked; raises ``UserError`` naming the output file."""
    from splatdistill.formats.container import decode_container, encode_container
    from splatdistill.formats.ply import read_ply, write_ply
    from splatdistill.formats.sdz import decode_scene, encode_scene
    from splatdistill.formats.spz import read_spz
    from splatdistill.formats.spz import write_spz as spz_writer

    names = ["model.sdz", "model.ply", "summary.json"] + (["model.spz"] if write_spz else [])
    check_outputs(out, names)
    probe = scene.detach().to("cpu").with_sh_degree(settings["sh_degree"])
    opts = probe_codec_inputs(probe, settings, n_after_prune, points_per_codeword)
    target = out / "model.sdz"
    try:
        sections, meta = encode_scene(probe, **opts)
        back = decode_scene(*decode_container(encode_container(sections, meta, level=1), target))
    except UserError as e:
        raise UserError(f"the model cannot be stored with these settings: {e.message}", target) from None
    if len(back) != len(probe) or back.sh_degree != probe.sh_degree:
        raise UserError("the .sdz codec does not give the model back (a bug)", target)
    checked = {"sdz": True}
    with StagedOutputs(out) as staged:
        tmp = staged.path("model.ply")
        try:
            write_ply(back, tmp)
            read_ply(tmp)
        except UserError as e:
            raise UserError(e.message, out / "model.ply") from None
        except OSError as e:
            raise UserError(f"cannot write ({e.strerror or e})", out / "model.ply") from None
        checked["ply"] = True
        if write_spz:
            tmp = staged.path("model.spz")
            try:  # an SPZ problem is reported in summary.json, not fatal (as at the end of the run)
                spz_writer(probe, tmp, version=spz_version, antialiased=probe.antialiased)
                read_spz(tmp)
                checked["spz"] = True
            except UserError as e:
                checked["spz"] = e.message
            except OSError as e:
                raise UserError(f"cannot write ({e.strerror or e})", out / "model.spz") from None
    return checked
