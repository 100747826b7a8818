"""PlayCanvas SOG ("spatially ordered Gaussians"): ``read_sog`` / ``write_sog``.

Layout (version 2), as PlayCanvas splat-transform writes and reads it
(``src/lib/writers/write-sog.ts``, ``src/lib/readers/read-sog.ts``; read, not copied): a
``meta.json`` and lossless WebP textures, either side by side in a folder or stored in a zip
(``.sog``). Texel ``i`` (row-major) of every full-size texture holds Gaussian ``i``; the textures
are ``W x H`` with ``W = 4 ceil(sqrt(N) / 4)``, ``H = 4 ceil(N / W / 4)``, the Gaussians in Morton
order. ``meta.json``::

    {"version": 2, "count": N, "model": "antialiased" (absent for ordinary scenes),
     "means": {"mins": [3], "maxs": [3], "files": ["means_l.webp", "means_u.webp"]},
     "scales": {"codebook": [256], "files": ["scales.webp"]},
     "quats": {"files": ["quats.webp"]},
     "sh0": {"codebook": [256], "files": ["sh0.webp"]},
     "shN": {"count": P, "bands": 1..3, "codebook": [256],
             "files": ["shN_centroids.webp", "shN_labels.webp"]}}   (only with SH bands)

* means: per axis ``l = sign(x) ln(|x| + 1)``, stored as a 16-bit fraction of [mins, maxs] (the
  range of ``l``): low bytes in ``means_l`` RGB, high bytes in ``means_u`` RGB.
* quats: "smallest three" of the unit (w, x, y, z) quaternion made positive at its largest
  component: the other three, in w, x, y, z order, scaled by sqrt(2), in RGB as
  ``255 (c / 2 + 1 / 2)``; A = 252 + index of the largest component.
* scales: the log-scales' indices into one 256-entry codebook (1-D k-means over all three axes),
  in RGB.
* sh0: the DC coefficients' indices into one 256-entry codebook, in RGB; A = 255 sigmoid(opacity).
* shN: the higher bands (``3 (K-1)`` values, Inria channel-major order) clustered into a palette
  of P entries (k-means); ``shN_labels`` holds each Gaussian's palette index (R = low byte,
  G = high byte); ``shN_centroids`` is ``64 (K-1)`` texels wide, palette entry ``e`` at row
  ``e // 64``, columns ``(e % 64) (K-1) + j`` for coefficient j, RGB = the R, G, B values of that
  coefficient as indices into the 256-entry shN codebook (1-D k-means over all palette values).
  splat-transform picks P = min(64, 2^floor(log2(N / 1024))) * 1024 and runs the k-means on a GPU;
  here it runs on the CPU at a cost of N P 3(K-1) per iteration, so the default also caps P at
  ``DEFAULT_MAX_SH_PALETTE`` (and at N); ``sh_palette`` sets it (up to 65536).

Decoding is the inverse; alpha 0 and 255 give a finite logit a quarter step inside. Version 1
(per-channel min/max, no codebooks) is refused.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from splatdistill.errors import UserError
from splatdistill.fileio import atomic_path
from splatdistill.formats._common import alpha_to_logit, build_scene, scene_arrays, sigmoid, unit_quats
from splatdistill.formats.morton import morton_order
from splatdistill.scene.gaussians import GaussianScene

SOG_VERSION = 2
DEFAULT_MAX_SH_PALETTE = 4096
_SQRT2 = math.sqrt(2.0)
# the three stored components for each index of the largest (w, x, y, z order)
_QUAT_OTHERS = ((1, 2, 3), (0, 2, 3), (0, 1, 3), (0, 1, 2))
_SH_COEFFS = {1: 3, 2: 8, 3: 15}


# --- WebP textures -----------------------------------------------------------------------------
def _encode_webp(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    # lossless, and exact: keep RGB where alpha is 0 (the opacity channel can be 0)
    Image.fromarray(np.ascontiguousarray(rgba, dtype=np.uint8), "RGBA").save(
        buf, format="WEBP", lossless=True, exact=True, quality=100, method=4
    )
    return buf.getvalue()


def _decode_webp(data: bytes, name: str, source) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "WEBP":
                raise UserError(f"SOG texture '{name}' is {im.format}, not WebP", source)
            return np.asarray(im.convert("RGBA"))
    except UserError:
        raise
    except Exception as e:  # Pillow raises several types for damaged images
        raise UserError(f"cannot decode SOG texture '{name}': {e}", source) from None


def _texture_size(n: int) -> tuple[int, int]:
    w = max(4, math.ceil(math.sqrt(n) / 4) * 4)
    h = max(4, math.ceil(n / w / 4) * 4)
    return w, h


def _to_texture(values: np.ndarray, w: int, h: int, alpha: np.ndarray | int = 255) -> np.ndarray:
    """(N, 3) bytes (+ alpha) -> an (h, w, 4) RGBA image, texel i = row i."""
    img = np.zeros((w * h, 4), dtype=np.uint8)
    n = values.shape[0]
    img[:n, :3] = values
    img[:, 3] = 255
    img[:n, 3] = alpha
    return img.reshape(h, w, 4)


# --- 1-D k-means (the 256-entry codebooks) ------------------------------------------------------
def kmeans_1d(values: np.ndarray, k: int = 256, iters: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """A codebook for 1-D values and each value's index in it.

    Lloyd iterations from quantile seeds (assignment by binary search between sorted centres).

    Args:
        values: Values of any shape (flattened).
        k: Codebook entries wanted.
        iters: Most Lloyd iterations.

    Returns:
        ``(centres, idx)``: [k'] float64 sorted centres (k' <= k; the SOG writer pads the table) and
        [values.size] int64 indices.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return np.zeros(k), np.zeros(0, dtype=np.int64)
    centres = np.quantile(v, (np.arange(k) + 0.5) / k)
    for _ in range(iters):
        centres = np.unique(centres)
        idx = _nearest_sorted(v, centres)
        sums = np.bincount(idx, weights=v, minlength=len(centres))
        counts = np.bincount(idx, minlength=len(centres))
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        if np.allclose(new, centres, rtol=0, atol=0):
            break
        centres = np.sort(new)
    centres = np.unique(centres)
    if len(centres) < k:  # fewer distinct values than entries: pad with the largest
        centres = np.concatenate([centres, np.full(k - len(centres), centres[-1])])
    centres = centres.astype(np.float32).astype(np.float64)  # what meta.json will hold
    return centres, _nearest_sorted(v, centres)


