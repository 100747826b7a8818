"""Gaussian scene <-> ``.sdz`` sections: ordering, per-attribute quantisation, colour VQ.

``encode_scene`` turns a ``GaussianScene`` into named arrays + JSON metadata for the container
(``container.py``); ``decode_scene`` is its inverse; ``save_sdz`` / ``load_sdz`` do both with the
file. The post-processing follows Compact-3DGS (Lee et al., CVPR 2024; METHODS.md §4: Morton
order, fp16 positions, 8-bit opacity) and LightGaussian's colour VQ (Fan et al., ECCV 2024;
METHODS.md §2: the least significant Gaussians' colour vectors replaced by codewords, the others'
colours kept in fp16). The entropy coding is zstd (instead of Compact-3DGS's Huffman coding).

Order. The decoded scene is **not** in the input order: Gaussians are sorted along a Morton
curve (``morton.morton_order``) so that neighbours in space are neighbours in the file, which
compresses better. With colour VQ the Gaussians whose colours are kept come first and the VQ'd
ones after, each group in Morton order (so no mask needs storing). ``encode_order`` returns the
permutation: ``decode_scene(*encode_scene(s))`` approximates ``s[encode_order(...)]``.

Per-attribute encodings (``bits`` entries and ``position``):

* ``"fp32"``: the raw float32 values, bit-exact (also for quaternions: not normalised).
* ``"fp16"``: IEEE half (error <= half a half-ulp: ``|x| * 2**-11``); quaternions are normalised
  and sign-canonicalised first; positions are stored relative to their per-axis median (stored
  in the metadata), where half precision is finest.
* an integer b in 1..16 (or ``"q<b>"``): uniform quantisation to b bits with per-channel
  ranges [min, max] (``quantize.py``; error <= half a step = (max - min) / (2**b - 1) / 2).

Spaces: log-scales and SH coefficients are quantised as stored. Quaternions are normalised and
sign-canonicalised (w >= 0; q and -q are the same rotation) before fp16 / quantisation, so
w lies in [0, 1]; a zero quaternion becomes the identity. Opacity is quantised **after the
sigmoid** (the rendered alpha, as SPZ and Compact-3DGS's "8-bit opacity" do), so its error bound
holds for ``sigmoid(opacity)``; decoding takes the logit of the value clamped to
[1e-7, 1 - 1e-7]. fp16 / fp32 opacities store the logits.

Defaults: positions fp16, every other attribute 8 bits (``DEFAULT_BITS``).

Colour VQ (``vq=dict(codebook, assign, keep_mask)``): the colour vector of a Gaussian is its SH
coefficients flattened coefficient-major, colour channel fastest (``color_features``: sh0 r g b,
then shN[0] r g b, ...; 3 * (degree+1)^2 values). Gaussians with ``keep_mask`` True keep their
own colours (fp16, section ``color_kept``, as in LightGaussian; or, with
``vq["kept_encoding"] = "bits"``, sections ``sh0`` / ``shN`` of the kept rows encoded as ``bits``
says); the others store an index (uint8 / uint16 / uint32,
the smallest that holds the codebook size; section ``color_index``) into the codebook (fp16,
``color_codebook``). A codebook built for a higher SH degree is truncated to the stored degree.

Residual VQ of scales and rotations (``rvq={"scales": (codebooks, indices), "quats": ...}``,
Compact-3DGS; ``vq.residual_vq``): the attribute (log-scales; canonical quaternions) is stored as
``S`` codeword indices per Gaussian (section ``<name>_rvq_index``, (N, S), the smallest unsigned
type for the codebook size) into ``S`` codebooks (``<name>_rvq_codebooks``, (S, K, D), float32:
they are tiny and the decoded values are then exactly the sums the fine-tune trained).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from splatdistill.errors import UserError
from splatdistill.formats.container import DEFAULT_LEVEL, read_container, write_container
from splatdistill.formats.morton import morton_order
from splatdistill.formats.quantize import dequantize, from_fp16, quantize, to_fp16
from splatdistill.scene.gaussians import GaussianScene, num_sh_coeffs

CODEC_FORMAT = "splatdistill.gaussians"
CODEC_VERSION = 1
DEFAULT_BITS = {"quats": 8, "scales": 8, "opacities": 8, "sh0": 8, "shN": 8}
DEFAULT_POSITION = "fp16"
_ALIASES = {"opacity": "opacities", "quat": "quats", "rotation": "quats", "scale": "scales"}
_OPACITY_EPS = 1e-7


# ---- helpers -------------------------------------------------------------------------------------------
def _parse_spec(name: str, spec) -> tuple[str, int | None]:
    """("fp32" | "fp16" | "quant", bits or None) from an encoding spec."""
    if isinstance(spec, str):
        s = spec.lower()
        if s in ("fp32", "fp16"):
            return s, None
        if s.startswith("q") and s[1:].isdigit():
            spec = int(s[1:])
        else:
            raise ValueError(f"{name}: unknown encoding {spec!r} (use 'fp32', 'fp16' or a bit count 1..16)")
    if isinstance(spec, bool) or not isinstance(spec, (int, np.integer)) or not 1 <= spec <= 16:
        raise ValueError(f"{name}: bit count must be in 1..16, got {spec!r}")
    return "quant", int(spec)


def _index_dtype(k: int) -> np.dtype:
    if k <= 1 << 8:
        return np.dtype(np.uint8)
    if k <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def color_features(scene: GaussianScene, sh_degree: int | None = None) -> np.ndarray:
    """Colour vectors: sh0 then shN, coefficient-major, RGB fastest.

    Args:
        scene: The scene.
        sh_degree: Truncate (or zero-pad) the SH to this degree first; the scene's when None.

    Returns:
        [N, 3 * (degree+1)^2] float32.
    """
    if sh_degree is not None:
        scene = scene.with_sh_degree(sh_degree)
    sh = scene.sh_coeffs().detach().cpu().to(torch.float32).numpy()
    return np.ascontiguousarray(sh.reshape(sh.shape[0], sh.shape[1] * sh.shape[2]))


def canonical_quats(q: np.ndarray) -> np.ndarray:
    """Unit quaternions with w >= 0; zero quaternions become the identity.

    Args:
        q: [N, 4] quaternions (w, x, y, z).

    Returns:
        [N, 4] float64 unit quaternions.
    """
    q = np.asarray(q, dtype=np.float64)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    out = np.divide(q, norm, out=np.zeros_like(q), where=norm > 0)
    out[norm[..., 0] == 0] = (1.0, 0.0, 0.0, 0.0)
    out[out[..., 0] < 0] *= -1.0
    return out


def encode_order(means: np.ndarray, keep_mask: np.ndarray | None = None) -> np.ndarray:
    """The order in which ``encode_scene`` stores the Gaussians.

    Args:
        means: [N, 3] positions.
        keep_mask: [N] bool, or None.

    Returns:
        [N] int64 permutation: Morton order of ``means``, or with a ``keep_mask`` the kept Gaussians
        (Morton order) followed by the others (Morton order).
    """
    means = np.asarray(means)
    if keep_mask is None:
        return morton_order(means)
    keep = np.asarray(keep_mask, dtype=bool)
    kept = np.flatnonzero(keep)
    rest = np.flatnonzero(~keep)
    return np.concatenate([kept[morton_order(means[kept])], rest[morton_order(means[rest])]]).astype(np.int64)


def _encode_array(name: str, x: np.ndarray, kind: str, bits: int | None, sections: dict) -> dict:
    if kind == "fp32":
        sections[name] = np.ascontiguousarray(x, dtype=np.float32)
        return {"encoding": "fp32"}
    if kind == "fp16":
        try:
            sections[name] = to_fp16(x)
        except ValueError as e:
            raise UserError(f"cannot store '{name}' as float16: {e}; choose 'fp32' or a bit count") from None
        return {"encoding": "fp16"}
    codes, lo, hi = quantize(x, bits)
    sections[name] = codes
    return {"encoding": "quant", "bits": bits, "lo": lo.tolist(), "hi": hi.tolist()}


_RVQ_DIMS = {"scales": 3, "quats": 4}


def _validate_rvq(rvq: dict | None, n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for name, value in (rvq or {}).items():
        if name not in _RVQ_DIMS:
            raise ValueError(f"rvq: only scales and quats, got {name!r}")
        books = np.asarray(value[0], dtype=np.float32)
        idx = np.asarray(value[1])
        if books.ndim != 3 or books.shape[2] != _RVQ_DIMS[name] or books.shape[0] < 1 or books.shape[1] < 1:
            raise ValueError(f"rvq {name}: codebooks must be (stages, K, {_RVQ_DIMS[name]}), got {books.shape}")
        if idx.shape != (n, books.shape[0]):
            raise ValueError(f"rvq {name}: indices must be ({n}, {books.shape[0]}), got {idx.shape}")
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= books.shape[1]):
            raise ValueError(f"rvq {name}: an index is outside the codebook")
        if not np.isfinite(books).all():
            raise UserError(f"rvq {name}: non-finite codewords")
        out[name] = (books, idx)
    return out


def _encode_rvq(name: str, books: np.ndarray, idx: np.ndarray, order: np.ndarray, sections: dict) -> dict:
    stages, k = books.shape[:2]
    sections[f"{name}_rvq_codebooks"] = np.ascontiguousarray(books, dtype=np.float32)
    sections[f"{name}_rvq_index"] = np.ascontiguousarray(idx[order], dtype=_index_dtype(k))
    return {"encoding": "rvq", "stages": int(stages), "codebook_size": int(k)}


def _validate_vq(vq: dict, n: int, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    missing = {"codebook", "assign", "keep_mask"} - set(vq)
    if missing:
        raise ValueError(f"vq needs keys codebook, assign, keep_mask (missing {sorted(missing)})")
    cb = np.asarray(vq["codebook"], dtype=np.float32)
    keep = np.asarray(vq["keep_mask"]).reshape(-1)
    if keep.dtype != bool or keep.shape[0] != n:
        raise ValueError(f"vq keep_mask must be a bool array of length {n}")
    if cb.ndim != 2 or cb.shape[0] < 1:
        raise ValueError(f"vq codebook must have shape (K, D), got {cb.shape}")
    if cb.shape[1] < dim or cb.shape[1] % 3:
        raise ValueError(f"vq codebook has {cb.shape[1]} columns, the colour vectors have {dim}")
    cb = cb[:, :dim]  # a higher-degree codebook: its first columns are the lower-degree coefficients
    assign = np.asarray(vq["assign"]).reshape(-1)
    n_vq = int((~keep).sum())
    if assign.shape[0] == n:
        assign = assign[~keep]
    elif assign.shape[0] != n_vq:
        raise ValueError(f"vq assign has {assign.shape[0]} entries; expected {n} or {n_vq} (the non-kept Gaussians)")
    if assign.size and (not np.issubdtype(assign.dtype, np.integer) or assign.min() < 0 or assign.max() >= cb.shape[0]):
        raise ValueError(f"vq assign must hold integers in 0..{cb.shape[0] - 1}")
    kept_encoding = vq.get("kept_encoding", "fp16")
    if kept_encoding not in ("fp16", "bits"):
        raise ValueError(f"vq kept_encoding must be 'fp16' or 'bits', got {kept_encoding!r}")
    return cb, assign.astype(np.int64), keep, kept_encoding


# ---- encode ---------------------------------------------------------------------------------------------
def encode_scene(
    scene: GaussianScene,
    sh_degree: int | None = None,
    vq: dict | None = None,
    bits: dict | None = None,
    position: str | int = DEFAULT_POSITION,
    extra_meta: dict | None = None,
    rvq: dict | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Encode ``scene`` into ``(sections, meta)`` for ``container.write_container``.

    Args:
        scene: The scene.
        sh_degree: Store SH up to this degree (truncating or zero-padding; default: the scene's).
        vq: None, or ``dict(codebook [K, D], assign [N] or [N_vq], keep_mask [N] bool,
            kept_encoding "fp16" (default) | "bits")`` for LightGaussian-style colour VQ (see the
            module docstring).
        bits: Per-attribute encodings overriding ``DEFAULT_BITS`` (keys quats, scales, opacities
            (alias opacity), sh0, shN; values an int 1..16, "fp16" or "fp32"). With ``vq``, sh0 / shN
            apply only to the kept Gaussians and only if ``vq["kept_encoding"] == "bits"``.
        position: "fp16" (default), "fp32", or a bit count for uniform quantisation.
        extra_meta: JSON-serialisable metadata stored as ``meta["extra"]`` (e.g. the normalisation
            back to the original world frame).
        rvq: None, or ``{"scales" | "quats": (codebooks [S, K, D], indices [N, S])}`` in the scene's
            order: those attributes are stored as residual-VQ indices (their ``bits`` are unused).

    Returns:
        ``(sections, meta)``: name -> numpy array, and the metadata. Raises ``UserError`` for
        non-finite parameters or values that overflow float16.
    """
    scene.check_finite("scene")
    if sh_degree is not None:
        if not 0 <= int(sh_degree) <= 3:
            raise ValueError(f"sh_degree must be in 0..3, got {sh_degree}")
        scene = scene.with_sh_degree(int(sh_degree))
    degree = scene.sh_degree
    specs = dict(DEFAULT_BITS)
    for key, value in (bits or {}).items():
        key = _ALIASES.get(key, key)
        if key not in DEFAULT_BITS:
            raise ValueError(
                f"bits: unknown attribute {key!r} (known: {sorted(DEFAULT_BITS)}; positions use position=)"
            )
        specs[key] = value
    parsed = {k: _parse_spec(k, v) for k, v in specs.items()}
    pos_kind, pos_bits = _parse_spec("position", position)
    p = {k: v.detach().cpu().to(torch.float32).numpy() for k, v in scene.items()}
    n = len(scene)

    keep = None
    if vq is not None:
        cb, assign_vq, keep, kept_encoding = _validate_vq(vq, n, 3 * num_sh_coeffs(degree))
    rvq = _validate_rvq(rvq, n)
    order = encode_order(p["means"], keep)
    p = {k: v[order] for k, v in p.items()}

    sections: dict[str, np.ndarray] = {}
    attrs: dict[str, dict] = {}

    # positions
    if pos_kind == "fp16":
        means64 = p["means"].astype(np.float64)
        origin = np.median(means64, axis=0) if n else np.zeros(3)
        origin = origin.astype(np.float32).astype(np.float64)  # a float32 value: exact everywhere
        info = _encode_array("means", means64 - origin, "fp16", None, sections)
        info["origin"] = origin.tolist()
    else:
        info = _encode_array("means", p["means"], pos_kind, pos_bits, sections)
    attrs["means"] = info

    # rotations
    kind, b = parsed["quats"]
    if "quats" in rvq:
        attrs["quats"] = _encode_rvq("quats", *rvq["quats"], order, sections)
    elif kind == "fp32":
        attrs["quats"] = _encode_array("quats", p["quats"], kind, b, sections)
    else:
        attrs["quats"] = _encode_array("quats", canonical_quats(p["quats"]), kind, b, sections)
        attrs["quats"]["canonical"] = True

    if "scales" in rvq:
        attrs["scales"] = _encode_rvq("scales", *rvq["scales"], order, sections)
    else:
        attrs["scales"] = _encode_array("scales", p["scales"], *parsed["scales"], sections)

    kind, b = parsed["opacities"]
    if kind == "quant":
        alpha = 1.0 / (1.0 + np.exp(-p["opacities"].astype(np.float64)))
        attrs["opacities"] = _encode_array("opacities", alpha, kind, b, sections)
        attrs["opacities"]["space"] = "sigmoid"
    else:
        attrs["opacities"] = _encode_array("opacities", p["opacities"], kind, b, sections)
        attrs["opacities"]["space"] = "logit"

    meta: dict = {
        "format": CODEC_FORMAT,
        "codec_version": CODEC_VERSION,
        "count": n,
        "sh_degree": degree,
        "order": "morton" if keep is None else "kept_then_vq_each_morton",
        "attributes": attrs,
    }
    if scene.antialiased:  # rendered with the 2D (Mip-Splatting) filter; absent means False
        meta["antialiased"] = True
    if keep is None:
        attrs["sh0"] = _encode_array("sh0", p["sh0"], *parsed["sh0"], sections)
        attrs["shN"] = _encode_array("shN", p["shN"], *parsed["shN"], sections)
        meta["colors"] = {"encoding": "direct"}
    else:
        n_keep = int(keep.sum())
        if kept_encoding == "fp16":
            feats = np.concatenate(
                [
                    p["sh0"][:n_keep].reshape(n_keep, 3),
                    p["shN"][:n_keep].reshape(n_keep, 3 * (num_sh_coeffs(degree) - 1)),
                ],
                axis=1,
            )
            _encode_array("color_kept", feats, "fp16", None, sections)
        else:  # the kept Gaussians' sh0 / shN encoded as configured in ``bits``
            attrs["sh0"] = _encode_array("sh0", p["sh0"][:n_keep], *parsed["sh0"], sections)
            attrs["shN"] = _encode_array("shN", p["shN"][:n_keep], *parsed["shN"], sections)
        _encode_array("color_codebook", cb, "fp16", None, sections)
        # assign_vq is in input order of the non-kept Gaussians; put it in storage order.
        rank = np.empty(n, dtype=np.int64)
        rank[np.flatnonzero(~keep)] = np.arange(n - n_keep)
        stored_vq = order[n_keep:]  # input indices of the stored VQ'd Gaussians
        sections["color_index"] = assign_vq[rank[stored_vq]].astype(_index_dtype(cb.shape[0]))
        meta["colors"] = {
            "encoding": "vq",
            "kept": n_keep,
            "codebook_size": int(cb.shape[0]),
            "kept_encoding": kept_encoding,
            "codebook_encoding": "fp16",
        }
    if extra_meta is not None:
        meta["extra"] = extra_meta
    return sections, meta


