"""The ``.sdz`` container: named numpy arrays + JSON metadata in one checksummed file.

Generic on purpose: it stores whatever arrays and metadata it is given; deciding what goes in
is the codecs' business (``sdz.py``, ``packed.py``).

Layout (all integers little-endian)::

    offset  size  field
    0       4     magic b"SDZ1"
    4       2     format version (uint16), currently 1
    6       2     flags (uint16): bit 0 = the header is zstd-compressed (a reader refuses unknown flags)
    8       4     header length H in bytes (uint32), as stored
    12      4     CRC32 of the stored header bytes (uint32)
    16      H     header: UTF-8 JSON (see below), zstd-compressed when flag bit 0 is set
    16+H    ...   section payloads, back to back, in header order

Writers set flag bit 0 (one zstd frame, level 19): the header's JSON repeats the same keys for every
section and is a few kB, which is 5-9 % of a small model's file (a 3k-Gaussian packed scene: 3.0 kB
of JSON, 1.0 kB compressed). Files written with flags 0 (plain JSON) are read as before.

Header JSON::

    {"sections": [{"name": str, "dtype": "<f4" | "|u1" | ...,  "shape": [int, ...],
                   "encoding": "zstd", "filter": "none" | "byteplanes",
                   "offset": int,        # from the start of the payload area
                   "stored_nbytes": int, "stored_crc32": int,   # the compressed bytes
                   "raw_nbytes": int,    "raw_crc32": int},     # the array's bytes (C order, LE)
                  ...],
     "payload_nbytes": int,              # the file is exactly 16 + H + payload_nbytes bytes
     "meta": {...}}                      # the caller's metadata, JSON as given

Each section is compressed with zstd (level 19 by default; the frame records its content size
and its own xxhash64 content checksum). ``filter = "byteplanes"`` (used when an item row is wider
than one byte) stores the array's bytes as planes: viewing the C-order bytes as a matrix with one
row per item (``shape[0]`` rows), the matrix is written column by column, so every channel's
byte 0 of all items comes first, then its byte 1, and so on. This is the "byte shuffle" of Blosc
/ HDF5 extended to whole rows (structure of arrays): the high bytes of float16 / uint16 data are
very repetitive and, with the items in Morton order, every channel varies slowly along the file
(see docs/benchmarks.md, "Measurements behind design choices", for what it saves). Long-distance
matching is enabled for sections larger than the level's window (8 MiB at level 19), where it can
find repeats that the window cannot.

Reading verifies, in order: magic, version, flags, header length, header CRC32, the header's zstd
frame (when compressed), JSON, the header's
schema (dtypes, shapes, sizes, offsets), the file length, then per section the stored CRC32, the
zstd frame's declared size, decompression (and zstd's own checksum), the decompressed size and the
raw CRC32. Every failure raises ``UserError`` naming the file and the problem.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import zstandard

from splatdistill.errors import UserError
from splatdistill.fileio import atomic_path

MAGIC = b"SDZ1"
FORMAT_VERSION = 1
DEFAULT_LEVEL = 19
SUFFIX = ".sdz"

_PREFIX = struct.Struct("<4sHHII")  # magic, version, flags, header length, header crc32
PREFIX_SIZE = _PREFIX.size  # 16
_MAX_HEADER = 1 << 30
FLAG_ZSTD_HEADER = 1  # flags bit 0: the header is one zstd frame
_KNOWN_FLAGS = FLAG_ZSTD_HEADER

# dtypes a section may hold (little-endian on disk).
_ALLOWED_DTYPES = {
    "|b1",
    "|i1",
    "|u1",
    "<i2",
    "<u2",
    "<i4",
    "<u4",
    "<i8",
    "<u8",
    "<f2",
    "<f4",
    "<f8",
}


def _crc32(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _le_dtype(dt: np.dtype) -> np.dtype:
    return dt if dt.byteorder in ("<", "|") or dt.itemsize == 1 else dt.newbyteorder("<")


def _rows(shape) -> int:
    return int(shape[0]) if len(shape) else 1


def _to_planes(raw: bytes, rows: int) -> bytes:
    """Byte-plane transpose: the (rows, row_bytes) byte matrix stored column by column."""
    if not raw or rows <= 1 or len(raw) == rows:
        return raw
    return np.ascontiguousarray(np.frombuffer(raw, dtype=np.uint8).reshape(rows, -1).T).tobytes()


def _from_planes(data: bytes, rows: int) -> bytes:
    if not data or rows <= 1 or len(data) == rows:
        return data
    return np.ascontiguousarray(np.frombuffer(data, dtype=np.uint8).reshape(-1, rows).T).tobytes()


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON-serialisable")


def _compressor(level: int, size: int) -> zstandard.ZstdCompressor:
    # Long-distance matching only pays for inputs larger than the level's window (8 MiB at 19).
    ldm = size > (1 << zstandard.ZstdCompressionParameters.from_level(level).window_log)
    params = zstandard.ZstdCompressionParameters.from_level(
        level, source_size=max(size, 1), enable_ldm=ldm, write_checksum=True, write_content_size=True
    )
    return zstandard.ZstdCompressor(compression_params=params)


def encode_container(sections: dict[str, np.ndarray], meta: dict | None = None, level: int = DEFAULT_LEVEL) -> bytes:
    """The bytes of an ``.sdz`` file holding ``sections`` and ``meta`` (see the module docstring).

    Args:
        sections: Name -> numpy array of any numeric dtype and shape, stored in this order.
        meta: JSON-serialisable metadata (numpy scalars and arrays are converted).
        level: zstd level of the sections.

    Returns:
        The whole file.
    """
    if not 1 <= int(level) <= 22:
        raise ValueError(f"zstd level must be in 1..22, got {level}")
    entries = []
    payloads = []
    offset = 0
    for name, arr in sections.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"section names must be non-empty strings, got {name!r}")
        a = np.asarray(arr)
        dt = _le_dtype(a.dtype)
        if dt.str not in _ALLOWED_DTYPES:
            raise ValueError(f"section '{name}': dtype {a.dtype} is not supported")
        raw = np.ascontiguousarray(a, dtype=dt).tobytes()
        rows = _rows(a.shape)
        filt = "byteplanes" if rows > 1 and len(raw) > rows else "none"
        data = _to_planes(raw, rows) if filt == "byteplanes" else raw
        stored = _compressor(int(level), len(data)).compress(data)
        entries.append(
            {
                "name": name,
                "dtype": dt.str,
                "shape": [int(s) for s in a.shape],
                "encoding": "zstd",
                "filter": filt,
                "offset": offset,
                "stored_nbytes": len(stored),
                "stored_crc32": _crc32(stored),
                "raw_nbytes": len(raw),
                "raw_crc32": _crc32(raw),
            }
        )
        payloads.append(stored)
        offset += len(stored)
    header = {"sections": entries, "payload_nbytes": offset, "meta": {} if meta is None else meta}
    hbytes = json.dumps(header, separators=(",", ":"), allow_nan=False, default=_json_default).encode("utf-8")
    if len(hbytes) > _MAX_HEADER:
        raise ValueError("container header too large")
    hbytes = _compressor(DEFAULT_LEVEL, len(hbytes)).compress(hbytes)
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, FLAG_ZSTD_HEADER, len(hbytes), _crc32(hbytes))
    return b"".join([prefix, hbytes, *payloads])


def write_container(
    path: str | os.PathLike, sections: dict[str, np.ndarray], meta: dict | None = None, level: int = DEFAULT_LEVEL
) -> int:
    """Write ``sections`` and ``meta`` to ``path`` as an ``.sdz`` container, atomically.

    Args:
        path: The output file.
        sections: Name -> numpy array, stored in this order.
        meta: JSON-serialisable metadata (numpy scalars and arrays are converted).
        level: zstd level of the sections.

    Returns:
        The file size in bytes.
    """
    data = encode_container(sections, meta, level)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return len(data)


# ---- reading ----------------------------------------------------------------------------------------------
def _parse_header(data: bytes, src) -> tuple[dict, int]:
    """Check the prefix and header of a container held in ``data``; returns (header, payload start)."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise UserError("not an .sdz file (bad magic number)", src)
    if len(data) < PREFIX_SIZE:
        raise UserError(f"truncated .sdz file ({len(data)} bytes, shorter than its 16-byte prefix)", src)
    _, version, flags, hlen, hcrc = _PREFIX.unpack_from(data, 0)
    if version != FORMAT_VERSION:
        raise UserError(f"unsupported .sdz format version {version} (this build reads version {FORMAT_VERSION})", src)
    if flags & ~_KNOWN_FLAGS:
        raise UserError(f"unsupported .sdz flags 0x{flags:04x}", src)
    if PREFIX_SIZE + hlen > len(data):
        raise UserError(
            f"truncated .sdz file: header of {hlen} bytes but only {len(data) - PREFIX_SIZE} bytes follow the prefix",
            src,
        )
    hbytes = data[PREFIX_SIZE : PREFIX_SIZE + hlen]
    if _crc32(hbytes) != hcrc:
        raise UserError("corrupt .sdz file: header checksum mismatch", src)
    if flags & FLAG_ZSTD_HEADER:
        try:
            hbytes = zstandard.ZstdDecompressor().decompress(hbytes, max_output_size=_MAX_HEADER)
        except zstandard.ZstdError as e:
            raise UserError(f"corrupt .sdz file: the compressed header does not decompress ({e})", src) from None
    try:
        header = json.loads(hbytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"corrupt .sdz file: header is not valid JSON ({e})", src) from None
    _validate_header(header, src)
    start = PREFIX_SIZE + hlen
    expected = start + header["payload_nbytes"]
    if len(data) < expected:
        raise UserError(f"truncated .sdz file: {len(data)} bytes, the header describes {expected}", src)
    if len(data) > expected:
        raise UserError(f"corrupt .sdz file: {len(data) - expected} unexpected trailing bytes", src)
    return header, start


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate_header(header, src) -> None:
    def bad(msg):
        raise UserError(f"corrupt .sdz header: {msg}", src)

    if not isinstance(header, dict):
        bad("not a JSON object")
    secs = header.get("sections")
    if not isinstance(secs, list):
        bad("'sections' missing or not a list")
    if not _is_int(header.get("payload_nbytes")) or header["payload_nbytes"] < 0:
        bad("'payload_nbytes' missing or invalid")
    if not isinstance(header.get("meta"), dict):
        bad("'meta' missing or not an object")
    names = set()
    offset = 0
    for i, s in enumerate(secs):
        if not isinstance(s, dict):
            bad(f"section {i} is not an object")
        name = s.get("name")
        if not isinstance(name, str) or not name or name in names:
            bad(f"section {i} has a missing or duplicate name")
        names.add(name)
        if s.get("dtype") not in _ALLOWED_DTYPES:
            bad(f"section '{name}' has unsupported dtype {s.get('dtype')!r}")
        shape = s.get("shape")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            bad(f"section '{name}' has an invalid shape")
        if s.get("encoding") != "zstd" or s.get("filter") not in ("none", "byteplanes"):
            bad(f"section '{name}' has an unknown encoding {s.get('encoding')!r} / filter {s.get('filter')!r}")
        for key in ("offset", "stored_nbytes", "stored_crc32", "raw_nbytes", "raw_crc32"):
            if not _is_int(s.get(key)) or s[key] < 0:
                bad(f"section '{name}' has an invalid '{key}'")
        if math.prod(shape) * np.dtype(s["dtype"]).itemsize != s["raw_nbytes"]:
            bad(f"section '{name}': shape {shape} and dtype {s['dtype']} do not match raw_nbytes {s['raw_nbytes']}")
        if s["offset"] != offset:
            bad(f"section '{name}' is not where the previous sections end")
        offset += s["stored_nbytes"]
    if offset != header["payload_nbytes"]:
        bad("section sizes do not add up to payload_nbytes")