def _nearest_sorted(v: np.ndarray, centres: np.ndarray) -> np.ndarray:
    if len(centres) == 1:
        return np.zeros(v.shape, dtype=np.int64)
    mids = (centres[1:] + centres[:-1]) / 2
    return np.searchsorted(mids, v, side="left").astype(np.int64)


# --- writing -----------------------------------------------------------------------------------
def _log_transform(x):
    return np.sign(x) * np.log1p(np.abs(x))


def encode_sog(
    scene: GaussianScene, *, sh_iterations: int = 10, sh_palette: int | None = None, seed: int = 0, path=None
) -> dict[str, bytes]:
    """The SOG files for ``scene``: ``meta.json`` and the WebP textures.

    Args:
        scene: The scene.
        sh_iterations: k-means iterations of the SH palette.
        sh_palette: Entries of the SH palette (default: splat-transform's rule capped at
            ``DEFAULT_MAX_SH_PALETTE``; the k-means over it is the slow part).
        seed: Seed (deterministic).
        path: The file to name in errors.

    Returns:
        File name -> bytes.
    """
    scene.check_finite(str(path) if path is not None else "scene")
    p = scene_arrays(scene)
    n = p["means"].shape[0]
    w, h = _texture_size(n)
    if w > 16383 or h > 16383:
        raise UserError(f"{n} Gaussians exceed SOG's 16383 x 16383 WebP textures", path)
    order = morton_order(p["means"]) if n else np.zeros(0, dtype=np.int64)
    p = {k: v[order] for k, v in p.items()}
    files: dict[str, bytes] = {}

    # means
    lt = _log_transform(p["means"])
    mins = lt.min(axis=0) if n else np.zeros(3)
    maxs = lt.max(axis=0) if n else np.zeros(3)
    span = np.where(maxs > mins, maxs - mins, 1.0)
    q16 = np.clip(np.round(65535 * (lt - mins) / span), 0, 65535).astype(np.uint32)
    files["means_l.webp"] = _encode_webp(_to_texture((q16 & 0xFF).astype(np.uint8), w, h))
    files["means_u.webp"] = _encode_webp(_to_texture((q16 >> 8).astype(np.uint8), w, h))

    # quats: smallest three, made positive at the largest component
    q = unit_quats(p["quats"])
    largest = np.argmax(np.abs(q), axis=1)
    q = q * np.where(q[np.arange(n), largest] < 0, -1.0, 1.0)[:, None] * _SQRT2
    others = np.array(_QUAT_OTHERS)[largest] if n else np.zeros((0, 3), dtype=np.int64)
    three = np.take_along_axis(q, others, axis=1)
    qb = np.clip(np.round(255 * (three * 0.5 + 0.5)), 0, 255).astype(np.uint8)
    files["quats.webp"] = _encode_webp(_to_texture(qb, w, h, (252 + largest).astype(np.uint8)))

    # scales and DC colour: 256-entry codebooks
    s_code, s_idx = kmeans_1d(p["scales"])
    files["scales.webp"] = _encode_webp(_to_texture(s_idx.reshape(n, 3).astype(np.uint8), w, h))
    c_code, c_idx = kmeans_1d(p["sh0"])
    alpha = np.clip(np.round(sigmoid(p["opacities"]) * 255), 0, 255).astype(np.uint8)
    files["sh0.webp"] = _encode_webp(_to_texture(c_idx.reshape(n, 3).astype(np.uint8), w, h, alpha))

    meta: dict = {"version": SOG_VERSION, "asset": {"generator": "splatdistill"}, "count": int(n)}
    if scene.antialiased:
        meta["model"] = "antialiased"
    meta["means"] = {"mins": mins.tolist(), "maxs": maxs.tolist(), "files": ["means_l.webp", "means_u.webp"]}
    meta["scales"] = {"codebook": s_code.tolist(), "files": ["scales.webp"]}
    meta["quats"] = {"files": ["quats.webp"]}
    meta["sh0"] = {"codebook": c_code.tolist(), "files": ["sh0.webp"]}

    bands = scene.sh_degree
    if bands > 0 and n > 0:
        from splatdistill.formats.vq import weighted_kmeans

        k_rest = _SH_COEFFS[bands]
        rest = p["shN"].transpose(0, 2, 1).reshape(n, 3 * k_rest)  # channel-major, as f_rest
        if sh_palette is None:
            sh_palette = int(min(64, 2.0 ** math.floor(math.log2(n / 1024))) * 1024)
            sh_palette = max(1, min(sh_palette, DEFAULT_MAX_SH_PALETTE))
        if not 1 <= int(sh_palette) <= 65536:
            raise UserError(f"SOG SH palette size must be in 1..65536, got {sh_palette}", path)
        palette = max(1, min(int(sh_palette), n))
        centroids, labels = weighted_kmeans(rest.astype(np.float32), k=palette, iters=sh_iterations, seed=seed)
        centroids = centroids[:palette].astype(np.float64)
        sh_code, sh_idx = kmeans_1d(centroids)
        sh_idx = sh_idx.reshape(palette, 3, k_rest)  # (entry, channel, coefficient)
        rows = math.ceil(palette / 64)
        cen = np.zeros((rows * 64 * k_rest, 4), dtype=np.uint8)
        cen[:, 3] = 255
        texel = (np.arange(palette)[:, None] * k_rest + np.arange(k_rest)[None, :]).ravel()
        cen[texel, :3] = sh_idx.transpose(0, 2, 1).reshape(palette * k_rest, 3)
        files["shN_centroids.webp"] = _encode_webp(cen.reshape(rows, 64 * k_rest, 4))
        lab = np.stack([labels & 0xFF, labels >> 8, np.zeros_like(labels)], axis=1).astype(np.uint8)
        files["shN_labels.webp"] = _encode_webp(_to_texture(lab, w, h))
        meta["shN"] = {
            "count": palette,
            "bands": bands,
            "codebook": sh_code.tolist(),
            "files": ["shN_centroids.webp", "shN_labels.webp"],
        }
    files["meta.json"] = json.dumps(meta).encode()
    return files