# ---- decode ---------------------------------------------------------------------------------------------
def _fail(msg: str):
    raise UserError(f"invalid .sdz scene: {msg}")


def _section(sections: dict, name: str, shape: tuple, dtypes) -> np.ndarray:
    if name not in sections:
        _fail(f"section '{name}' is missing")
    a = np.asarray(sections[name])
    if tuple(a.shape) != tuple(shape):
        _fail(f"section '{name}' has shape {tuple(a.shape)}, expected {tuple(shape)}")
    if a.dtype not in [np.dtype(d) for d in dtypes]:
        _fail(f"section '{name}' has dtype {a.dtype}")
    return a


def _decode_array(sections: dict, name: str, info, shape: tuple) -> np.ndarray:
    if not isinstance(info, dict):
        _fail(f"no encoding recorded for '{name}'")
    enc = info.get("encoding")
    if enc == "rvq":
        st, k = info.get("stages"), info.get("codebook_size")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (st, k)):
            _fail(f"'{name}' has an invalid residual-VQ description")
        books = _section(sections, f"{name}_rvq_codebooks", (st, k, shape[1]), [np.float32])
        idx = _section(sections, f"{name}_rvq_index", (shape[0], st), [_index_dtype(k)])
        if idx.size and int(idx.max()) >= k:
            _fail(f"'{name}' has a residual-VQ index beyond its codebook")
        if not np.isfinite(books).all():
            _fail(f"'{name}' has non-finite residual-VQ codewords")
        out = np.zeros(shape, dtype=np.float32)
        for s_ in range(st):
            out += books[s_][idx[:, s_].astype(np.int64)]
        return out
    if enc == "fp32":
        return _section(sections, name, shape, [np.float32]).astype(np.float32, copy=True)
    if enc == "fp16":
        return from_fp16(_section(sections, name, shape, [np.float16]))
    if enc == "quant":
        b = info.get("bits")
        if not isinstance(b, int) or isinstance(b, bool) or not 1 <= b <= 16:
            _fail(f"'{name}' has an invalid bit count {b!r}")
        codes = _section(sections, name, shape, [np.uint8 if b <= 8 else np.uint16])
        try:
            lo = np.asarray(info["lo"], dtype=np.float64)
            hi = np.asarray(info["hi"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            _fail(f"'{name}' has no valid quantisation range")
        chan = tuple(shape[1:])
        if math.prod(chan) == 0:  # no channels (shN at SH degree 0): JSON keeps [] for every empty shape
            lo = lo.reshape(chan) if lo.size == 0 else lo
            hi = hi.reshape(chan) if hi.size == 0 else hi
        if (
            lo.shape != tuple(shape[1:])
            or hi.shape != tuple(shape[1:])
            or not (np.isfinite(lo).all() and np.isfinite(hi).all())
        ):
            _fail(f"'{name}' has a quantisation range of the wrong shape or non-finite")
        if int(codes.max(initial=0)) > (1 << b) - 1:
            _fail(f"'{name}' has codes beyond {b} bits")
        return dequantize(codes, lo, hi, b, dtype=np.float32)
    _fail(f"'{name}' has an unknown encoding {enc!r}")


def decode_scene(sections: dict[str, np.ndarray], meta: dict) -> GaussianScene:
    """Rebuild the scene from ``encode_scene``'s output.

    Args:
        sections: Name -> numpy array.
        meta: The metadata.

    Returns:
        A float32 CPU ``GaussianScene``, Gaussians in storage order. Inconsistent input raises
        ``UserError``.
    """
    if not isinstance(meta, dict) or meta.get("format") != CODEC_FORMAT:
        _fail("not a splatdistill Gaussian scene (metadata 'format' missing or different)")
    ver = meta.get("codec_version")
    if ver != CODEC_VERSION:
        _fail(f"unsupported scene codec version {ver!r} (this build reads {CODEC_VERSION})")
    n = meta.get("count")
    deg = meta.get("sh_degree")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        _fail("invalid Gaussian count")
    if not isinstance(deg, int) or isinstance(deg, bool) or not 0 <= deg <= 3:
        _fail("invalid SH degree")
    attrs = meta.get("attributes")
    colors = meta.get("colors")
    if not isinstance(attrs, dict) or not isinstance(colors, dict):
        _fail("attribute descriptions missing")
    k_rest = num_sh_coeffs(deg) - 1

    info = attrs.get("means")
    means = _decode_array(sections, "means", info, (n, 3))
    if info.get("encoding") == "fp16":
        origin = np.asarray(info.get("origin", None), dtype=np.float64)
        if origin.shape != (3,) or not np.isfinite(origin).all():
            _fail("fp16 positions without a valid origin")
        means = (means.astype(np.float64) + origin).astype(np.float32)
    quats = _decode_array(sections, "quats", attrs.get("quats"), (n, 4))
    scales = _decode_array(sections, "scales", attrs.get("scales"), (n, 3))
    info = attrs.get("opacities")
    opac = _decode_array(sections, "opacities", info, (n,))
    space = info.get("space")
    if space == "sigmoid":
        a = np.clip(opac.astype(np.float64), _OPACITY_EPS, 1.0 - _OPACITY_EPS)
        opac = np.log(a / (1.0 - a)).astype(np.float32)
    elif space != "logit":
        _fail(f"unknown opacity space {space!r}")

    enc = colors.get("encoding")
    if enc == "direct":
        sh0 = _decode_array(sections, "sh0", attrs.get("sh0"), (n, 1, 3))
        shN = _decode_array(sections, "shN", attrs.get("shN"), (n, k_rest, 3))
    elif enc == "vq":
        n_keep, kcb = colors.get("kept"), colors.get("codebook_size")
        if not isinstance(n_keep, int) or not 0 <= n_keep <= n or not isinstance(kcb, int) or kcb < 1:
            _fail("invalid colour VQ description")
        dim = 3 * (k_rest + 1)
        kenc = colors.get("kept_encoding")
        if kenc == "fp16":
            kept = from_fp16(_section(sections, "color_kept", (n_keep, dim), [np.float16]))
        elif kenc == "bits":
            k0 = _decode_array(sections, "sh0", attrs.get("sh0"), (n_keep, 1, 3))
            kN = _decode_array(sections, "shN", attrs.get("shN"), (n_keep, k_rest, 3))
            kept = np.concatenate([k0.reshape(n_keep, 3), kN.reshape(n_keep, 3 * k_rest)], axis=1)
        else:
            _fail(f"unknown encoding {kenc!r} of the kept colours")
        cb = from_fp16(_section(sections, "color_codebook", (kcb, dim), [np.float16]))
        idx = _section(sections, "color_index", (n - n_keep,), [_index_dtype(kcb)])
        if idx.size and int(idx.max()) >= kcb:
            _fail("colour index beyond the codebook")
        feats = np.concatenate([kept, cb[idx.astype(np.int64)]], axis=0)
        sh0 = np.ascontiguousarray(feats[:, :3].reshape(n, 1, 3))
        shN = np.ascontiguousarray(feats[:, 3:].reshape(n, k_rest, 3))
    else:
        _fail(f"unknown colour encoding {enc!r}")

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    aa = meta.get("antialiased", False)
    if not isinstance(aa, bool):
        _fail(f"metadata 'antialiased' must be true or false, got {aa!r}")
    return GaussianScene(t(means), t(quats), t(scales), t(opac), t(sh0), t(shN), antialiased=aa)


# ---- files ----------------------------------------------------------------------------------------------
def save_sdz(scene: GaussianScene, path: str | os.PathLike, level: int = DEFAULT_LEVEL, **opts) -> Path:
    """Encode ``scene`` and write it to ``path`` as an ``.sdz`` container, atomically.

    Args:
        scene: The scene.
        path: The output file.
        level: zstd level.
        **opts: Keyword arguments of ``encode_scene``.

    Returns:
        ``path`` as a ``Path``, like ``write_ply``.
    """
    sections, meta = encode_scene(scene, **opts)
    write_container(path, sections, meta, level=level)
    return Path(path)


def load_sdz(path: str | os.PathLike) -> GaussianScene:
    """Read a scene written by ``save_sdz`` or ``packed.save_packed``.

    Args:
        path: The ``.sdz`` file.

    Returns:
        A float32 CPU ``GaussianScene``, Gaussians in storage order. Any corruption raises
        ``UserError`` naming ``path``.
    """
    sections, meta = read_container(path)
    try:
        from splatdistill.formats.packed import decode_packed, is_packed

        if is_packed(meta):
            return decode_packed(sections, meta)
        return decode_scene(sections, meta)
    except UserError as e:
        raise UserError(e.message, path) from None


def build_color_vq(
    scene: GaussianScene,
    significance,
    k: int = 8192,
    fraction: float = 0.6,
    sh_degree: int | None = None,
    iters: int = 10,
    seed: int = 0,
    batch="auto",
) -> dict:
    """LightGaussian colour VQ inputs for ``encode_scene(vq=...)``.

    The ``fraction`` (60 % in the paper) least significant Gaussians are VQ'd with a codebook of ``k``
    (8192 in the paper) codewords fitted by significance-weighted k-means on their colour vectors;
    the others are kept.

    Args:
        scene: The scene.
        significance: [N] scores >= 0, e.g. LightGaussian's global significance (METHODS.md §2).
        k: Codewords.
        fraction: Share of the Gaussians to VQ.
        sh_degree: SH degree of the colour vectors; the scene's when None.
        iters: k-means iterations.
        seed: Seed (deterministic).
        batch: Mini-batch size of the k-means, as ``vq.weighted_kmeans``.

    Returns:
        ``{"codebook": [K, D] float32, "assign": [N_vq] int64, "keep_mask": [N] bool}``.
    """
    from splatdistill.formats.vq import weighted_kmeans

    sig = np.asarray(significance, dtype=np.float64).reshape(-1)
    n = len(scene)
    if sig.shape[0] != n:
        raise ValueError(f"significance has {sig.shape[0]} entries for {n} Gaussians")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    n_vq = int(math.floor(fraction * n))
    order = np.argsort(sig, kind="stable")  # least significant first
    keep = np.ones(n, dtype=bool)
    keep[order[:n_vq]] = False
    feats = color_features(scene, sh_degree)
    cb, assign = weighted_kmeans(feats[~keep], sig[~keep], k=k, iters=iters, seed=seed, batch=batch)
    return {"codebook": cb, "assign": assign, "keep_mask": keep}
