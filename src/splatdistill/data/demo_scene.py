"""A built-in procedural dataset: an analytic ray tracer, independent of Gaussian splatting.

The scene (z up, inside roughly the unit sphere): two spheres and two boxes with procedural
textures (checker, stripes, a colour gradient with grid lines, diagonal stripes) standing on a
checkered ground disc at z = -0.5. Two directional lights, each with Lambertian diffuse, a
Blinn-Phong specular lobe (so colours depend on the view direction) and hard shadows, plus a small
sky/ground ambient term. Pixels whose rays miss everything are transparent (alpha 0). Each pixel
averages ``_SPP`` stratified, jittered (seeded, so deterministic) samples, which softens alpha edges
and antialiases the textures.

The output is a dataset in the Blender / NeRF-synthetic layout: ``transforms_{train,val,test}.json``
with ``camera_angle_x`` (horizontal field of view, radians) and frames holding ``file_path``
(``./train/r_0``, without extension) and ``transform_matrix``, the camera-to-world matrix with the
OpenGL/Blender camera axes (x right, y up, z backward; the camera looks along -z), and RGBA PNGs
``train/r_0.png`` ... (straight, not premultiplied, alpha).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from splatdistill.errors import UserError
from splatdistill.fileio import write_bytes_atomic, write_json_atomic

GENERATOR = "splatdistill.demo_scene"
VERSION = 1  # bump when the images change, so cached scenes get regenerated
CAMERA_ANGLE_X = 0.7
_SPP_SIDE = 2  # samples per pixel = _SPP_SIDE ** 2 (stratified, jittered)
_SPP = _SPP_SIDE**2
_EPS = 1e-6
_GAMMA = 1.0 / 2.2
_GROUND_Z = -0.5
_GROUND_R = 0.9
_SCENE_RADIUS = 1.1  # a sphere about the origin that holds the whole scene (the rim: 1.03)
# Cameras: distance from the origin and elevation range. The scene's bounding radius is about
# 1.03 (the disc rim), which subtends asin(1.03 / 3.3) = 0.32 rad < CAMERA_ANGLE_X / 2 at the
# nearest distance, so nothing is ever cropped.
_TRAIN_RADIUS = (3.3, 3.9)
_TRAIN_ELEV_DEG = (12.0, 72.0)
_TEST_RADIUS = 3.6
_TEST_ELEV_DEG = (18.0, 55.0)


# --- scene description ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Material:
    texture: str
    ks: float  # specular strength
    shininess: float


@dataclass(frozen=True)
class _Sphere:
    center: tuple[float, float, float]
    radius: float
    material: _Material


@dataclass(frozen=True)
class _Box:
    center: tuple[float, float, float]
    half: tuple[float, float, float]
    angle: float  # rotation about z (radians)
    material: _Material


_OBJECTS = (
    _Sphere((-0.30, -0.25, -0.10), 0.40, _Material("checker", 0.55, 40.0)),
    _Sphere((0.45, 0.35, -0.28), 0.22, _Material("bands", 0.85, 90.0)),
    _Box((0.36, -0.40, -0.25), (0.20, 0.16, 0.25), 0.5, _Material("grid", 0.25, 20.0)),
    _Box((-0.30, 0.42, -0.10), (0.11, 0.11, 0.40), -0.3, _Material("diagonal", 0.35, 30.0)),
)
_GROUND = _Material("ground", 0.15, 15.0)


def _unit(v) -> np.ndarray:
    x, y, z = (float(a) for a in v)
    n = math.sqrt(x * x + y * y + z * z)
    return np.array([x / n, y / n, z / n])


# (direction towards the light, RGB intensity)
_LIGHTS = (
    (_unit([0.45, -0.50, 0.85]), np.array([1.00, 0.93, 0.82]) * 0.95),
    (_unit([-0.70, 0.45, 0.45]), np.array([0.45, 0.55, 0.80]) * 0.55),
)


# --- intersection (vectorised; rays as (3, M) arrays, directions unit length) ---------------------
def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _rotate(R: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``R @ v`` for a 3x3 ``R`` and (3, M) ``v``, spelled out elementwise: BLAS kernels may
    round differently with array size or alignment, and the images must be reproducible."""
    return np.stack([R[i, 0] * v[0] + R[i, 1] * v[1] + R[i, 2] * v[2] for i in range(3)])