def _decode_section(s: dict, stored: bytes, src) -> np.ndarray:
    name = s["name"]
    if _crc32(stored) != s["stored_crc32"]:
        raise UserError(f"corrupt .sdz file: checksum mismatch in section '{name}'", src)
    try:
        declared = zstandard.frame_content_size(stored)
    except zstandard.ZstdError as e:
        raise UserError(f"corrupt .sdz file: section '{name}' is not a zstd frame ({e})", src) from None
    if declared != s["raw_nbytes"]:
        raise UserError(
            f"corrupt .sdz file: section '{name}' decompresses to {declared} bytes, expected {s['raw_nbytes']}", src
        )
    try:
        data = zstandard.ZstdDecompressor().decompress(stored, max_output_size=max(s["raw_nbytes"], 1))
    except zstandard.ZstdError as e:
        raise UserError(f"corrupt .sdz file: section '{name}' does not decompress ({e})", src) from None
    if len(data) != s["raw_nbytes"]:
        raise UserError(
            f"corrupt .sdz file: section '{name}' decompressed to {len(data)} bytes, expected {s['raw_nbytes']}", src
        )
    dt = np.dtype(s["dtype"])
    if s["filter"] == "byteplanes":
        data = _from_planes(data, _rows(s["shape"]))
    if _crc32(data) != s["raw_crc32"]:
        raise UserError(f"corrupt .sdz file: checksum mismatch in the decoded data of section '{name}'", src)
    arr = np.frombuffer(bytearray(data), dtype=dt).reshape(s["shape"])
    return arr.astype(dt.newbyteorder("="), copy=False)


