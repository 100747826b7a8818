"""The PLY layout of the Inria 3D Gaussian Splatting code (and of most tools that read its output).

One ``vertex`` element, binary little-endian, float32 properties in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 ... f_rest_{3(K-1)-1}
    opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

All values are raw (pre-activation): log-scales, opacity logits, an unnormalised quaternion with
``rot_0`` = w. ``f_rest`` is channel-major: all degree>=1 coefficients of R, then of G, then of B,
so ``shN[n, k, c] = f_rest_{c*(K-1)+k}`` (the Inria ``save_ply`` flattens ``features_rest``
transposed to (N, 3, K-1); its ``load_ply`` reshapes to (N, 3, K-1) and transposes back).
Normals are written as zeros, as the Inria code does.

The PLY container itself (header keywords, type names, the three formats) follows Paul Bourke's
PLY description (https://paulbourke.net/dataformats/ply/). Binary files are read straight into a
numpy structured array (about a second per million Gaussians); ASCII files and files with list
properties before or in ``vertex`` are parsed by ``plyfile``.

Files made by other tools:

* ``double`` (float64) properties are read, rounded to float32 (``write_ply`` writes float32).
* ``opacity = +-inf`` (splat-transform writes +inf for Gaussians whose 8-bit alpha was 255) is
  replaced by the finite logit +-``OPACITY_LOGIT_LIMIT`` (sigmoid = 1 - 2e-9, the same on screen)
  with one warning line naming the file and the count; NaN, and Inf anywhere else, are errors.
* The antialiased (Mip-Splatting) flag is read from a header comment in either convention that
  splat-transform reads: Brush's ``SplatRenderMode: default | mip | 2dgs`` and Postshot's
  ``antialiased 0 | 1`` (case-insensitive, the last one wins). ``write_ply`` writes
  ``comment SplatRenderMode: mip`` for an antialiased scene (what splat-transform writes; gsplat's
  exporter writes no comment).
* A SuperSplat / PlayCanvas *compressed* PLY (``element chunk`` + ``packed_*`` vertex properties)
  is recognised from its header, whatever the file is called, and decoded by
  :mod:`splatdistill.formats.compressed_ply`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from splatdistill.errors import UserError, warn
from splatdistill.fileio import atomic_path
from splatdistill.scene.gaussians import GaussianScene

# PLY scalar type names (both the original and the sized spellings) -> numpy type codes.
_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}

# f_rest property counts per SH degree: 3 * ((d+1)^2 - 1).
_REST_COUNTS = {0: 0, 9: 1, 24: 2, 45: 3}
_NORMALS = ("nx", "ny", "nz")
_REST_RE = re.compile(r"^f_rest_(\d+)$")

OPACITY_LOGIT_LIMIT = 20.0  # where +-inf opacity logits are clamped to
AA_COMMENT = "SplatRenderMode: mip"  # Brush's spelling, which splat-transform writes too

_MAX_HEADER_BYTES = 1 << 20  # no real header comes near this; stops reading a non-PLY forever


def _base_names() -> tuple[list[str], list[str]]:
    head = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2"]
    tail = ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return head, tail


def property_names(sh_degree: int, normals: bool = True) -> list[str]:
    """The vertex property names of the Inria layout, in file order.

    Args:
        sh_degree: SH degree, 0-3 (sets the number of ``f_rest_*``).
        normals: Include ``nx, ny, nz`` after the position.

    Returns:
        The names: ``x, y, z, [nx, ny, nz,] f_dc_0-2, f_rest_*, opacity, scale_0-2, rot_0-3``.
    """
    head, tail = _base_names()
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    normal = list(_NORMALS) if normals else []
    return head[:3] + normal + head[3:] + [f"f_rest_{i}" for i in range(n_rest)] + tail


# --- header ---------------------------------------------------------------------------------------
@dataclass
class _Property:
    name: str
    dtype: str | None  # numpy code of a scalar property; None for a list property
    list_types: tuple[str, str] | None = None  # (count type, item type) of a list property


@dataclass
class _Element:
    name: str
    count: int
    properties: list[_Property] = field(default_factory=list)

    @property
    def has_lists(self) -> bool:
        return any(p.dtype is None for p in self.properties)

    def dtype(self, endian: str) -> np.dtype:
        return np.dtype([(p.name, endian + p.dtype) for p in self.properties])


@dataclass
class _Header:
    format: str
    elements: list[_Element]
    comments: list[str]
    data_offset: int  # byte offset of the first data byte

    def element(self, name: str) -> _Element | None:
        for e in self.elements:
            if e.name == name:
                return e
        return None


def _read_header(f, path) -> _Header:
    first = f.readline(64)
    if first.rstrip(b"\r\n") != b"ply":
        raise UserError("not a PLY file (it does not start with 'ply')", path)
    fmt = None
    elements: list[_Element] = []
    comments: list[str] = []
    total = len(first)
    while True:
        raw = f.readline(_MAX_HEADER_BYTES)
        total += len(raw)
        if not raw:
            raise UserError("truncated PLY header (no 'end_header' line)", path)
        if total > _MAX_HEADER_BYTES:
            raise UserError("PLY header too long (no 'end_header' in the first 1 MiB)", path)
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise UserError("PLY header is not ASCII text (file damaged?)", path) from None
        if not line:
            continue
        words = line.split()
        key = words[0]
        if key == "end_header":
            break
        if key in ("comment", "obj_info"):
            comments.append(line[len(key) :].strip())
        elif key == "format":
            if len(words) != 3 or words[1] not in _FORMATS:
                raise UserError(f"unsupported PLY format line '{line}'", path)
            fmt = words[1]
        elif key == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise UserError(f"bad PLY element line '{line}'", path)
            if any(e.name == words[1] for e in elements):
                raise UserError(f"PLY element '{words[1]}' is declared twice", path)
            elements.append(_Element(words[1], int(words[2])))
        elif key == "property":
            if not elements:
                raise UserError(f"PLY property before any element: '{line}'", path)
            el = elements[-1]
            if len(words) == 5 and words[1] == "list":
                if words[2] not in _PLY_TYPES or words[3] not in _PLY_TYPES:
                    raise UserError(f"unknown type in PLY property line '{line}'", path)
                prop = _Property(words[4], None, (_PLY_TYPES[words[2]], _PLY_TYPES[words[3]]))
            elif len(words) == 3 and words[1] in _PLY_TYPES:
                prop = _Property(words[2], _PLY_TYPES[words[1]])
            else:
                raise UserError(f"bad PLY property line '{line}'", path)
            if any(p.name == prop.name for p in el.properties):
                raise UserError(f"property '{prop.name}' of element '{el.name}' is declared twice", path)
            el.properties.append(prop)
        else:
            raise UserError(f"unknown PLY header line '{line}'", path)
    if fmt is None:
        raise UserError("PLY header has no 'format' line", path)
    return _Header(fmt, elements, comments, f.tell())


def antialiased_from_comments(comments: list[str]) -> bool:
    """The antialiased flag the header comments record (see the module docstring).

    Args:
        comments: The header's ``comment`` lines, without the keyword.

    Returns:
        True when the comments say the model was trained with the anti-aliasing filter.
    """
    aa = False
    for c in comments:
        low = c.strip().lower()
        if low.startswith("splatrendermode:"):
            mode = low[len("splatrendermode:") :].strip()
            if mode in ("mip", "default", "2dgs"):
                aa = mode == "mip"
        elif low.startswith("antialiased "):
            value = low[len("antialiased ") :].strip()
            if value in ("0", "1"):
                aa = value == "1"
    return aa


def read_header(path: str | os.PathLike) -> _Header:
    """The parsed PLY header of ``path``.

    Args:
        path: The file.

    Returns:
        The header (elements with their properties and counts, format, comments, data offset).
        A missing or non-PLY file raises ``UserError``.
    """
    path = Path(path)
    with _open_checked(path) as f:
        return _read_header(f, path)


def is_compressed_ply(header: _Header) -> bool:
    """Whether the header is that of a SuperSplat / PlayCanvas compressed PLY.

    Args:
        header: A header from ``read_header``.

    Returns:
        True for a ``chunk`` element and a ``packed_position`` vertex property.
    """
    vertex = header.element("vertex")
    return (
        header.element("chunk") is not None
        and vertex is not None
        and any(p.name == "packed_position" for p in vertex.properties)
    )


def _open_checked(path: Path):
    if not path.exists():
        raise UserError("file not found", path)
    if path.is_dir():
        raise UserError("is a directory, expected a PLY file", path)
    try:
        return open(path, "rb")
    except OSError as e:
        raise UserError(f"cannot open: {e.strerror or e}", path) from None


# --- reading ---------------------------------------------------------------------------------------
def _read_vertex_data(path: Path) -> tuple[np.ndarray, _Header]:
    """The ``vertex`` element as a structured array (declared types and byte order)."""
    with _open_checked(path) as f:
        size = os.fstat(f.fileno()).st_size
        header = _read_header(f, path)
        vertex = header.element("vertex")
        if vertex is None:
            names = ", ".join(f"'{e.name}'" for e in header.elements) or "none"
            hint = (
                " (a compressed PLY? only the uncompressed Inria layout is read)"
                if (header.element("chunk") is not None)
                else ""
            )
            raise UserError(f"PLY has no 'vertex' element (elements: {names}){hint}", path)
        if not vertex.properties:
            raise UserError("the PLY 'vertex' element has no properties", path)
        endian = _FORMATS[header.format]
        before = header.elements[: header.elements.index(vertex)]
        fast = endian is not None and not vertex.has_lists and not any(e.has_lists for e in before)
        if fast:
            offset = header.data_offset + sum(e.count * e.dtype(endian).itemsize for e in before)
            dtype = vertex.dtype(endian)
            need = offset + vertex.count * dtype.itemsize
            if size < need:
                raise UserError(
                    f"truncated PLY: {vertex.count} vertices need {need} bytes, the file has {size}",
                    path,
                )
            f.seek(offset)
            data = np.fromfile(f, dtype=dtype, count=vertex.count)
            if data.shape[0] != vertex.count:  # the file shrank while we read it
                raise UserError("truncated PLY: fewer vertices than the header declares", path)
            return data, header
    return _read_with_plyfile(path, header), header


def _read_with_plyfile(path: Path, header: _Header) -> np.ndarray:
    """ASCII PLY, or list properties in the way: the general (slower) parser of ``plyfile``."""
    import plyfile

    try:
        ply = plyfile.PlyData.read(str(path))
        data = ply["vertex"].data
    except plyfile.PlyParseError as e:
        msg = str(e)
        if "early end-of-file" in msg or "truncated" in msg:
            raise UserError(f"truncated PLY: {msg}", path) from None
        raise UserError(f"cannot parse PLY data (truncated or damaged?): {msg}", path) from None
    except (ValueError, EOFError, IndexError, KeyError, OverflowError) as e:
        raise UserError(f"cannot parse PLY data (truncated or damaged?): {e}", path) from None
    vertex = header.element("vertex")
    if data.dtype.names is None or len(data) != vertex.count:
        raise UserError("truncated PLY: fewer vertices than the header declares", path)
    if any(data.dtype[n].kind == "O" for n in data.dtype.names):  # list property in 'vertex'
        bad = [n for n in data.dtype.names if data.dtype[n].kind == "O"]
        raise UserError(f"vertex property '{bad[0]}' is a list, expected a scalar", path)
    return data


def _required_names(names: tuple[str, ...], path) -> tuple[list[str], int]:
    """The properties to read, in the order x..z, f_dc, f_rest, opacity, scale, rot; and the degree."""
    n_rest = sum(1 for n in names if _REST_RE.match(n))
    if n_rest not in _REST_COUNTS:
        raise UserError(f"{n_rest} f_rest_* properties; expected 0, 9, 24 or 45 (SH degree 0, 1, 2 or 3)", path)
    degree = _REST_COUNTS[n_rest]
    head, tail = _base_names()
    required = head + [f"f_rest_{i}" for i in range(n_rest)] + tail
    present = set(names)
    missing = [n for n in required if n not in present]
    if missing:
        plural = "property" if len(missing) == 1 else "properties"
        raise UserError(f"missing {plural} " + ", ".join(f"'{m}'" for m in missing), path)
    return required, degree


def _float32_matrix(data: np.ndarray, required: list[str], path) -> tuple[np.ndarray, dict[str, int]]:
    """A float32 (N, P) matrix holding the ``required`` properties, and their column numbers.

    When every property is float32 of one byte order (the usual case) this is a view of the
    records, no copy. Other types are converted, and refused unless the conversion is exact.
    """
    n = data.shape[0]
    names = data.dtype.names
    kinds = {data.dtype[k].str for k in names}
    if len(kinds) == 1 and kinds <= {"<f4", ">f4"} and data.dtype.itemsize == 4 * len(names) and n:
        flat = np.ascontiguousarray(data).view(data.dtype[names[0]]).reshape(n, len(names))
        return flat, {k: i for i, k in enumerate(names)}
    mat = np.empty((n, len(required)), dtype=np.float32)
    for j, k in enumerate(required):
        col = data[k]
        if col.dtype.kind == "f" and col.dtype.itemsize == 4:
            mat[:, j] = col  # at most a byte swap
            continue
        if col.dtype.kind not in "fiu":
            raise UserError(f"property '{k}' has unsupported type {col.dtype}", path)
        if col.dtype.kind == "f":
            if k != "opacity":  # +-inf opacity is clamped by the caller
                _check_finite(col, k, path)
            with np.errstate(over="ignore", invalid="ignore"):
                conv = col.astype(np.float32)  # float64: rounded to the nearest float32
            if k != "opacity":
                _check_finite(conv, k, path)  # a double beyond float32's range
            mat[:, j] = conv
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            conv = col.astype(np.float32)
        back = conv.astype(np.float64)
        if not np.array_equal(back, col.astype(np.float64)):
            bad = int(np.flatnonzero(back != col.astype(np.float64))[0])
            raise UserError(
                f"property '{k}' ({col.dtype.name}) has a value that is not exactly "
                f"representable as float32 ({col[bad].item()!r} at vertex {bad})",
                path,
            )
        mat[:, j] = conv
    return mat, {k: j for j, k in enumerate(required)}


def _check_finite(col: np.ndarray, name: str, path) -> None:
    ok = np.isfinite(col)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise UserError(f"property '{name}' contains NaN or Inf (first at vertex {i}: {col[i]})", path)


def read_ply(path: str | os.PathLike) -> GaussianScene:
    """Read a 3DGS PLY (Inria layout) into a :class:`GaussianScene` of float32 CPU tensors.

    Normals are ignored; other unknown vertex properties are ignored with a warning. A compressed PLY
    is handed to ``read_compressed_ply``. Any problem with the file raises :class:`UserError` naming
    the file.

    Args:
        path: The ``.ply`` file (binary or ASCII).

    Returns:
        A ``GaussianScene`` of N Gaussians, SH degree from the number of ``f_rest_*`` properties.
    """
    path = Path(path)
    header = read_header(path)
    if is_compressed_ply(header):
        from splatdistill.formats.compressed_ply import read_compressed_ply

        return read_compressed_ply(path)
    data, header = _read_vertex_data(path)
    names = data.dtype.names or ()
    required, degree = _required_names(names, path)
    known = set(required) | set(_NORMALS)
    extra = [n for n in names if n not in known]
    if extra:
        shown = ", ".join(extra[:8]) + (f", ... ({len(extra)} in all)" if len(extra) > 8 else "")
        warn(f"ignoring unknown vertex properties: {shown}", path)
    others = [e.name for e in header.elements if e.name != "vertex"]
    if others:
        warn(f"ignoring PLY elements: {', '.join(others)}", path)

    mat, col = _float32_matrix(data, required, path)
    k1 = (degree + 1) ** 2 - 1

    def gather(cols) -> torch.Tensor:
        # np.take along axis 1 with an index array of shape S gives (N, *S), contiguous.
        out = np.take(mat, np.asarray(cols, dtype=np.intp), axis=1)
        if not out.dtype.isnative:
            out = out.astype(np.float32)
        return torch.from_numpy(out)

    def ix(keys: list[str]) -> list[int]:
        return [col[k] for k in keys]

    rest = np.array(ix([f"f_rest_{i}" for i in range(3 * k1)]), dtype=np.intp)
    # f_rest is channel-major: shN[:, k, c] = f_rest_{c*k1 + k}
    params = dict(
        means=gather(ix(["x", "y", "z"])),
        quats=gather(ix(["rot_0", "rot_1", "rot_2", "rot_3"])),
        scales=gather(ix(["scale_0", "scale_1", "scale_2"])),
        opacities=gather(col["opacity"]),
        sh0=gather([ix(["f_dc_0", "f_dc_1", "f_dc_2"])]),
        shN=gather(rest.reshape(3, k1).T if k1 else np.zeros((0, 3), dtype=np.intp)),
    )
    params["opacities"] = clamp_infinite_opacity(params["opacities"], path)
    if not all(bool(torch.isfinite(v).all()) for v in params.values()):
        for k in required:
            _check_finite(mat[:, col[k]], k, path)
    return GaussianScene(**params, antialiased=antialiased_from_comments(header.comments))


def clamp_infinite_opacity(opacities: torch.Tensor, path) -> torch.Tensor:
    """Opacity logits with +-inf clamped to +-OPACITY_LOGIT_LIMIT (one warning); NaN is an error.

    Args:
        opacities: [N] float32 opacity logits.
        path: The file to name in the warning or error.

    Returns:
        [N] logits; only the infinities change.
    """
    if bool(torch.isfinite(opacities).all()):
        return opacities
    nan = torch.isnan(opacities)
    if bool(nan.any()):
        i = int(torch.nonzero(nan)[0])
        raise UserError(f"property 'opacity' contains NaN (first at vertex {i})", path)
    inf = torch.isinf(opacities)
    n_pos, n_neg = int((inf & (opacities > 0)).sum()), int((inf & (opacities < 0)).sum())
    parts = [f"{n_pos} with opacity = +inf" if n_pos else "", f"{n_neg} with opacity = -inf" if n_neg else ""]
    warn(
        f"{' and '.join(p for p in parts if p)} of {len(opacities)} Gaussians: clamped to the logit "
        f"+-{OPACITY_LOGIT_LIMIT:g} (alpha 1 and 0)",
        path,
    )
    # only the infinities change: finite logits beyond the limit are kept as they are
    return torch.where(inf, torch.sign(opacities) * OPACITY_LOGIT_LIMIT, opacities)


# --- writing ---------------------------------------------------------------------------------------
def write_ply(scene: GaussianScene, path: str | os.PathLike) -> Path:
    """Write ``scene`` in the Inria layout (binary little-endian float32, zero normals), atomically.

    Values are stored bit for bit (float32); a scene with NaN or Inf is refused (UserError), since
    no reader would accept the file.

    Args:
        scene: The scene.
        path: The output file.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    p = {k: v.detach().to("cpu", torch.float32).contiguous().numpy() for k, v in scene.items()}
    for k, v in p.items():
        if v.size and not np.isfinite(v).all():
            raise UserError(f"cannot write: parameter '{k}' contains NaN or Inf", path)
    n = p["means"].shape[0]
    k1 = p["shN"].shape[1]
    degree = scene.sh_degree
    names = property_names(degree)
    mat = np.empty((n, len(names)), dtype="<f4")
    mat[:, 0:3] = p["means"]
    mat[:, 3:6] = 0.0
    mat[:, 6:9] = p["sh0"].reshape(n, 3)
    r = 9 + 3 * k1
    mat[:, 9:r] = p["shN"].transpose(0, 2, 1).reshape(n, 3 * k1)
    mat[:, r] = p["opacities"]
    mat[:, r + 1 : r + 4] = p["scales"]
    mat[:, r + 4 : r + 8] = p["quats"]
    header = "ply\nformat binary_little_endian 1.0\n"
    if scene.antialiased:
        header += f"comment {AA_COMMENT}\n"
    header += f"element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header.encode("ascii"))
            mat.tofile(f)
    return path


