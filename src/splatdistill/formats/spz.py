"""Niantic's SPZ format (versions 1-4 read, 2-4 written): ``write_spz`` / ``read_spz``.

Written from the published description of the format, the README of
https://github.com/nianticlabs/spz ("File Format" section, cited below as [spec]), with the
reference library's ``load-spz.cc`` / ``splat-types.h`` read only as a description of the
details the README leaves open (quantisation formulas, rounding, bit order). No code is taken
from it or from any other SPZ implementation.

File layout of versions 1-3 [spec, "File Format"]: one gzip stream holding a 16-byte
little-endian header ::

    u32 magic = 0x5053474e ("NGSP")   u32 version   u32 numPoints
    u8 shDegree   u8 fractionalBits   u8 flags (0x1 = antialiased)   u8 reserved (0)

followed by the attribute arrays, each for all Gaussians in turn, in the order
positions, alphas, colours, scales, rotations, spherical harmonics:

============  ======================  ==========================================================
attribute     bytes per Gaussian      encoding (decoding is the inverse)
============  ======================  ==========================================================
positions     9 (3 x 24-bit LE)       signed fixed point, ``round(x * 2^fractionalBits)``
alphas        1                       ``round(sigmoid(opacity_logit) * 255)``
colours       3                       ``round(sh0 * 0.15 * 255 + 127.5)`` ("colour scale" 0.15)
scales        3                       ``round((log_scale + 10) * 16)``
rotations     3 (v2) / 4 (v3)         v2: x, y, z of the unit quaternion with w >= 0, each
                                      ``round(c * 127.5 + 127.5)``; w = sqrt(1 - x²-y²-z²).
                                      v3: "smallest three": a u32 (LE) holding the index (2 bits,
                                      0..3 = x, y, z, w) of the largest-magnitude component in
                                      bits 30-31 and, for the other three in x, y, z, w order with
                                      the first one in the highest bits, 10 bits each: a sign bit
                                      then a 9-bit magnitude ``round(|c| / sqrt(1/2) * 511)``; the
                                      quaternion is negated first so that the largest is positive.
SH            3 x (K-1)               coefficient-major, colour channel fastest:
                                      ``r0 g0 b0 r1 g1 b1 ...`` (the same order as our
                                      ``shN[n, k, c]``); each ``round(v * 128) + 128`` then
                                      snapped to a bucket of 2^(8-bits) values, bits = 5 for the
                                      degree-1 coefficients and 4 for degree 2 and 3 [spec,
                                      "Quantization"]; decoded as ``(byte - 128) / 128``.
============  ======================  ==========================================================

All ``round`` above round half away from zero and clamp to the byte's range, as the reference
library does. The decoder does not need the SH bucket sizes [spec].

Versions [spec, "File layout (version 4)"]. Versions 1-3 are the gzip container above (version
1, never released, stores positions as 3 float16 instead of the fixed point; versions 1-2 use the
8-bit rotations). **Version 4** (the reference library's current and default version) is not
gzipped: a 32-byte little-endian plaintext header ::

    u32 magic "NGSP"   u32 version = 4   u32 numPoints
    u8 shDegree   u8 fractionalBits   u8 flags   u8 numStreams   u32 tocByteOffset   12 x u8 reserved

then, when flags & 0x2, extension records up to ``tocByteOffset``; at ``tocByteOffset`` a table of
contents of ``numStreams`` entries ``(u64 compressedSize, u64 uncompressedSize)``; then the streams,
back to back, each one zstd frame holding one attribute array (the same bytes as in versions 2-3)
in the order positions, alphas, colours, scales, rotations, SH, **leaving out the empty ones**
(an SH-0 model has 5 streams). The writer uses zstd level 12, the reference library's level.

Extensions [reference ``extensions/README.md``]: records ``u32 type, u32 byteLength, payload``;
in version 4 they fill the header zone, in versions 1-3 they follow the SH array inside the gzip
stream. Readers skip the types they do not know. We understand ``0xADBE0003``
(``SPZ_ADOBE_coordinate_system``, a u32 naming the stored frame: 0 = unspecified, read as RUB; 4 =
RUB; 6 = RDF, the PLY frame, read without conversion; other frames are refused) and skip
``0xADBE0002`` (camera orbit limits; no effect on the Gaussians); other types are skipped with a
warning. The writer writes no extensions.

Which reader takes which version (checked in their sources): the reference library reads 1-4 and
writes 4 by default; Spark (sparkjsdev/spark ``src/spz.ts``, ``rust/spark-lib/src/spz.rs``) reads
only 1-3; splat-transform reads 2-4 and writes 4 by default; gsply reads 1-4. So the writer writes
**version 4** by default and ``version=3`` (or 2) for older readers such as Spark.

Positions beyond the fixed-point range: when a coordinate does not fit 24 bits at the requested
``fractional_bits`` the writer uses the largest number of fractional bits that fits (one warning
line), down to 0; only a scene beyond +-2^23 fails.

Coordinate frame. The [spec] ("Coordinate System") says SPZ stores data in a right-up-back (RUB,
OpenGL / three.js) frame, while the Inria PLY is right-down-front (RDF, OpenCV), and the reference
library converts between the two when the caller names the source/target frames. Our scenes live
in the frame of their PLY (the dataset's world frame, RDF), so by default (``convert_frame=True``)
the writer applies the RDF -> RUB conversion and the reader applies its inverse (the same map: it
is its own inverse), so that ``read_spz(write_spz(scene))`` is ``scene`` up to quantisation and a
viewer that follows the spec shows our SPZ the same way up as our PLY. The conversion is the
rotation F = diag(1, -1, -1) (180° about x, a proper rotation, so scales are untouched):

* positions ``(x, y, z) -> (x, -y, -z)``;
* quaternions (w, x, y, z) -> (w, x, -y, -z)  (``F R F`` as a quaternion);
* SH: coefficient k is multiplied by the parity of its real SH basis polynomial under
  ``(y, z) -> (-y, -z)`` (``SH_SIGNS_RDF_RUB``), e.g. degree 1 (-y, z, -x) -> (-1, -1, +1).
  This equals the sign table of the reference library's converter for RDF <-> RUB.

Caveat (interop): the reference library's own ``ply_to_spz`` command-line tool passes no frames
(``UNSPECIFIED``, so no conversion), ``gsply`` never converts (it reads and writes SPZ in whatever
frame the arrays are in, as its PLY I/O does), and so many SPZ files in the wild are in the PLY
frame; some viewers assume that (see nianticlabs/spz issue #84, BabylonJS PR #16196, supersplat
PR #885). ``convert_frame=False`` writes / reads the arrays unchanged, which reproduces those
tools' files.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from splatdistill.errors import UserError, warn
from splatdistill.fileio import atomic_path
from splatdistill.scene.gaussians import GaussianScene, num_sh_coeffs

SPZ_MAGIC = 0x5053474E  # "NGSP" little-endian [spec, Header]
READ_VERSIONS = (1, 2, 3, 4)
WRITE_VERSIONS = (2, 3, 4)
DEFAULT_VERSION = 4
ZSTD_VERSION = 4  # first version of the NGSP container with zstd streams
ZSTD_LEVEL = 12  # the reference library's zstd level
DEFAULT_FRACTIONAL_BITS = 12  # ~0.24 mm at metre scale, the reference library's choice
MAX_FRACTIONAL_BITS = 24  # positions are 24-bit numbers
MAX_SH_DEGREE = 3  # the format allows 4 [spec]; our scenes stop at 3

FLAG_ANTIALIASED = 0x1  # [spec, Header: flags]
FLAG_HAS_EXTENSIONS = 0x2  # reference library: extension records follow the header

COLOR_SCALE = 0.15  # [spec / reference]: sh0 is stored as "wide RGB" sh0 * 0.15 + 0.5
SH1_BITS = 5  # [spec, Quantization]: default precision of the degree-1 coefficients
SH_REST_BITS = 4  # ... and of degree 2 and 3

_HEADER = struct.Struct("<IIIBBBB")  # 16 bytes (versions 1-3)
_HEADER_V4 = struct.Struct("<IIIBBBBI12s")  # 32 bytes (version 4)
_TOC_ENTRY = struct.Struct("<QQ")
_EXT_RECORD = struct.Struct("<II")
EXT_COORDINATE_SYSTEM = 0xADBE0003  # SPZ_ADOBE_coordinate_system
EXT_SAFE_ORBIT_CAMERA = 0xADBE0002  # SPZ_ADOBE_safe_orbit_camera
_FRAME_NAMES = {
    0: "UNSPECIFIED",
    1: "LDB",
    2: "RDB",
    3: "LUB",
    4: "RUB",
    5: "LDF",
    6: "RDF",
    7: "LUF",
    8: "RUF",
    9: "LFD",
    10: "RFD",
    11: "LFU",
    12: "RFU",
    13: "LBD",
    14: "RBD",
    15: "LBU",
    16: "RBU",
}
_GZIP_MAGIC = b"\x1f\x8b"
_SQRT1_2 = math.sqrt(0.5)
_MAG_MAX = (1 << 9) - 1  # 9-bit magnitude of the smallest-three encoding

# Parity of each real SH basis function (gsplat / Inria order, degree 1..3) under
# (x, y, z) -> (x, -y, -z): -1 where the polynomial has odd total degree in (y, z).
#   degree 1: y, z, x
#   degree 2: xy, yz, 2z²-x²-y², xz, x²-y²
#   degree 3: y(3x²-y²), xyz, y(4z²-x²-y²), z(2z²-3x²-3y²), x(4z²-x²-y²), z(x²-y²), x(x²-3y²)
SH_SIGNS_RDF_RUB = np.array(
    [-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1],
    dtype=np.float64,
)
_POS_SIGNS_RDF_RUB = np.array([1.0, -1.0, -1.0])
_QUAT_SIGNS_RDF_RUB = np.array([1.0, 1.0, -1.0, -1.0])  # wxyz


@dataclass(frozen=True)
class SpzHeader:
    """The header of an SPZ file, and the stream sizes it implies.

    Args:
        version: Format version, 1-4.
        num_points: Number of Gaussians.
        sh_degree: SH degree, 0-3.
        fractional_bits: Fixed-point precision of the positions.
        flags: Header flags (0x1: antialiased).
        stored_frame: Axis convention of the stored data, from the coordinate-system extension (RUB,
            the spec's, without one).
    """

    version: int
    num_points: int
    sh_degree: int
    fractional_bits: int
    flags: int
    stored_frame: str = "RUB"  # from the coordinate-system extension; RUB (the spec's) without one

    @property
    def antialiased(self) -> bool:
        """Whether flag 0x1 (trained with the anti-aliasing filter) is set."""
        return bool(self.flags & FLAG_ANTIALIASED)

    @property
    def rotation_bytes(self) -> int:
        """Bytes per rotation: 4 ("smallest three", version 3 on) or 3."""
        return 4 if self.version >= 3 else 3

    @property
    def position_bytes(self) -> int:
        """Bytes per position: 9 (3 x 24-bit fixed point) or 6 (3 x float16, version 1)."""
        return 6 if self.version == 1 else 9  # version 1: 3 x float16

    @property
    def stream_sizes(self) -> list[int]:
        """Bytes of each attribute array: positions, alphas, colours, scales, rotations, SH."""
        n = self.num_points
        return [
            self.position_bytes * n,
            n,
            3 * n,
            3 * n,
            self.rotation_bytes * n,
            3 * (num_sh_coeffs(self.sh_degree) - 1) * n,
        ]

    @property
    def bytes_per_gaussian(self) -> int:
        """Stream bytes per Gaussian (0 for an empty file)."""
        return sum(self.stream_sizes) // self.num_points if self.num_points else 0


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _round(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (C ``std::round``, which the reference uses), not numpy's
    half-to-even. ``x`` is float64, so adding 0.5 to a value of float32 origin is exact."""
    return np.trunc(x + np.copysign(0.5, x))


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(_round(x), 0, 255).astype(np.uint8)


def _sh_bucket_sizes(k_rest: int) -> np.ndarray:
    """Bucket size per higher-order coefficient: 2^(8-5) for degree 1, 2^(8-4) above."""
    sizes = np.full(k_rest, 1 << (8 - SH_REST_BITS), dtype=np.int64)
    sizes[:3] = 1 << (8 - SH1_BITS)
    return sizes


def frame_flip(means: np.ndarray, quats: np.ndarray, shN: np.ndarray):
    """Apply F = diag(1, -1, -1), the RDF <-> RUB conversion (its own inverse), in place.

    Args:
        means: [N, 3] float64 positions; become ``F x``.
        quats: [N, 4] float64 quaternions (w, x, y, z); become those of ``F R F``.
        shN: [N, K, 3] float64 higher-order SH, K <= 15; each coefficient times ``SH_SIGNS_RDF_RUB``.

    Returns:
        The same three arrays, ``(means, quats, shN)``.
    """
    means *= _POS_SIGNS_RDF_RUB
    quats *= _QUAT_SIGNS_RDF_RUB
    shN *= SH_SIGNS_RDF_RUB[: shN.shape[1], None]
    return means, quats, shN


# --------------------------------------------------------------------------------------------
# rotations
# --------------------------------------------------------------------------------------------
def _unit_xyzw(quats_wxyz: np.ndarray) -> np.ndarray:
    q = np.roll(quats_wxyz, -1, axis=1)  # wxyz -> xyzw, the order of [spec, Rotation]
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    zero = norm[:, 0] == 0
    q = q / np.where(norm == 0, 1.0, norm)
    q[zero] = (0.0, 0.0, 0.0, 1.0)  # a zero quaternion has no rotation; store the identity
    return q


def _pack_rotations_v2(quats_wxyz: np.ndarray) -> np.ndarray:
    q = _unit_xyzw(quats_wxyz)
    q = q * np.where(q[:, 3:4] < 0, -1.0, 1.0)  # q and -q are the same rotation: make w >= 0
    return _to_u8(q[:, :3] * 127.5 + 127.5)


def _unpack_rotations_v2(b: np.ndarray) -> np.ndarray:
    xyz = b.astype(np.float64) / 127.5 - 1.0
    w = np.sqrt(np.maximum(0.0, 1.0 - (xyz * xyz).sum(axis=1)))
    return np.concatenate([w[:, None], xyz], axis=1)


def _pack_rotations_v3(quats_wxyz: np.ndarray) -> np.ndarray:
    q = _unit_xyzw(quats_wxyz)
    n = q.shape[0]
    largest = np.argmax(np.abs(q), axis=1)  # first index on ties, like the reference's loop
    q = q * np.where(q[np.arange(n), largest] < 0, -1.0, 1.0)[:, None]
    comp = largest.astype(np.uint32)
    for i in range(4):  # x, y, z, w; earlier components end up in higher bits
        keep = largest != i
        v = q[:, i]
        mag = np.minimum(np.floor(_MAG_MAX * np.abs(v) / _SQRT1_2 + 0.5), _MAG_MAX).astype(np.uint32)
        neg = (v < 0).astype(np.uint32)
        comp = np.where(keep, (comp << np.uint32(10)) | (neg << np.uint32(9)) | mag, comp)
    return comp.astype("<u4").view(np.uint8).reshape(n, 4)


def _unpack_rotations_v3(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    comp = np.ascontiguousarray(b).view("<u4").reshape(n).astype(np.uint32)
    largest = (comp >> np.uint32(30)).astype(np.int64)
    q = np.zeros((n, 4), dtype=np.float64)  # xyzw
    for i in range(3, -1, -1):  # the last-packed component sits in the lowest bits
        keep = largest != i
        mag = (comp & np.uint32(_MAG_MAX)).astype(np.float64)
        neg = ((comp >> np.uint32(9)) & np.uint32(1)).astype(bool)
        v = _SQRT1_2 * mag / _MAG_MAX
        q[:, i] = np.where(keep, np.where(neg, -v, v), 0.0)
        comp = np.where(keep, comp >> np.uint32(10), comp)
    q[np.arange(n), largest] = np.sqrt(np.maximum(0.0, 1.0 - (q * q).sum(axis=1)))
    return np.roll(q, 1, axis=1)  # xyzw -> wxyz


# --------------------------------------------------------------------------------------------
# encode / decode (bytes)
# --------------------------------------------------------------------------------------------
def _check_write_args(version, fractional_bits, path) -> None:
    if version not in WRITE_VERSIONS:
        raise UserError(
            f"cannot write SPZ version {version!r}; supported versions are {', '.join(map(str, WRITE_VERSIONS))}", path
        )
    if not isinstance(fractional_bits, (int, np.integer)) or not 0 <= fractional_bits <= MAX_FRACTIONAL_BITS:
        raise UserError(
            f"SPZ fractional_bits must be an integer in 0..{MAX_FRACTIONAL_BITS}, got {fractional_bits!r}", path
        )


def encode_spz(
    scene: GaussianScene,
    fractional_bits: int = DEFAULT_FRACTIONAL_BITS,
    version: int = DEFAULT_VERSION,
    *,
    antialiased: bool | None = None,
    convert_frame: bool = True,
    compresslevel: int | None = None,
    path: str | os.PathLike | None = None,
) -> bytes:
    """The SPZ file bytes for ``scene``. See the module docstring for the format.

    Args:
        scene: The scene, in its PLY / world frame.
        fractional_bits: Fixed-point precision of the positions.
        version: 2, 3 or 4.
        antialiased: Header flag 0x1; ``scene.antialiased`` when None.
        convert_frame: Apply the spec's RDF -> RUB conversion.
        compresslevel: gzip level for versions 2-3 (default 6), zstd level for version 4 (default 12).
        path: Only names the destination in error and warning messages.

    Returns:
        The whole file.
    """
    if antialiased is None:
        antialiased = scene.antialiased
    _check_write_args(version, fractional_bits, path)
    scene.check_finite(str(path) if path is not None else "scene")
    # float64 copies (never views of the scene's memory: they are modified in place below)
    p = {k: np.array(v.detach().cpu().numpy(), dtype=np.float64) for k, v in scene.items()}
    means, quats, shN = p["means"], p["quats"], p["shN"]
    n = means.shape[0]
    sh_degree = scene.sh_degree
    if convert_frame:
        means, quats, shN = frame_flip(means, quats, shN)

    # positions: 24-bit signed fixed point
    lo, hi = (float(means.min()), float(means.max())) if n else (0.0, 0.0)

    def fits(bits: int) -> bool:  # 24-bit two's complement: -2^23 .. 2^23 - 1
        s = float(1 << bits)
        return _round(np.array(lo * s)) >= -(1 << 23) and _round(np.array(hi * s)) <= (1 << 23) - 1

    if not fits(fractional_bits):
        extent = max(abs(lo), abs(hi))
        ok = [b for b in range(0, fractional_bits) if fits(b)]
        if not ok:
            raise UserError(
                f"a Gaussian lies at |coordinate| = {extent:.6g}, outside SPZ's 24-bit fixed-point range "
                f"even with 0 fractional bits (|x| < 2^23); recentre/rescale the scene",
                path,
            )
        warn(
            f"a Gaussian lies at |coordinate| = {extent:.6g}, beyond SPZ's 24-bit range at "
            f"{fractional_bits} fractional bits; storing positions with {max(ok)} fractional bits "
            f"(step {2.0 ** -max(ok):g})",
            path,
        )
        fractional_bits = max(ok)
    fixed = _round(means * float(1 << fractional_bits))
    fixed = fixed.astype(np.int64) & 0xFFFFFF
    pos = np.stack([fixed & 0xFF, (fixed >> 8) & 0xFF, (fixed >> 16) & 0xFF], axis=-1)
    pos = pos.astype(np.uint8).reshape(n, 9)

    alphas = _to_u8(255.0 / (1.0 + np.exp(-p["opacities"])))
    colors = _to_u8(p["sh0"].reshape(n, 3) * (COLOR_SCALE * 255.0) + 127.5)
    scales = _to_u8((p["scales"] + 10.0) * 16.0)
    rots = _pack_rotations_v3(quats) if version >= 3 else _pack_rotations_v2(quats)

    k_rest = shN.shape[1]
    # SH: round(v * 128) + 128, snapped to its bucket: (q + b/2) // b * b, clamped to a byte.
    # In place on the float64 copy (integers stay exact); the largest array by far.
    q = shN
    q *= 128.0
    q += np.copysign(0.5, q)
    np.trunc(q, out=q)
    bucket = _sh_bucket_sizes(k_rest).astype(np.float64)[None, :, None]
    q += 128.0 + bucket // 2
    np.floor_divide(q, bucket, out=q)
    q *= bucket
    np.clip(q, 0, 255, out=q)
    sh = q.astype(np.uint8).reshape(n, 3 * k_rest)

    flags = FLAG_ANTIALIASED if antialiased else 0
    arrays = [np.ascontiguousarray(a).tobytes() for a in (pos, alphas, colors, scales, rots, sh)]
    if version >= ZSTD_VERSION:
        import zstandard

        level = ZSTD_LEVEL if compresslevel is None else compresslevel
        cctx = zstandard.ZstdCompressor(level=level)
        streams = [(cctx.compress(a), len(a)) for a in arrays if len(a)]  # empty arrays are left out
        header = _HEADER_V4.pack(
            SPZ_MAGIC, version, n, sh_degree, fractional_bits, flags, len(streams), _HEADER_V4.size, bytes(12)
        )
        toc = b"".join(_TOC_ENTRY.pack(len(c), u) for c, u in streams)
        return b"".join([header, toc] + [c for c, _ in streams])
    header = _HEADER.pack(SPZ_MAGIC, version, n, sh_degree, fractional_bits, flags, 0)
    level = 6 if compresslevel is None else compresslevel
    return gzip.compress(b"".join([header] + arrays), compresslevel=level, mtime=0)


def _gunzip(data: bytes, source) -> bytes:
    try:
        return gzip.decompress(data)
    except EOFError as e:
        raise UserError(f"truncated SPZ file: the gzip stream ends early ({e})", source) from None
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
        raise UserError(f"corrupt SPZ file: bad gzip stream ({e})", source) from None


def _check_header_fields(version, sh_degree, frac_bits, source) -> None:
    if version not in READ_VERSIONS:
        raise UserError(
            f"unsupported SPZ version {version}; this reader handles versions {', '.join(map(str, READ_VERSIONS))}",
            source,
        )
    if sh_degree > MAX_SH_DEGREE:
        raise UserError(f"unsupported SPZ SH degree {sh_degree} (at most {MAX_SH_DEGREE})", source)
    if frac_bits > MAX_FRACTIONAL_BITS:
        raise UserError(
            f"corrupt SPZ header: fractionalBits = {frac_bits} (24-bit positions allow at most {MAX_FRACTIONAL_BITS})",
            source,
        )


def parse_header(raw: bytes, source=None) -> SpzHeader:
    """Validate and parse an SPZ header.

    Args:
        raw: The 32-byte plaintext header of a version-4 file, or the 16-byte header at the start of a
            *decompressed* version 1-3 stream.
        source: The file to name in errors.

    Returns:
        The ``SpzHeader``; anything malformed or unsupported raises ``UserError``.
    """
    if len(raw) < 8:
        raise UserError(f"truncated SPZ file: {len(raw)} bytes, less than a header", source)
    magic, version = struct.unpack_from("<II", raw)
    if magic != SPZ_MAGIC:
        raise UserError(f"not an SPZ file: bad magic 0x{magic:08x} (expected 0x{SPZ_MAGIC:08x}, 'NGSP')", source)
    hdr = _HEADER_V4 if version >= ZSTD_VERSION else _HEADER
    if len(raw) < hdr.size:
        raise UserError(f"truncated SPZ file: {len(raw)} bytes, less than the {hdr.size}-byte header", source)
    _, version, num_points, sh_degree, frac_bits, flags, *_ = hdr.unpack_from(raw)
    _check_header_fields(version, sh_degree, frac_bits, source)
    return SpzHeader(version, num_points, sh_degree, frac_bits, flags)


def _read_extensions(blob: bytes, source) -> str:
    """Walk the extension records; return the stored frame they name (RUB when none does)."""
    frame, off = "RUB", 0
    while off < len(blob):
        if off + _EXT_RECORD.size > len(blob):
            raise UserError("corrupt SPZ file: a truncated extension record", source)
        etype, length = _EXT_RECORD.unpack_from(blob, off)
        off += _EXT_RECORD.size
        if off + length > len(blob):
            raise UserError(
                f"corrupt SPZ file: extension 0x{etype:08x} declares {length} bytes, {len(blob) - off} remain", source
            )
        payload = blob[off : off + length]
        off += length
        if etype == EXT_COORDINATE_SYSTEM and length >= 4:
            code = struct.unpack_from("<I", payload)[0]
            name = _FRAME_NAMES.get(code, f"#{code}")
            if name not in ("UNSPECIFIED", "RUB", "RDF"):
                raise UserError(
                    f"SPZ file stores its Gaussians in the {name} frame (coordinate-system extension); "
                    f"only RUB and RDF are read",
                    source,
                )
            frame = "RUB" if name == "UNSPECIFIED" else name
        elif etype != EXT_SAFE_ORBIT_CAMERA:
            warn(f"skipping unknown SPZ extension 0x{etype:08x} ({length} bytes)", source)
    return frame


def _split_legacy(data: bytes, source) -> tuple[SpzHeader, list[bytes]]:
    raw = _gunzip(data, source)
    h = parse_header(raw, source)
    sizes = h.stream_sizes
    body, need = len(raw) - _HEADER.size, sum(sizes)
    if body < need:
        raise UserError(
            f"truncated or inconsistent SPZ file: the header declares {h.num_points} Gaussians "
            f"({need} bytes of attributes) but only {body} bytes follow it",
            source,
        )
    off = _HEADER.size
    arrays = []
    for size in sizes:
        arrays.append(raw[off : off + size])
        off += size
    if body > need:
        if not h.flags & FLAG_HAS_EXTENSIONS:
            raise UserError(
                f"inconsistent SPZ file: the header declares {h.num_points} Gaussians ({need} bytes of "
                f"attributes) but {body} bytes follow it ({body - need} unexpected)",
                source,
            )
    if h.flags & FLAG_HAS_EXTENSIONS:
        h = SpzHeader(
            h.version, h.num_points, h.sh_degree, h.fractional_bits, h.flags, _read_extensions(raw[off:], source)
        )
    return h, arrays


def _split_v4(data: bytes, source) -> tuple[SpzHeader, list[bytes]]:
    import zstandard

    h = parse_header(data, source)
    if h.version < ZSTD_VERSION:
        raise UserError(
            f"corrupt SPZ file: an uncompressed NGSP header with version {h.version} (versions 1-3 are gzip streams)",
            source,
        )
    num_streams, toc_offset = _HEADER_V4.unpack_from(data)[6:8]
    if toc_offset < _HEADER_V4.size or toc_offset + num_streams * _TOC_ENTRY.size > len(data):
        raise UserError(
            f"truncated or corrupt SPZ file: table of contents at byte {toc_offset} "
            f"({num_streams} entries) does not fit the {len(data)}-byte file",
            source,
        )
    frame = "RUB"
    if h.flags & FLAG_HAS_EXTENSIONS:
        frame = _read_extensions(data[_HEADER_V4.size : toc_offset], source)
    h = SpzHeader(h.version, h.num_points, h.sh_degree, h.fractional_bits, h.flags, frame)
    sizes = h.stream_sizes
    present = [i for i, size in enumerate(sizes) if size]
    if num_streams != len(present):
        raise UserError(
            f"inconsistent SPZ file: {num_streams} streams for {h.num_points} Gaussians of SH degree "
            f"{h.sh_degree} (expected {len(present)})",
            source,
        )
    arrays = [b""] * len(sizes)
    off = toc_offset + num_streams * _TOC_ENTRY.size
    dctx = zstandard.ZstdDecompressor()
    for k, i in enumerate(present):
        csize, usize = _TOC_ENTRY.unpack_from(data, toc_offset + k * _TOC_ENTRY.size)
        if usize != sizes[i]:
            raise UserError(
                f"inconsistent SPZ file: stream {k} holds {usize} bytes, {sizes[i]} expected for "
                f"{h.num_points} Gaussians",
                source,
            )
        if off + csize > len(data):
            raise UserError(f"truncated SPZ file: stream {k} ends past the end of the file", source)
        try:
            arr = dctx.decompress(data[off : off + csize], max_output_size=usize)
        except zstandard.ZstdError as e:
            raise UserError(f"corrupt SPZ file: bad zstd stream {k} ({e})", source) from None
        if len(arr) != usize:
            raise UserError(f"corrupt SPZ file: stream {k} decompresses to {len(arr)} bytes, {usize} declared", source)
        arrays[i] = arr
        off += csize
    if off != len(data):
        raise UserError(f"inconsistent SPZ file: {len(data) - off} unexpected bytes after the streams", source)
    return h, arrays


def _split(data: bytes, source) -> tuple[SpzHeader, list[bytes]]:
    """The header and the six attribute arrays (bytes) of an SPZ file of any version."""
    if len(data) == 0:
        raise UserError("empty file, not an SPZ file", source)
    if data[:2] == _GZIP_MAGIC:
        return _split_legacy(data, source)
    if len(data) >= 4 and struct.unpack_from("<I", data)[0] == SPZ_MAGIC:
        return _split_v4(data, source)
    raise UserError("not an SPZ file (neither a gzip stream nor an 'NGSP' header)", source)


def decode_spz(
    data: bytes, source: str | os.PathLike | None = None, *, convert_frame: bool = True
) -> tuple[GaussianScene, SpzHeader]:
    """Decode SPZ file bytes (any version 1-4) into a scene and its header.

    Args:
        data: The whole file.
        source: The file to name in errors.
        convert_frame: Undo the spec's RDF -> RUB conversion (False reads the data as stored).

    Returns:
        ``(scene, header)``: a float32 CPU ``GaussianScene`` and the ``SpzHeader``. Raises
        ``UserError`` (naming ``source``) for anything that is not a well-formed SPZ file.
    """
    h, (pos_b, alpha_b, color_b, scale_b, rot_b, sh_b) = _split(data, source)
    n = h.num_points
    k_rest = num_sh_coeffs(h.sh_degree) - 1
    as_u8 = lambda b: np.frombuffer(b, dtype=np.uint8)  # noqa: E731

    if h.version == 1:
        means = np.frombuffer(pos_b, dtype="<f2").reshape(n, 3).astype(np.float64)
    else:
        b = as_u8(pos_b).reshape(n, 3, 3).astype(np.int64)
        fixed = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
        fixed = fixed - ((fixed & 0x800000) << 1)  # sign-extend 24 -> 64 bits
        means = fixed.astype(np.float64) / float(1 << h.fractional_bits)

    # alphas: byte/255 is sigmoid(opacity); keep the logit finite at 0 and 255 by clamping a
    # quarter step inwards (re-encoding still gives the same byte).
    a = np.clip(as_u8(alpha_b).astype(np.float64) / 255.0, 0.25 / 255.0, 1.0 - 0.25 / 255.0)
    opacities = np.log(a / (1.0 - a))
    sh0 = (as_u8(color_b).reshape(n, 3).astype(np.float64) / 255.0 - 0.5) / COLOR_SCALE
    scales = as_u8(scale_b).reshape(n, 3).astype(np.float64) / 16.0 - 10.0
    if h.rotation_bytes == 4:
        quats = _unpack_rotations_v3(as_u8(rot_b).reshape(n, 4))
    else:
        quats = _unpack_rotations_v2(as_u8(rot_b).reshape(n, 3))
    shN = (as_u8(sh_b).reshape(n, k_rest, 3).astype(np.float64) - 128.0) / 128.0

    if convert_frame and h.stored_frame == "RUB":
        means, quats, shN = frame_flip(means, quats, shN)

    def t(x):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    scene = GaussianScene(
        means=t(means),
        quats=t(quats),
        scales=t(scales),
        opacities=t(opacities),
        sh0=t(sh0.reshape(n, 1, 3)),
        shN=t(shN.reshape(n, k_rest, 3)),
        antialiased=h.antialiased,
    )
    return scene, h


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------
def _read_file(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError("no such file", path) from None
    except IsADirectoryError:
        raise UserError("is a directory, not an SPZ file", path) from None
    except OSError as e:
        raise UserError(f"cannot read file: {e.strerror or e}", path) from None


def write_spz(
    scene: GaussianScene,
    path: str | os.PathLike,
    fractional_bits: int = DEFAULT_FRACTIONAL_BITS,
    version: int = DEFAULT_VERSION,
    *,
    antialiased: bool | None = None,
    convert_frame: bool = True,
    compresslevel: int | None = None,
) -> Path:
    """Write ``scene`` (in its PLY / world frame) to ``path`` as SPZ, atomically.

    Args:
        scene: The scene.
        path: The output file.
        fractional_bits: Fixed-point precision of the positions (step 2^-fractional_bits; every
            |coordinate| should be below 2^(23 - fractional_bits); beyond, fewer bits are used).
        version: 4 (zstd streams, default), 3 (gzip, smallest-three rotations; for readers without
            version 4, such as Spark) or 2.
        antialiased: Header flag; ``scene.antialiased`` when None.
        convert_frame: Apply the spec's RDF -> RUB conversion (see the module docstring).
        compresslevel: gzip level for versions 2-3 (6, what the reference library uses) or zstd level
            for version 4 (12, likewise).

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    data = encode_spz(
        scene,
        fractional_bits,
        version,
        antialiased=antialiased,
        convert_frame=convert_frame,
        compresslevel=compresslevel,
        path=path,
    )
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def read_spz(path: str | os.PathLike, *, convert_frame: bool = True) -> GaussianScene:
    """Read an SPZ file (versions 1-4) into a scene in the PLY frame.

    Args:
        path: The ``.spz`` file.
        convert_frame: Undo the spec's RDF -> RUB conversion (False for files written without it).

    Returns:
        A float32 CPU ``GaussianScene``. Raises ``UserError`` naming the file for a missing,
        corrupt, truncated, non-SPZ or unsupported file.
    """
    scene, _ = decode_spz(_read_file(path), path, convert_frame=convert_frame)
    return scene


def read_spz_header(path: str | os.PathLike) -> SpzHeader:
    """The validated header of an SPZ file (reads the whole file, checks its streams).

    Args:
        path: The ``.spz`` file.

    Returns:
        The ``SpzHeader``.
    """
    return _split(_read_file(path), path)[0]
