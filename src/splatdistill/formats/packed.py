"""The packed ``.sdz`` scene codec (format ``splatdistill.gaussians.packed``): codebooks everywhere.

The same container as the plain codec (``container.py``: named arrays, zstd, byte planes,
checksums); what goes in follows PlayCanvas's SOG layout ideas (sorted attributes, k-means
codebooks; splat-transform's ``write-sog``), adapted to a byte-oriented entropy coder:

* **positions** and **order**: per axis, relative to the median, the SOG transform
  ``t = sign(x) ln(1 + |x|)`` (finer steps near the centre, where the content is), then
  ``position_bits`` (16) uniform bits over the range of t. The three codes of a Gaussian are
  interleaved into one Morton code (``morton.interleave``, 3 x ``position_bits`` bits), the
  Gaussians are sorted by it (so neighbours in the file are neighbours in space), and the file
  stores the **gaps** between consecutive sorted codes (uint64; the first gap is the first code).
  A sorted set of N codes in a space of 2^B has gaps near 2^B / N, about B - log2 N + 1.4 bits
  each (a geometric distribution), where per-axis differences along the curve cost more: the
  curve's jumps make all three axes' differences large at once. Measured on a 15.6k-Gaussian
  trained model: 39.8 kB against 51.0 kB at 11 bits, 69.3 kB against 80.5 kB at 16 bits
  (docs/benchmarks.md, "Measurements behind design choices"). Files written before
  (``sog_log_uniform_delta``: per-axis differences along the curve, mod 2^16) still decode.
* **rotations**: "smallest three": the largest-magnitude component of the unit quaternion is
  dropped (its sign made positive, q and -q being one rotation), the other three, each in
  [-1/sqrt 2, 1/sqrt 2], get ``quat_bits`` (8) uniform bits; the dropped index is a 2-bit code
  in its own byte section.
* **log-scales** and **SH DC**: one sorted 256-level 1-D k-means codebook per attribute shared
  by its three channels (``kmeans.scalar_codebook``; SOG's scales / colour tables), 8-bit codes.
* **opacity**: ``opacity_bits`` (8..12) uniform bits of sigmoid(opacity) over [0, 1].
* **SH rest** (degree >= 1): vector quantisation of each Gaussian's (K-1) x 3 rest coefficients:
  a palette of K codewords (k-means, ``kmeans.kmeans``, weighted by importance) and one uint8 /
  uint16 label per Gaussian (SOG: a 64k-entry palette); the palette's entries share one
  256-level scalar codebook (8-bit codes), as SOG's ``shN`` centroids do. ``vq_size = 0`` stores
  the rest coefficients directly as 8-bit codes of one scalar codebook instead.
  ``codebook_levels`` (default 256) sets the size of these scalar codebooks: fewer levels for
  smaller files, more (up to 65536, 16-bit codes) for finer values.

Every section is then zstd-compressed with the container's byte-plane filter. Decoding is exact
given the codes: ``decode_packed(encode_packed(s))`` is deterministic, and a file's decoded scene
is what ``model.ply`` holds.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from splatdistill.errors import UserError
from splatdistill.formats.container import write_container
from splatdistill.formats.kmeans import kmeans, scalar_assign, scalar_codebook
from splatdistill.formats.morton import deinterleave, interleave
from splatdistill.scene.gaussians import GaussianScene, num_sh_coeffs

FORMAT = "splatdistill.gaussians.packed"
VERSION = 1
_SQRT1_2 = 1.0 / math.sqrt(2.0)
_OPACITY_EPS = 1e-7
_CODES = [np.uint8, np.uint16]  # scalar-codebook codes: uint8 up to 256 levels, uint16 above


def _sog_t(x):
    return np.sign(x) * np.log1p(np.abs(x))


def _sog_inv(t):
    return np.sign(t) * np.expm1(np.abs(t))


def _uniform(x: np.ndarray, bits: int, lo=None, hi=None):
    lo = x.min(axis=0) if lo is None else np.asarray(lo, np.float64)
    hi = x.max(axis=0) if hi is None else np.asarray(hi, np.float64)
    top = (1 << bits) - 1
    span = np.where(hi > lo, hi - lo, 1.0)
    codes = np.clip(np.rint((x - lo) / span * top), 0, top)
    return codes.astype(np.uint8 if bits <= 8 else np.uint16), np.atleast_1d(lo), np.atleast_1d(hi)


def _deuniform(codes: np.ndarray, bits: int, lo, hi) -> np.ndarray:
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    top = (1 << bits) - 1
    return lo + codes.astype(np.float64) * ((hi - lo) / top)


def smallest_three(q: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """ "Smallest three" quaternion codes: the index of the largest component and the other three.

    Args:
        q: [N, 4] quaternions (w, x, y, z); normalised here.
        bits: Bits per code.

    Returns:
        ``(big, codes)``: [N] uint8 index of the largest component, and [N, 3] codes of the other
        three in order, uniform on [-1/sqrt 2, 1/sqrt 2].
    """
    q = np.asarray(q, np.float64)
    nrm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(nrm > 0, q / np.where(nrm > 0, nrm, 1), np.array([1.0, 0, 0, 0]))
    big = np.abs(q).argmax(axis=1)
    q = q * np.where(q[np.arange(len(q)), big] < 0, -1.0, 1.0)[:, None]
    rest = np.empty((len(q), 3))
    for c in range(4):
        sel = big == c
        rest[sel] = np.delete(q[sel], c, axis=1)
    codes, _, _ = _uniform(rest, bits, -_SQRT1_2, _SQRT1_2)
    return big.astype(np.uint8), codes


def from_smallest_three(big: np.ndarray, codes: np.ndarray, bits: int = 8) -> np.ndarray:
    """Quaternions from their "smallest three" codes (the inverse of ``smallest_three``).

    Args:
        big: [N] index of the largest component.
        codes: [N, 3] codes of the other three.
        bits: Bits per code.

    Returns:
        [N, 4] float64 quaternions (w, x, y, z), unit up to the codes' rounding, the largest
        component non-negative.
    """
    rest = _deuniform(codes, bits, -_SQRT1_2, _SQRT1_2)
    w = np.sqrt(np.maximum(0.0, 1.0 - (rest**2).sum(axis=1)))
    q = np.empty((len(big), 4))
    for c in range(4):
        sel = big == c
        cols = [k for k in range(4) if k != c]
        q[np.ix_(sel, cols)] = rest[sel]
        q[sel, c] = w[sel]
    return q


def encode_packed(
    scene: GaussianScene,
    importance: np.ndarray | None = None,
    vq_size: int = 4096,
    position_bits: int = 16,
    quat_bits: int = 8,
    opacity_bits: int = 8,
    seed: int = 0,
    extra_meta: dict | None = None,
    vq_labels: tuple[np.ndarray, np.ndarray] | None = None,
    codebook_levels: int = 256,
) -> tuple[dict[str, np.ndarray], dict]:
    """The sections and metadata of a packed ``.sdz`` for ``container.write_container``.

    Args:
        scene: The scene.
        importance: [N] weights of the SH palette's k-means, or None for uniform.
        vq_size: Most codewords of the SH palette.
        position_bits: Bits per position code.
        quat_bits: Bits per "smallest three" rotation code.
        opacity_bits: Bits per opacity code.
        seed: Seed of the k-means (deterministic).
        extra_meta: More metadata to store.
        vq_labels: ``(palette [P, (K-1)*3], labels [N])`` to reuse a fitted palette instead of fitting one.
        codebook_levels: Most levels of each scalar codebook (scales, SH DC, SH rest), 2..65536;
            the codes are uint8 up to 256 levels, uint16 above.

    Returns:
        ``(sections, meta)``: name -> numpy array, and the metadata (``format`` = ``FORMAT``).
    """
    scene.check_finite("scene")
    for name, b, lo, hi in (
        ("position_bits", position_bits, 8, 16),
        ("quat_bits", quat_bits, 4, 16),
        ("opacity_bits", opacity_bits, 4, 16),
        ("codebook_levels", codebook_levels, 2, 65536),
    ):
        if not lo <= int(b) <= hi:
            raise ValueError(f"{name} must be in {lo}..{hi}, got {b}")
    p = {k: v.detach().cpu().to(torch.float32).numpy() for k, v in scene.items()}
    n, deg = len(scene), scene.sh_degree
    sections: dict[str, np.ndarray] = {}
    attrs: dict = {}

    m64 = p["means"].astype(np.float64)
    origin = (np.median(m64, axis=0) if n else np.zeros(3)).astype(np.float32).astype(np.float64)
    t = _sog_t(m64 - origin)
    codes, lo, hi = _uniform(t, position_bits) if n else (np.zeros((0, 3), np.uint16), np.zeros(3), np.zeros(3))
    keys = interleave(codes)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    p = {k: v[order] for k, v in p.items()}
    sections["means_gaps"] = np.diff(keys, prepend=np.zeros(1, np.uint64)) if n else keys
    attrs["means"] = {
        "encoding": "sog_log_uniform_morton_gaps",
        "bits": int(position_bits),
        "origin": origin.tolist(),
        "lo": lo.tolist(),
        "hi": hi.tolist(),
    }

    big, qc = smallest_three(p["quats"], quat_bits)
    sections["quats_index"], sections["quats_rest"] = big, qc
    attrs["quats"] = {"encoding": "smallest_three", "bits": int(quat_bits)}

    for name, x in (("scales", p["scales"]), ("sh0", p["sh0"].reshape(n, 3))):
        levels = scalar_codebook(x, int(codebook_levels), seed=seed)
        sections[f"{name}_codebook"] = levels.astype(np.float32)
        sections[name] = scalar_assign(x, levels)
    attrs["scales"] = {"encoding": "scalar_codebook"}
    attrs["sh0"] = {"encoding": "scalar_codebook"}

    alpha = 1.0 / (1.0 + np.exp(-p["opacities"].astype(np.float64)))
    oc, _, _ = _uniform(alpha, opacity_bits, 0.0, 1.0)
    sections["opacities"] = oc
    attrs["opacities"] = {"encoding": "sigmoid_uniform", "bits": int(opacity_bits)}

    k_rest = num_sh_coeffs(deg) - 1
    if k_rest:
        rest = p["shN"].reshape(n, k_rest * 3)
        if vq_labels is not None:
            palette = np.asarray(vq_labels[0], np.float32)[:, : k_rest * 3]
            labels = np.asarray(vq_labels[1]).reshape(-1)[order]
        elif vq_size and n:
            w = None if importance is None else np.asarray(importance, np.float64).reshape(-1)[order]
            palette, labels = kmeans(rest, int(vq_size), w, seed=seed)
        else:
            palette, labels = None, None
        if palette is not None:
            levels = scalar_codebook(palette, int(codebook_levels), seed=seed)
            sections["shN_levels"] = levels.astype(np.float32)
            sections["shN_palette"] = scalar_assign(palette, levels)
            sections["shN_labels"] = labels.astype(
                np.uint8 if len(palette) <= 256 else np.uint16 if len(palette) <= 65536 else np.uint32
            )
            attrs["shN"] = {"encoding": "palette", "size": int(len(palette))}
        else:
            levels = scalar_codebook(rest, int(codebook_levels), seed=seed)
            sections["shN_levels"] = levels.astype(np.float32)
            sections["shN"] = scalar_assign(rest, levels)
            attrs["shN"] = {"encoding": "scalar_codebook"}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "count": int(n),
        "sh_degree": int(deg),
        "order": "morton",
        "antialiased": bool(scene.antialiased),
        "attributes": attrs,
    }
    if extra_meta is not None:
        meta["extra"] = extra_meta
    return sections, meta


def _fail(msg: str):
    raise UserError(f"invalid packed .sdz scene: {msg}")


def _get(sections, name, shape, dtypes):
    a = sections.get(name)
    if a is None:
        _fail(f"section '{name}' is missing")
    if shape is not None and tuple(a.shape) != tuple(shape):
        _fail(f"section '{name}' has shape {tuple(a.shape)}, expected {tuple(shape)}")
    if np.dtype(a.dtype) not in [np.dtype(d) for d in dtypes]:
        _fail(f"section '{name}' has dtype {a.dtype}")
    return a


def _levels(sections, name):
    lv = _get(sections, name, None, [np.float32])
    if lv.ndim != 1 or lv.size == 0 or not np.isfinite(lv).all():
        _fail(f"section '{name}' is not a finite 1-D table")
    return lv.astype(np.float64)


def _lookup(lv, codes, name):
    if codes.size and int(codes.max()) >= len(lv):
        _fail(f"'{name}' has a code beyond its table")
    return lv[codes.astype(np.int64)]


def decode_packed(sections: dict, meta: dict) -> GaussianScene:
    """The scene stored by ``encode_packed``.

    Args:
        sections: Name -> numpy array, as read from the container.
        meta: The container's metadata.

    Returns:
        A float32 CPU ``GaussianScene`` in the file's (Morton) order.
    """
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        _fail(f"unsupported format {meta.get('format')!r} version {meta.get('version')!r}")
    n, deg, attrs = meta.get("count"), meta.get("sh_degree"), meta.get("attributes")
    if not isinstance(n, int) or n < 0 or not isinstance(deg, int) or not 0 <= deg <= 3 or not isinstance(attrs, dict):
        _fail("invalid count, SH degree or attributes")
    try:
        a = attrs["means"]
        bits = int(a["bits"])
        if not 1 <= bits <= 16:
            _fail(f"position bits {bits} outside 1..16")
        if a["encoding"] == "sog_log_uniform_morton_gaps":
            gaps = _get(sections, "means_gaps", (n,), [np.uint64])
            top = np.uint64((1 << (3 * bits)) - 1)
            if gaps.size and gaps.max() > top:
                _fail("a position gap beyond the Morton code range")
            # the codes are the running sums; in float64 every partial sum of a valid file (<= top < 2^48)
            # is exact, and one that would wrap the uint64 sum is far above top
            if gaps.size and float(gaps.astype(np.float64).sum()) > float(top):
                _fail("position codes beyond their bit count")
            keys = np.cumsum(gaps, dtype=np.uint64)
            codes = deinterleave(keys).astype(np.int64)
        elif a["encoding"] == "sog_log_uniform_delta":  # files written before the Morton gaps
            delta = _get(sections, "means_delta", (n, 3), [np.uint16]).astype(np.int64)
            codes = np.cumsum(delta, axis=0) % (1 << 16)
        else:
            _fail(f"unknown position encoding {a['encoding']!r}")
        if codes.size and int(codes.max()) > (1 << bits) - 1:
            _fail("position codes beyond their bit count")
        means = _sog_inv(_deuniform(codes, bits, a["lo"], a["hi"])) + np.asarray(a["origin"], np.float64)
        qb = int(attrs["quats"]["bits"])
        big = _get(sections, "quats_index", (n,), [np.uint8])
        if big.size and int(big.max()) > 3:
            _fail("quaternion index beyond 3")
        quats = from_smallest_three(big, _get(sections, "quats_rest", (n, 3), [np.uint8, np.uint16]), qb)
        scales = _lookup(_levels(sections, "scales_codebook"), _get(sections, "scales", (n, 3), _CODES), "scales")
        sh0 = _lookup(_levels(sections, "sh0_codebook"), _get(sections, "sh0", (n, 3), _CODES), "sh0")
        ob = int(attrs["opacities"]["bits"])
        al = _deuniform(_get(sections, "opacities", (n,), [np.uint8, np.uint16]), ob, 0.0, 1.0)
        al = np.clip(al, _OPACITY_EPS, 1 - _OPACITY_EPS)
        opac = np.log(al / (1 - al))
        k_rest = num_sh_coeffs(deg) - 1
        if k_rest:
            lv = _levels(sections, "shN_levels")
            if attrs["shN"]["encoding"] == "palette":
                size = int(attrs["shN"]["size"])
                pal = _lookup(lv, _get(sections, "shN_palette", (size, k_rest * 3), _CODES), "shN palette")
                lab = _get(sections, "shN_labels", (n,), [np.uint8, np.uint16, np.uint32])
                if lab.size and int(lab.max()) >= size:
                    _fail("'shN' label beyond the palette")
                shN = pal[lab.astype(np.int64)]
            else:
                shN = _lookup(lv, _get(sections, "shN", (n, k_rest * 3), _CODES), "shN")
        else:
            shN = np.zeros((n, 0))
    except (KeyError, TypeError, ValueError) as e:
        _fail(f"malformed attribute description ({e})")
    t = lambda x, shape: torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).reshape(shape)))  # noqa: E731
    return GaussianScene(
        t(means, (n, 3)),
        t(quats, (n, 4)),
        t(scales, (n, 3)),
        t(opac, (n,)),
        t(sh0, (n, 1, 3)),
        t(shN, (n, k_rest, 3)),
        antialiased=bool(meta.get("antialiased", False)),
    )


def save_packed(scene: GaussianScene, path, level: int = 19, **opts) -> Path:
    """Encode ``scene`` packed and write it as an ``.sdz`` container.

    Args:
        scene: The scene.
        path: The output file.
        level: zstd level.
        **opts: Keyword arguments of ``encode_packed``.

    Returns:
        ``path`` as a ``Path``.
    """
    sections, meta = encode_packed(scene, **opts)
    write_container(path, sections, meta, level=level)
    return Path(path)


def is_packed(meta) -> bool:
    """Whether a container's metadata is that of a packed scene.

    Args:
        meta: The metadata read from a container.

    Returns:
        True for ``meta["format"] == FORMAT``.
    """
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def section_bytes(path: str | os.PathLike) -> dict[str, int]:
    """Stored (compressed) bytes per section of a container file (for size breakdowns).

    Args:
        path: The ``.sdz`` file.

    Returns:
        Section name -> stored bytes.
    """
    from splatdistill.formats.container import read_container_header

    return {s["name"]: int(s["stored_nbytes"]) for s in read_container_header(path)["sections"]}
