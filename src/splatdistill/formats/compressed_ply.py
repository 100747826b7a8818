"""The SuperSplat / PlayCanvas *compressed PLY*: ``read_compressed_ply`` / ``write_compressed_ply``.

Layout, as PlayCanvas splat-transform reads and writes it (``src/lib/readers/decompress-ply.ts``,
``src/lib/writers/write-compressed-ply.ts``, ``compressed-chunk.ts``; read, not copied): a binary
little-endian PLY with

* ``element chunk C`` (C = ceil(N / 256)): float32 ``min_x min_y min_z max_x max_y max_z
  min_scale_x min_scale_y min_scale_z max_scale_x max_scale_y max_scale_z`` and, optionally,
  ``min_r min_g min_b max_r max_g max_b`` — the range of position, log-scale and colour over the
  chunk's 256 splats (log-scales clamped to [-20, 20]; colour = ``0.5 + SH_C0 * f_dc``);
* ``element vertex N``: uint32 ``packed_position packed_rotation packed_scale packed_color``:
  position and scale as 11/10/11-bit fractions of the chunk range (x in the high bits),
  the rotation as "smallest three" (bits 30-31: index of the largest component in
  ``rot_0..rot_3`` = w, x, y, z order; then the other three in that order, 10 bits each, the first
  in bits 20-29, each ``(c * sqrt(1/2) + 0.5)`` in unorm; the quaternion is negated so that the
  largest is positive), and RGBA 8888 (R in the high byte; RGB fractions of the chunk colour range,
  or absolute colours without it; A = sigmoid(opacity));
* optionally ``element sh N`` of uchar ``f_rest_0..`` (9, 24 or 45, the Inria channel-major
  order): ``byte = trunc((v / 8 + 0.5) * 256)`` clamped; decoded as ``(n - 0.5) * 8`` with n = 0
  for byte 0, 1 for 255, ``(byte + 0.5) / 256`` otherwise.

Unorm packing is ``floor(v * (2^bits - 1) + 0.5)``; a range narrower than 1e-5 packs as 0.
Splats are in Morton order; the last chunk's range is taken with its last splat repeated. An
alpha of 0 or 1 decodes to a finite logit a quarter step inside (the reference decoder gives
+-inf there). The antialiased flag uses the PLY comment (see :mod:`splatdistill.formats.ply`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from splatdistill.errors import UserError
from splatdistill.fileio import atomic_path
from splatdistill.formats._common import SH_C0, alpha_to_logit, build_scene, scene_arrays, sigmoid, unit_quats
from splatdistill.formats.morton import morton_order
from splatdistill.formats.ply import _FORMATS, AA_COMMENT, antialiased_from_comments, read_header
from splatdistill.scene.gaussians import GaussianScene

CHUNK_SIZE = 256
_CHUNK_PROPS = [
    "min_x",
    "min_y",
    "min_z",
    "max_x",
    "max_y",
    "max_z",
    "min_scale_x",
    "min_scale_y",
    "min_scale_z",
    "max_scale_x",
    "max_scale_y",
    "max_scale_z",
]
_COLOR_PROPS = ["min_r", "min_g", "min_b", "max_r", "max_g", "max_b"]
_VERTEX_PROPS = ["packed_position", "packed_rotation", "packed_scale", "packed_color"]
_REST_DEGREE = {0: 0, 9: 1, 24: 2, 45: 3}
_SQRT1_2 = math.sqrt(0.5)


# --- bit packing -------------------------------------------------------------------------------
def _unorm(v: np.ndarray, bits: int) -> np.ndarray:
    t = (1 << bits) - 1
    return np.clip(np.floor(v * t + 0.5), 0, t).astype(np.uint32)


def _from_unorm(u: np.ndarray, bits: int) -> np.ndarray:
    t = (1 << bits) - 1
    return (u & t).astype(np.float64) / t


def _unpack_111011(p: np.ndarray) -> np.ndarray:
    return np.stack([_from_unorm(p >> 21, 11), _from_unorm(p >> 11, 10), _from_unorm(p, 11)], axis=1)


def _pack_111011(v: np.ndarray) -> np.ndarray:
    return (_unorm(v[:, 0], 11) << 21) | (_unorm(v[:, 1], 10) << 11) | _unorm(v[:, 2], 11)


def _unpack_rotations(p: np.ndarray) -> np.ndarray:
    n = p.shape[0]
    three = np.stack([(_from_unorm(p >> s, 10) - 0.5) / _SQRT1_2 for s in (20, 10, 0)], axis=1)
    largest = (p >> 30).astype(np.int64)
    q = np.zeros((n, 4))
    slot = np.zeros(n, dtype=np.int64)
    for i in range(4):
        other = largest != i
        q[other, i] = three[np.arange(n)[other], slot[other]]
        slot += other
    q[np.arange(n), largest] = np.sqrt(np.maximum(0.0, 1.0 - (three * three).sum(axis=1)))
    return q  # rot_0..rot_3 = w, x, y, z


def _pack_rotations(quats: np.ndarray) -> np.ndarray:
    q = unit_quats(quats)
    n = q.shape[0]
    largest = np.argmax(np.abs(q), axis=1)  # the first on ties
    q = q * np.where(q[np.arange(n), largest] < 0, -1.0, 1.0)[:, None]
    out = largest.astype(np.uint32)
    for i in range(4):
        keep = largest != i
        out = np.where(keep, (out << np.uint32(10)) | _unorm(q[:, i] * _SQRT1_2 + 0.5, 10), out)
    return out


def _normalize(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    rng = hi - lo
    t = np.where(rng < 1e-5, 0.0, (x - lo) / np.where(rng == 0, 1.0, rng))
    return np.clip(t, 0.0, 1.0)


# --- reading -----------------------------------------------------------------------------------
def _read_elements(path: Path, header) -> dict[str, np.ndarray]:
    endian = _FORMATS[header.format]
    if endian is None:
        raise UserError("a compressed PLY must be binary, not ASCII", path)
    out = {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        offset = header.data_offset
        for e in header.elements:
            if e.has_lists:
                raise UserError(f"compressed PLY element '{e.name}' has a list property", path)
            dtype = e.dtype(endian)
            if offset + e.count * dtype.itemsize > size:
                raise UserError(
                    f"truncated compressed PLY: element '{e.name}' ({e.count} rows) ends past the "
                    f"end of the {size}-byte file",
                    path,
                )
            f.seek(offset)
            out[e.name] = np.fromfile(f, dtype=dtype, count=e.count)
            offset += e.count * dtype.itemsize
    return out


def _require(el: np.ndarray, names: list[str], kind: str, element: str, path) -> None:
    have = el.dtype.names or ()
    missing = [n for n in names if n not in have]
    if missing:
        raise UserError(f"compressed PLY element '{element}' lacks {', '.join(missing)}", path)
    bad = [n for n in names if el.dtype[n].kind + str(el.dtype[n].itemsize) != kind]
    if bad:
        raise UserError(
            f"compressed PLY property '{bad[0]}' of '{element}' is {el.dtype[bad[0]]}, "
            f"expected {'float32' if kind == 'f4' else 'uint32' if kind == 'u4' else 'uint8'}",
            path,
        )


def read_compressed_ply(path: str | os.PathLike) -> GaussianScene:
    """Decode a compressed PLY into a float32 CPU scene (in the file's order).

    Args:
        path: The ``.ply`` file.

    Returns:
        A ``GaussianScene``; any malformed file raises ``UserError`` naming it.
    """
    path = Path(path)
    header = read_header(path)
    els = _read_elements(path, header)
    if "chunk" not in els or "vertex" not in els:
        raise UserError("not a compressed PLY (needs 'chunk' and 'vertex' elements)", path)
    chunk, vertex = els["chunk"], els["vertex"]
    _require(chunk, _CHUNK_PROPS, "f4", "chunk", path)
    _require(vertex, _VERTEX_PROPS, "u4", "vertex", path)
    n = vertex.shape[0]
    if chunk.shape[0] != math.ceil(n / CHUNK_SIZE):
        raise UserError(
            f"compressed PLY has {chunk.shape[0]} chunks for {n} splats "
            f"(expected {math.ceil(n / CHUNK_SIZE)}, one per {CHUNK_SIZE})",
            path,
        )
    has_color = "min_r" in (chunk.dtype.names or ())
    if has_color:
        _require(chunk, _COLOR_PROPS, "f4", "chunk", path)
    ci = np.arange(n) // CHUNK_SIZE

    def rng(names):
        lo = np.stack([chunk[k].astype(np.float64) for k in names[:3]], axis=1)[ci]
        hi = np.stack([chunk[k].astype(np.float64) for k in names[3:]], axis=1)[ci]
        return lo, hi

    def lerp(lo, hi, t):
        return lo * (1.0 - t) + hi * t

    u32 = lambda k: vertex[k].astype(np.uint32)  # noqa: E731
    means = lerp(*rng(_CHUNK_PROPS[:6]), _unpack_111011(u32("packed_position")))
    scales = lerp(*rng(_CHUNK_PROPS[6:]), _unpack_111011(u32("packed_scale")))
    quats = _unpack_rotations(u32("packed_rotation"))
    pc = u32("packed_color")
    rgba = np.stack([_from_unorm(pc >> s, 8) for s in (24, 16, 8, 0)], axis=1)
    color = lerp(*rng(_COLOR_PROPS), rgba[:, :3]) if has_color else rgba[:, :3]
    sh0 = (color - 0.5) / SH_C0
    opacities = alpha_to_logit(rgba[:, 3])

    k_rest = 0
    if "sh" in els:
        sh = els["sh"]
        names = sh.dtype.names or ()
        if len(names) not in _REST_DEGREE or sh.shape[0] != n:
            raise UserError(
                f"compressed PLY 'sh' element has {len(names)} properties for {sh.shape[0]} "
                f"rows; expected 9, 24 or 45 for {n} rows",
                path,
            )
        _require(sh, [f"f_rest_{i}" for i in range(len(names))], "u1", "sh", path)
        k_rest = len(names) // 3
        b = np.stack([sh[f"f_rest_{i}"] for i in range(len(names))], axis=1).astype(np.float64)
        v = np.where(b == 0, 0.0, np.where(b == 255, 1.0, (b + 0.5) / 256.0))
        rest = (v - 0.5) * 8.0
        shN = rest.reshape(n, 3, k_rest).transpose(0, 2, 1)  # channel-major -> (N, K-1, 3)
    else:
        shN = np.zeros((n, 0, 3))
    others = [e.name for e in header.elements if e.name not in ("chunk", "vertex", "sh")]
    if others:
        raise UserError(f"compressed PLY has unexpected elements: {', '.join(others)}", path)
    return build_scene(
        means, quats, scales, opacities, sh0, shN, antialiased=antialiased_from_comments(header.comments)
    )


# --- writing -----------------------------------------------------------------------------------
def encode_compressed_ply(scene: GaussianScene, path=None) -> bytes:
    """The bytes of a compressed PLY of ``scene``, its Gaussians in Morton order.

    Args:
        scene: The scene (SH degree 0-3); non-finite values raise ``UserError``.
        path: The file to name in errors, if any.

    Returns:
        The whole file.
    """
    scene.check_finite(str(path) if path is not None else "scene")
    p = scene_arrays(scene)
    n = p["means"].shape[0]
    order = morton_order(p["means"]) if n else np.zeros(0, dtype=np.int64)
    p = {k: v[order] for k, v in p.items()}
    k_rest = p["shN"].shape[1]
    num_chunks = math.ceil(n / CHUNK_SIZE)
    # pad to whole chunks by repeating the last splat (only the ranges see the padding)
    pad = np.concatenate([np.arange(n), np.full(num_chunks * CHUNK_SIZE - n, max(n - 1, 0))]).astype(np.int64)
    color = p["sh0"] * SH_C0 + 0.5
    scales = p["scales"]
    fields = {"pos": p["means"], "scale": scales, "color": color}
    ranges = {}
    for k, v in fields.items():
        blocks = v[pad].reshape(num_chunks, CHUNK_SIZE, 3) if n else np.zeros((0, CHUNK_SIZE, 3))
        lo, hi = blocks.min(axis=1), blocks.max(axis=1)
        if k == "scale":
            lo, hi = np.clip(lo, -20, 20), np.clip(hi, -20, 20)
        ranges[k] = (lo, hi)
    ci = np.arange(n) // CHUNK_SIZE

    def packed(k):
        lo, hi = ranges[k]
        return _normalize(fields[k], lo[ci], hi[ci])

    c = packed("color")
    a = sigmoid(p["opacities"])
    vertex = np.empty(n, dtype=[(k, "<u4") for k in _VERTEX_PROPS])
    vertex["packed_position"] = _pack_111011(packed("pos"))
    vertex["packed_rotation"] = _pack_rotations(p["quats"])
    vertex["packed_scale"] = _pack_111011(packed("scale"))
    vertex["packed_color"] = (
        (_unorm(c[:, 0], 8) << 24) | (_unorm(c[:, 1], 8) << 16) | (_unorm(c[:, 2], 8) << 8) | _unorm(a, 8)
    )
    chunk = np.empty((num_chunks, 18), dtype="<f4")
    (plo, phi), (slo, shi), (clo, chi) = ranges["pos"], ranges["scale"], ranges["color"]
    for j, arr in enumerate([plo, phi, slo, shi, clo, chi]):
        chunk[:, 3 * j : 3 * j + 3] = arr
    lines = ["ply", "format binary_little_endian 1.0", "comment written by splatdistill"]
    if scene.antialiased:
        lines.append(f"comment {AA_COMMENT}")
    lines.append(f"element chunk {num_chunks}")
    lines += [f"property float {k}" for k in _CHUNK_PROPS + _COLOR_PROPS]
    lines.append(f"element vertex {n}")
    lines += [f"property uint {k}" for k in _VERTEX_PROPS]
    parts = []
    if k_rest:
        rest = p["shN"].transpose(0, 2, 1).reshape(n, 3 * k_rest)  # channel-major f_rest order
        sh = np.clip(np.trunc((rest / 8.0 + 0.5) * 256.0), 0, 255).astype(np.uint8)
        lines.append(f"element sh {n}")
        lines += [f"property uchar f_rest_{i}" for i in range(3 * k_rest)]
        parts.append(sh.tobytes())
    lines.append("end_header")
    head = ("\n".join(lines) + "\n").encode("ascii")
    return b"".join([head, chunk.tobytes(), vertex.tobytes()] + parts)


def write_compressed_ply(scene: GaussianScene, path: str | os.PathLike) -> Path:
    """Write ``scene`` as a compressed PLY (Morton order), atomically.

    Args:
        scene: The scene.
        path: The output file.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    data = encode_compressed_ply(scene, path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path