# --- info ------------------------------------------------------------------------------------------
def ply_info(path: str | os.PathLike) -> dict:
    """What the header says (no data is read): counts, properties, SH degree, expected size.

    Args:
        path: The ``.ply`` file.

    Returns:
        A dict: ``path``, ``file_size``, ``format``, ``elements`` (name -> count), ``num_gaussians``,
        ``properties``, ``extra_properties``, ``sh_degree`` (None when the f_rest count fits no
        degree), ``header_bytes``, ``expected_size`` and ``truncated`` (both None unless the file is
        binary and its elements have no lists), ``comments``.
    """
    path = Path(path)
    with _open_checked(path) as f:
        size = os.fstat(f.fileno()).st_size
        header = _read_header(f, path)
    vertex = header.element("vertex")
    props = [p.name for p in vertex.properties] if vertex else []
    n_rest = sum(1 for p in props if _REST_RE.match(p))
    endian = _FORMATS[header.format]
    expected = None
    if endian is not None and not any(e.has_lists for e in header.elements):
        expected = header.data_offset + sum(e.count * e.dtype(endian).itemsize for e in header.elements)
    head, tail = _base_names()
    known = set(head) | set(tail) | set(_NORMALS)
    return {
        "path": str(path),
        "file_size": size,
        "format": header.format,
        "elements": {e.name: e.count for e in header.elements},
        "num_gaussians": vertex.count if vertex else 0,
        "properties": props,
        "extra_properties": [p for p in props if p not in known and not _REST_RE.match(p)],
        "sh_degree": _REST_COUNTS.get(n_rest),
        "header_bytes": header.data_offset,
        "expected_size": expected,
        "truncated": None if expected is None else size < expected,
        "comments": header.comments,
    }