def _read_bytes(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError("no such file", path) from None
    except IsADirectoryError:
        raise UserError("is a directory, not an .sdz file", path) from None
    except OSError as e:
        raise UserError(f"cannot read file ({e.strerror or e})", path) from None


def decode_container(data: bytes, source: str | os.PathLike | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Parse and verify the bytes of an ``.sdz`` file.

    Args:
        data: The whole file.
        source: The file to name in errors.

    Returns:
        ``(sections, meta)``: name -> numpy array in the stored order, and the metadata. Any corruption
        raises ``UserError``.
    """
    header, start = _parse_header(data, source)
    sections: dict[str, np.ndarray] = {}
    for s in header["sections"]:
        a = start + s["offset"]
        sections[s["name"]] = _decode_section(s, data[a : a + s["stored_nbytes"]], source)
    return sections, header["meta"]


def read_container(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read an ``.sdz`` file, verifying every checksum.

    Args:
        path: The file.

    Returns:
        ``(sections, meta)``: name -> numpy array in the order they were written, and the metadata.
        Any corruption raises ``UserError`` naming ``path`` and the problem.
    """
    return decode_container(_read_bytes(path), path)


def read_container_header(path: str | os.PathLike) -> dict:
    """The verified header of an ``.sdz`` file, without decompressing the sections.

    Args:
        path: The file.

    Returns:
        The header dict: ``sections`` (names, dtypes, shapes, sizes, offsets) and ``meta``.
    """
    header, _ = _parse_header(_read_bytes(path), path)
    return header