def write_sog(
    scene: GaussianScene,
    path: str | os.PathLike,
    *,
    sh_iterations: int = 10,
    sh_palette: int | None = None,
    seed: int = 0,
) -> Path:
    """Write ``scene`` as SOG, atomically.

    Args:
        scene: The scene.
        path: A ``.sog`` name (one zip), or the ``meta.json`` (or a folder to hold it) with the
            textures beside it.
        sh_iterations: k-means iterations of the SH palette.
        sh_palette: Entries of the SH palette (see ``encode_sog``).
        seed: Seed (deterministic).

    Returns:
        The ``.sog`` or ``meta.json`` path written.
    """
    path = Path(path)
    files = encode_sog(scene, sh_iterations=sh_iterations, sh_palette=sh_palette, seed=seed, path=path)
    if path.suffix.lower() == ".sog":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
            for name in ["meta.json"] + [k for k in files if k != "meta.json"]:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                z.writestr(info, files[name])
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.getvalue())
        return path
    meta_path = path / "meta.json" if path.suffix.lower() != ".json" else path
    for name, data in files.items():
        if name != "meta.json":
            with atomic_path(meta_path.parent / name) as tmp:
                tmp.write_bytes(data)
    with atomic_path(meta_path) as tmp:  # last: a reader never sees meta.json without its textures
        tmp.write_bytes(files["meta.json"])
    return meta_path