def _rigid_inverse(m: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (exact transpose, no LAPACK)."""
    out = np.eye(4)
    out[:3, :3] = m[:3, :3].T
    out[:3, 3] = -_rotate(m[:3, :3].T, m[:3, 3:4])[:, 0]
    return out


def _hit_sphere(s: _Sphere, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Distance to the first hit in front of the origin (inf where missed)."""
    oc = o - np.asarray(s.center)[:, None]
    b = _dot(oc, d)
    c = _dot(oc, oc) - s.radius * s.radius
    disc = b * b - c
    hit = disc > 0.0
    root = np.sqrt(np.where(hit, disc, 0.0))
    t = -b - root
    t = np.where(t > _EPS, t, -b + root)  # origin inside the sphere (shadow rays only)
    return np.where(hit & (t > _EPS), t, np.inf)


def _box_frame(bx: _Box) -> np.ndarray:
    c, s = math.cos(bx.angle), math.sin(bx.angle)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # world -> local rotation


def _hit_box(bx: _Box, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slab test in the box frame. Returns (t, axis of the entry face) with t = inf on a miss.

    Only rays that pass the box's bounding sphere are tested (most rays miss a small box)."""
    m = o.shape[1]
    t_out = np.full(m, np.inf)
    axis_out = np.zeros(m, dtype=np.intp)
    oc = o - np.asarray(bx.center)[:, None]
    b = _dot(oc, d)
    r2 = float(np.dot(bx.half, bx.half))
    cand = np.flatnonzero((_dot(oc, oc) - b * b < r2) & (b < math.sqrt(r2)))
    if cand.size == 0:
        return t_out, axis_out
    R = _box_frame(bx)
    p = _rotate(R, oc[:, cand])
    q = _rotate(R, d[:, cand])
    q = np.where(np.abs(q) < 1e-12, 1e-12, q)
    h = np.asarray(bx.half)[:, None]
    t1 = (-h - p) / q
    t2 = (h - p) / q
    tlo = np.minimum(t1, t2)
    thi = np.minimum(np.maximum(t1, t2).min(axis=0), np.inf)
    axis = np.argmax(tlo, axis=0)
    tmin = tlo[axis, np.arange(cand.size)]
    t = np.where(tmin > _EPS, tmin, thi)
    ok = (thi >= tmin) & (t > _EPS)
    t_out[cand] = np.where(ok, t, np.inf)
    axis_out[cand] = axis
    return t_out, axis_out


def _hit_ground(o: np.ndarray, d: np.ndarray) -> np.ndarray:
    dz = np.where(np.abs(d[2]) < 1e-12, 1e-12, d[2])
    t = (_GROUND_Z - o[2]) / dz
    x = o[0] + t * d[0]
    y = o[1] + t * d[1]
    return np.where((t > _EPS) & (x * x + y * y < _GROUND_R * _GROUND_R), t, np.inf)


def _occluded(o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Any-hit test of shadow rays against the objects (the ground, lowest, casts no shadows)."""
    blocked = np.zeros(o.shape[1], dtype=bool)
    for obj in _OBJECTS:
        t = _hit_sphere(obj, o, d) if isinstance(obj, _Sphere) else _hit_box(obj, o, d)[0]
        blocked |= np.isfinite(t)
    return blocked


# --- textures: albedo (3, M) from local coordinates ----------------------------------------------
def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def _mix(a, b, w: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)[:, None]
    b = np.asarray(b, dtype=np.float64)[:, None]
    return a + (b - a) * w[None, :]


def _albedo(texture: str, local: np.ndarray) -> np.ndarray:
    """``local``: for spheres the unit normal in the object frame, for boxes the position in
    units of the half extents ([-1, 1]^3), for the ground the world position."""
    x, y, z = local
    if texture == "checker":  # 12 x 6 checker in longitude / latitude, tilted pole
        tx, ty, tz = x, 0.8 * y + 0.6 * z, -0.6 * y + 0.8 * z
        u = np.arctan2(ty, tx) / (2 * math.pi) + 0.5
        v = np.arccos(np.clip(tz, -1.0, 1.0)) / math.pi
        c = (np.floor(u * 12) + np.floor(v * 6)) % 2
        return _mix([0.85, 0.12, 0.08], [0.95, 0.90, 0.72], c)
    if texture == "bands":  # bands along a tilted axis with a blue -> yellow gradient
        s = 0.3 * x + 0.5 * y + 0.81 * z
        band = (_frac(s * 3.5) < 0.5).astype(np.float64)
        base = _mix([0.10, 0.25, 0.90], [1.00, 0.80, 0.10], 0.5 + 0.5 * s)
        return base * (0.35 + 0.65 * band)[None, :]
    if texture == "grid":  # RGB gradient across the box, dark grid lines
        col = np.stack([0.5 + 0.45 * x, 0.5 + 0.45 * y, 0.55 - 0.4 * z])
        # lines where a coordinate is near a grid plane (each face shows two of the three)
        near = [np.abs(_frac(a * 2.5 + 0.5) - 0.5) < 0.07 for a in (x, y, z)]
        inner = [np.abs(a) < 0.999 for a in (x, y, z)]
        line = np.zeros_like(x, dtype=bool)
        for n_, i_ in zip(near, inner):
            line |= n_ & i_
        return col * np.where(line, 0.15, 1.0)[None, :]
    if texture == "diagonal":  # diagonal green / white stripes
        s = x + 0.35 * y + 1.6 * z
        st = (_frac(s * 2.2) < 0.45).astype(np.float64)
        return _mix([0.08, 0.55, 0.25], [0.92, 0.95, 0.90], st)
    if texture == "ground":  # grey checker, hue varying with angle, a dark-red rim
        c = (np.floor(x / 0.15) + np.floor(y / 0.15)) % 2
        base = _mix([0.30, 0.31, 0.34], [0.78, 0.78, 0.74], c)
        ang = np.arctan2(y, x)
        tint = np.stack([1.0 + 0.15 * np.cos(ang), 1.0 + 0.15 * np.cos(ang - 2.1), 1.0 + 0.15 * np.cos(ang + 2.1)])
        r = np.sqrt(x * x + y * y)
        rim = (r > 0.80).astype(np.float64)
        return _mix([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], 1.0 - rim) * base * tint + _mix(
            [0.0, 0.0, 0.0], [0.45, 0.08, 0.06], rim
        )
    raise ValueError(texture)


# --- shading --------------------------------------------------------------------------------------
def _trace(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trace primary rays. Returns (colour (3, M) in display space, hit mask (M,))."""
    m = o.shape[1]
    best = _hit_ground(o, d)
    which = np.where(np.isfinite(best), len(_OBJECTS), -1)
    box_axes = {}
    for i, obj in enumerate(_OBJECTS):
        if isinstance(obj, _Sphere):
            t = _hit_sphere(obj, o, d)
        else:
            t, box_axes[i] = _hit_box(obj, o, d)
        closer = t < best
        best = np.where(closer, t, best)
        which = np.where(closer, i, which)

    hit = which >= 0
    color = np.zeros((3, m))
    idx = np.flatnonzero(hit)
    if idx.size == 0:
        return color, hit
    oh, dh, th, wh = o[:, idx], d[:, idx], best[idx], which[idx]
    p = oh + dh * th[None, :]
    normal = np.zeros_like(p)
    albedo = np.zeros_like(p)
    ks = np.zeros(idx.size)
    shin = np.ones(idx.size)
    for i, obj in enumerate(list(_OBJECTS) + [None]):
        sel = np.flatnonzero(wh == i)
        if sel.size == 0:
            continue
        ps = p[:, sel]
        if obj is None:  # ground disc, double sided
            n = np.zeros_like(ps)
            n[2] = np.where(dh[2, sel] < 0, 1.0, -1.0)
            mat = _GROUND
            local = ps
        elif isinstance(obj, _Sphere):
            n = (ps - np.asarray(obj.center)[:, None]) / obj.radius
            mat = obj.material
            local = n
        else:
            R = _box_frame(obj)
            h = np.asarray(obj.half)[:, None]
            lp = _rotate(R, ps - np.asarray(obj.center)[:, None])
            ax = box_axes[i][idx[sel]]
            nl = np.zeros_like(lp)
            nl[ax, np.arange(sel.size)] = np.sign(lp[ax, np.arange(sel.size)])
            n = _rotate(R.T, nl)
            mat = obj.material
            local = np.clip(lp / h, -1.0, 1.0)
        normal[:, sel] = n
        albedo[:, sel] = _albedo(mat.texture, local)
        ks[sel] = mat.ks
        shin[sel] = mat.shininess

    view = -dh
    lin = albedo * (0.10 + 0.06 * normal[2])[None, :]  # sky/ground ambient
    origin = p + normal * 1e-5
    for ldir, intensity in _LIGHTS:
        ndl = _dot(normal, ldir[:, None])
        lit = ndl > 0
        vis = np.zeros(idx.size, dtype=bool)
        li = np.flatnonzero(lit)
        if li.size:
            vis[li] = ~_occluded(origin[:, li], np.broadcast_to(ldir[:, None], (3, li.size)))
        half = view + ldir[:, None]
        half /= np.linalg.norm(half, axis=0, keepdims=True).clip(1e-12)
        ndh = np.clip(_dot(normal, half), 0.0, 1.0)
        spec = ks * ndh**shin
        w = np.where(vis, 1.0, 0.0)
        lin += intensity[:, None] * w[None, :] * (albedo * np.maximum(ndl, 0.0)[None, :] + spec[None, :])
    color[:, idx] = np.clip(lin, 0.0, 1.0) ** _GAMMA
    return color, hit


def _intrinsics(res: int) -> tuple[float, float]:
    f = 0.5 * res / math.tan(0.5 * CAMERA_ANGLE_X)
    return f, 0.5 * res


def render_view(w2c: np.ndarray, resolution: int, rng: np.random.Generator) -> np.ndarray:
    """Ray-trace one view of the demo scene.

    Args:
        w2c: [4, 4] OpenCV world-to-camera matrix.
        resolution: Image width and height in pixels.
        rng: Generator of the sub-pixel jitter.

    Returns:
        [H, W, 4] uint8 RGBA, straight alpha.
    """
    res = int(resolution)
    f, c = _intrinsics(res)
    c2w = _rigid_inverse(np.asarray(w2c, dtype=np.float64))
    rot, eye = c2w[:3, :3], c2w[:3, 3]
    # stratified jittered sample positions in each pixel (pixel centre at +0.5)
    jit = rng.random((2, _SPP, res, res))
    sx = (np.arange(_SPP) % _SPP_SIDE)[:, None, None]
    sy = (np.arange(_SPP) // _SPP_SIDE)[:, None, None]
    u = np.arange(res)[None, None, :] + (sx + jit[0]) / _SPP_SIDE
    v = np.arange(res)[None, :, None] + (sy + jit[1]) / _SPP_SIDE
    dcam = np.stack([(u - c) / f, (v - c) / f, np.ones_like(u)]).reshape(3, -1)
    d = _rotate(rot, dcam)
    d /= np.linalg.norm(d, axis=0, keepdims=True)
    o = np.broadcast_to(eye[:, None], d.shape)
    # Rays that miss the scene's bounding sphere hit nothing: trace only the others.
    oc_b = _dot(o, d)
    live = np.flatnonzero(_dot(o, o) - oc_b * oc_b < _SCENE_RADIUS**2)
    color = np.zeros(d.shape)
    hit = np.zeros(d.shape[1], dtype=bool)
    color[:, live], hit[live] = _trace(np.ascontiguousarray(o[:, live]), d[:, live])
    color = color.reshape(3, _SPP, res, res)
    hits = hit.reshape(_SPP, res, res).astype(np.float64)
    n_hit = hits.sum(axis=0)
    alpha = n_hit / _SPP
    rgb = (color * hits[None]).sum(axis=1) / np.maximum(n_hit, 1.0)[None]
    out = np.concatenate([rgb, alpha[None]], axis=0).transpose(1, 2, 0)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


# --- cameras --------------------------------------------------------------------------------------
def _camera_positions(split: str, n: int, seed: int) -> np.ndarray:
    """Camera centres (n, 3): train random on an upper-hemisphere band, test on an orbit."""
    if split == "train":  # each view from its own stream: view i does not depend on n
        az, el, r = np.zeros(n), np.zeros(n), np.zeros(n)
        lo, hi = (math.sin(math.radians(e)) for e in _TRAIN_ELEV_DEG)
        for i in range(n):
            a, e, rr = np.random.default_rng([seed, 1, i]).random(3)
            az[i] = 2.0 * math.pi * a
            el[i] = math.asin(lo + (hi - lo) * e)  # uniform in area on the band
            r[i] = _TRAIN_RADIUS[0] + (_TRAIN_RADIUS[1] - _TRAIN_RADIUS[0]) * rr
    else:
        rng = np.random.default_rng([seed, 2])
        az = rng.uniform(0.0, 2.0 * math.pi) + 2.0 * math.pi * (np.arange(n) + 0.5) / max(n, 1)
        e0, e1 = _TEST_ELEV_DEG
        el = np.radians(e0 + (e1 - e0) * (0.5 + 0.5 * np.sin(np.arange(n) * 2.4 + 0.7)))
        r = np.full(n, _TEST_RADIUS)
    return np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el)], 1)


def _look_at_origin(eye: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera of a camera at ``eye`` looking at the origin, z up: the same
    matrix as ``cameras.look_at(eye, 0, z)``, computed in plain Python floats (no BLAS), so it is
    bit-for-bit reproducible."""
    ex, ey, ez = (float(a) for a in eye)
    fwd = _unit([-ex, -ey, -ez])  # camera z: towards the target
    right = _unit([fwd[1], -fwd[0], 0.0])  # z x up, up = (0, 0, 1); never degenerate here
    down = [
        fwd[1] * right[2] - fwd[2] * right[1],
        fwd[2] * right[0] - fwd[0] * right[2],
        fwd[0] * right[1] - fwd[1] * right[0],
    ]  # camera y = z x x
    m = np.eye(4)
    for i, axis in enumerate((right, down, fwd)):
        m[i, :3] = axis
        m[i, 3] = -(axis[0] * ex + axis[1] * ey + axis[2] * ez)
    return m


def _poses(split: str, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(OpenCV world-to-camera, Blender camera-to-world) for each view."""
    out = []
    for eye in _camera_positions(split, n, seed):
        w2c = _look_at_origin(eye)
        c2w_gl = _rigid_inverse(w2c) * np.array([1.0, -1.0, -1.0, 1.0])  # flip camera y, z
        out.append((w2c, c2w_gl))
    return out


# --- dataset --------------------------------------------------------------------------------------
def _png_bytes(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _params(resolution: int, train_views: int, test_views: int, seed: int) -> dict:
    return {
        "generator": GENERATOR,
        "version": VERSION,
        "resolution": resolution,
        "train_views": train_views,
        "test_views": test_views,
        "seed": seed,
        "camera_angle_x": CAMERA_ANGLE_X,
        "samples_per_pixel": _SPP,
    }


def _load_manifest(out: Path) -> dict | None:
    try:
        m = json.loads((out / "scene.json").read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def _is_complete(out: Path, manifest: dict | None, params: dict) -> bool:
    if not manifest or manifest.get("params") != params:
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return False
    return all(_sha256(out / rel) == digest for rel, digest in files.items())


def _render_job(args) -> bytes:
    w2c, res, rng_key = args
    return _png_bytes(render_view(w2c, res, np.random.default_rng(rng_key)))


def _workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def _write_splits(
    out: Path, pool, resolution: int, train_views: int, test_views: int, seed: int, files: dict[str, str]
) -> None:
    """Render and write both splits (PNGs, then the transforms files); record file hashes."""
    for split, n in (("train", train_views), ("test", test_views)):
        poses = _poses(split, n, seed)
        split_id = 1 if split == "train" else 2
        jobs = [(w2c, resolution, [seed, 10 + split_id, i]) for i, (w2c, _) in enumerate(poses)]
        frames = []
        for i, ((_, c2w), data) in enumerate(zip(poses, pool.map(_render_job, jobs))):
            rel = f"{split}/r_{i}.png"
            write_bytes_atomic(out / rel, data)
            files[rel] = hashlib.sha256(data).hexdigest()
            frames.append(
                {
                    "file_path": f"./{split}/r_{i}",
                    "rotation": 0.0,
                    "transform_matrix": [[float(x) for x in row] for row in c2w],
                }
            )
        doc = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
        names = [f"transforms_{split}.json"] + (["transforms_val.json"] if split == "test" else [])
        for name in names:
            data = (json.dumps(doc, indent=2) + "\n").encode()
            write_bytes_atomic(out / name, data)
            files[name] = hashlib.sha256(data).hexdigest()


def make_demo_scene(
    out_dir: str | os.PathLike,
    resolution: int = 128,
    train_views: int = 100,
    test_views: int = 20,
    seed: int = 0,
) -> Path:
    """Write the procedural demo dataset (Blender layout) to ``out_dir``.

    Deterministic for given arguments (byte-identical files). If ``out_dir`` already holds a
    complete scene made with the same arguments (checked against the file hashes recorded in
    ``scene.json``) nothing is rendered. Every file is written atomically; ``scene.json`` is
    written last, so an interrupted run is redone next time.

    Args:
        out_dir: The dataset folder to write.
        resolution: Image width and height in pixels.
        train_views: Number of training views.
        test_views: Number of test views.
        seed: Seed of the camera poses and the jitter.

    Returns:
        ``out_dir`` as a ``Path``.
    """
    out = Path(out_dir)
    resolution, train_views, test_views, seed = (int(resolution), int(train_views), int(test_views), int(seed))
    if resolution < 8:
        raise UserError(f"demo scene resolution must be at least 8, got {resolution}")
    if train_views < 1 or test_views < 1:
        raise UserError("the demo scene needs at least one train and one test view")
    if out.exists() and not out.is_dir():
        raise UserError("exists and is not a directory", out)
    params = _params(resolution, train_views, test_views, seed)
    old = _load_manifest(out)
    if _is_complete(out, old, params):
        return out
    if old is None and (out / "transforms_train.json").exists():
        raise UserError(
            "holds a dataset that is not a splatdistill demo scene (no scene.json); refusing to overwrite it", out
        )
    if old is not None and old.get("generator") not in (None, GENERATOR):
        raise UserError("scene.json was not written by the demo scene generator", out)
    (out / "scene.json").unlink(missing_ok=True)  # from here on the directory is incomplete

    files: dict[str, str] = {}
    f_len, _ = _intrinsics(resolution)
    # Views are independent (each has its own random stream), so threads change nothing in the
    # output; numpy releases the GIL inside its loops, which gives most of a second core.
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        _write_splits(out, pool, resolution, train_views, test_views, seed, files)

    # Files of an earlier demo scene (other parameters) that this one does not have.
    if old is not None and isinstance(old.get("files"), dict):
        for rel in old["files"]:
            target = (out / rel).resolve()
            if rel not in files and out.resolve() in target.parents and target.is_file():
                target.unlink()
    write_json_atomic(out / "scene.json", {"generator": GENERATOR, "params": params, "focal_px": f_len, "files": files})
    return out