# --- reading -----------------------------------------------------------------------------------
def _open_files(path: Path):
    """(meta dict, loader(name) -> bytes) for a .sog zip, a meta.json or a folder holding one."""
    if not path.exists():
        raise UserError("no such file or directory", path)
    if path.is_dir():
        path = path / "meta.json"
        if not path.exists():
            raise UserError("folder has no meta.json (not a SOG folder)", path.parent)
    if zipfile.is_zipfile(path):
        try:
            z = zipfile.ZipFile(path)
            names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise UserError(f"corrupt SOG zip: {e}", path) from None
        metas = [m for m in names if m == "meta.json" or m.endswith("/meta.json")]
        if not metas:
            raise UserError("SOG zip has no meta.json", path)
        prefix = metas[0][: -len("meta.json")]

        def load(name: str) -> bytes:
            try:
                return z.read(prefix + name)
            except KeyError:
                raise UserError(f"SOG zip lacks '{name}'", path) from None
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise UserError(f"corrupt SOG zip entry '{name}': {e}", path) from None

        raw = load("meta.json")
    else:

        def load(name: str) -> bytes:
            f = path.parent / name
            try:
                return f.read_bytes()
            except FileNotFoundError:
                raise UserError(f"SOG texture '{name}' not found beside meta.json", f) from None

        try:
            raw = path.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read: {e.strerror or e}", path) from None
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"SOG meta.json is not valid JSON: {e}", path) from None
    if not isinstance(meta, dict):
        raise UserError("SOG meta.json is not a JSON object", path)
    return meta, load, path


def _field(meta, key, sub, path):
    try:
        return meta[key][sub]
    except (KeyError, TypeError):
        raise UserError(f"SOG meta.json lacks '{key}.{sub}'", path) from None


def read_sog(path: str | os.PathLike) -> GaussianScene:
    """Read a SOG model into a float32 CPU scene.

    Args:
        path: A ``.sog`` zip, a ``meta.json``, or the folder holding one.

    Returns:
        A ``GaussianScene`` in the file's order. Any malformed model raises ``UserError``.
    """
    meta, load, src = _open_files(Path(path))
    version = meta.get("version")
    if version is None:
        raise UserError("SOG version 1 (no 'version' in meta.json) is not supported; re-save it as version 2", src)
    if version != SOG_VERSION:
        raise UserError(f"unsupported SOG version {version!r} (this reader handles 2)", src)
    n = meta.get("count")
    if not isinstance(n, int) or n < 0:
        raise UserError(f"SOG meta.json 'count' must be a non-negative integer, got {n!r}", src)

    def texels(name: str, need: int = n) -> np.ndarray:
        img = _decode_webp(load(name), name, src)
        flat = img.reshape(-1, 4)
        if flat.shape[0] < need:
            raise UserError(f"SOG texture '{name}' has {flat.shape[0]} texels for {need} entries", src)
        return flat[:need].astype(np.int64)

    def codebook(key: str) -> np.ndarray:
        cb = np.asarray(_field(meta, key, "codebook", src), dtype=np.float64)
        if cb.ndim != 1 or cb.size != 256 or not np.isfinite(cb).all():
            raise UserError(f"SOG '{key}' codebook must hold 256 finite numbers", src)
        return cb

    files = _field(meta, "means", "files", src)
    lo, hi = texels(files[0]), texels(files[1])
    mins = np.asarray(_field(meta, "means", "mins", src), dtype=np.float64)
    maxs = np.asarray(_field(meta, "means", "maxs", src), dtype=np.float64)
    span = np.where(maxs - mins != 0, maxs - mins, 1.0)
    l = mins + span * ((lo[:, :3] | (hi[:, :3] << 8)) / 65535.0)
    means = np.sign(l) * np.expm1(np.abs(l))

    qt = texels(_field(meta, "quats", "files", src)[0])
    tag = qt[:, 3]
    three = (qt[:, :3] / 255.0 * 2.0 - 1.0) / _SQRT2
    quats = np.zeros((n, 4))
    ok = (tag >= 252) & (tag <= 255)
    largest = np.where(ok, tag - 252, 0)
    others = np.array(_QUAT_OTHERS)[largest] if n else np.zeros((0, 3), dtype=np.int64)
    np.put_along_axis(quats, others, three, axis=1)
    quats[np.arange(n), largest] = np.sqrt(np.maximum(0.0, 1.0 - (three * three).sum(axis=1)))
    quats[~ok] = (1.0, 0.0, 0.0, 0.0)

    scales = codebook("scales")[texels(_field(meta, "scales", "files", src)[0])[:, :3]]
    c0 = texels(_field(meta, "sh0", "files", src)[0])
    sh0 = codebook("sh0")[c0[:, :3]]
    opacities = alpha_to_logit(c0[:, 3] / 255.0)

    shN = np.zeros((n, 0, 3))
    sh_meta = meta.get("shN")
    if sh_meta and sh_meta.get("bands", 0) in _SH_COEFFS:
        k_rest = _SH_COEFFS[sh_meta["bands"]]
        count = sh_meta.get("count")
        if not isinstance(count, int) or count < 1:
            raise UserError(f"SOG 'shN.count' must be a positive integer, got {count!r}", src)
        cb = codebook("shN")
        cen_name, lab_name = _field(meta, "shN", "files", src)[:2]
        cen_img = _decode_webp(load(cen_name), cen_name, src)
        if cen_img.shape[1] != 64 * k_rest:
            raise UserError(
                f"SOG '{cen_name}' is {cen_img.shape[1]} texels wide, expected "
                f"{64 * k_rest} for {sh_meta['bands']} bands",
                src,
            )
        cen = cen_img.reshape(-1, 4)[:, :3].astype(np.int64)  # texel e * k_rest + j
        entries = cen.shape[0] // k_rest
        lab = texels(lab_name)
        label = lab[:, 0] | (lab[:, 1] << 8)
        valid = label < min(count, entries)
        safe = np.where(valid, label, 0)
        texel = safe[:, None] * k_rest + np.arange(k_rest)[None, :]  # (N, K-1)
        shN = cb[cen[texel]]  # (N, K-1, 3): coefficient j, channel c
        shN[~valid] = 0.0
    return build_scene(means, quats, scales, opacities, sh0, shN, antialiased=meta.get("model") == "antialiased")


def is_sog_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a SOG model.

    Args:
        path: Any path.

    Returns:
        True for ``.sog`` files, ``meta.json`` files and folders holding a ``meta.json``.
    """
    p = Path(path)
    return p.suffix.lower() == ".sog" or p.name.lower() == "meta.json" or (p.is_dir() and (p / "meta.json").is_file())
