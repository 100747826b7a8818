"""Shared test factories and checks: random scenes, look-at cameras, a tolerance check with a readable
message, and writing a small model file. Import with ``from helpers import ...`` (pytest puts this
folder on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from splatdistill.cameras.camera import Camera, look_at
from splatdistill.formats.ply import write_ply
from splatdistill.scene.gaussians import GaussianScene

# float32 values a reader or writer must carry through unchanged: huge, signed zeros, denormals,
# the smallest normal, the largest finite.
EXTREMES = np.array(
    [1e30, -1e30, -0.0, 0.0, 1e-45, -1e-45, 1.17549435e-38, 3.4028235e38, -3.4028235e38, 1e-40],
    dtype=np.float32,
)


def _interval(v) -> tuple[float, float]:
    """``x`` -> ``(-x, x)``; a pair stays as it is."""
    lo, hi = (-v, v) if np.isscalar(v) else v
    return float(lo), float(hi)


def random_scene(
    n: int = 100,
    degree: int = 3,
    seed: int = 0,
    *,
    extent: float = 1.0,
    log_scales=(-6.0, -2.0),
    opacity_std: float = 2.0,
    sh0=0.5,
    shN=0.3,
    quat_norms=None,
    antialiased: bool = False,
    wide: bool = False,
    extremes: bool = False,
) -> GaussianScene:
    """Gaussians with independently drawn attributes (not a trained-looking scene: for codecs and renderers).

    Positions are uniform in ``[-extent, extent]^3``; quaternions are normal (each scaled by a uniform
    factor in ``quat_norms`` when given); log-scales, ``sh0`` and ``shN`` are uniform in their intervals (a
    number ``x`` means ``(-x, x)``); opacity logits are normal with ``opacity_std``.

    Args:
        n: number of Gaussians.
        degree: SH degree (0..3).
        seed: seed of the torch generator; the same arguments give the same scene.
        wide: every attribute instead ``normal * 10^k``, ``k`` uniform in -3..3 (the range arguments
            are ignored), for bit-exact I/O.
        extremes: plant the values of ``EXTREMES`` at random places of each attribute.

    Returns:
        The scene, float32 on the CPU: means (n, 3), quats (n, 4), scales (n, 3), opacities (n,),
        sh0 (n, 1, 3), shN (n, (degree + 1)^2 - 1, 3).
    """
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2 - 1

    def uniform(shape, interval):
        lo, hi = _interval(interval)
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    if wide:

        def spread(shape):
            mag = torch.randint(-3, 4, shape, generator=g).double()
            return (torch.randn(shape, generator=g, dtype=torch.float64) * 10.0**mag).float()

        shapes = {
            "means": (n, 3),
            "quats": (n, 4),
            "scales": (n, 3),
            "opacities": (n,),
            "sh0": (n, 1, 3),
            "shN": (n, k, 3),
        }
        params = {name: spread(shape) for name, shape in shapes.items()}
    else:
        means = uniform((n, 3), extent)
        quats = torch.randn(n, 4, generator=g)
        if quat_norms is not None:
            quats = quats * uniform((n, 1), quat_norms)
        params = {
            "means": means,
            "quats": quats,
            "scales": uniform((n, 3), log_scales),
            "opacities": torch.randn(n, generator=g) * opacity_std,
            "sh0": uniform((n, 1, 3), sh0),
            "shN": uniform((n, k, 3), shN),
        }
    if extremes:
        special = torch.from_numpy(EXTREMES)
        for v in params.values():
            flat = v.view(-1)
            pos = torch.randperm(flat.numel(), generator=g)[: len(special)]
            flat[pos] = special[: len(pos)]
    return GaussianScene(**params, antialiased=antialiased)


def clustered_scene(n: int, degree: int = 3, seed: int = 0, extent: float = 5.0) -> GaussianScene:
    """A scene that looks more like a trained one: positions in 64 normal blobs (sigma ``0.05 * extent``,
    centres uniform in ``[-extent, extent]^3``), normal rotations, log-scales around -4, opacity logits
    of std 2.5, SH of std 0.6 (``sh0``) and 0.08 / sqrt(1 + k) for coefficient k of ``shN``.

    Returns:
        The scene, float32 on the CPU, ``n`` Gaussians of SH degree ``degree`` (numpy generator ``seed``).
    """
    rng = np.random.default_rng(seed)
    blobs = rng.uniform(-extent, extent, (64, 3))
    pts = blobs[rng.integers(0, 64, n)] + rng.normal(0, 0.05 * extent, (n, 3))
    k = (degree + 1) ** 2 - 1
    shN = rng.normal(0.0, 0.08, (n, k, 3)) / np.sqrt(1 + np.arange(k))[None, :, None]
    arrays = (
        pts,
        rng.normal(size=(n, 4)),
        rng.normal(-4.0, 0.7, (n, 3)),
        rng.normal(0.0, 2.5, n),
        rng.normal(0.0, 0.6, (n, 1, 3)),
        shN,
    )
    return GaussianScene(*(torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in arrays))


def box_scene(
    n: int = 300,
    degree: int = 3,
    seed: int = 0,
    *,
    half: float = 1.0,
    opacity: float = 0.5,
    sh_std: float = 0.0,
    jitter: float = 0.0,
    antialiased: bool = False,
) -> GaussianScene:
    """A scene as training starts it: ``GaussianScene.random_in_box`` in ``[-half, half]^3`` (isotropic
    Gaussians sized by their neighbours, random colours, opacity ``opacity``), optionally with normal
    ``shN`` of std ``sh_std`` and, with ``jitter`` > 0, random rotations and log-scales moved by
    normal noise of that std (anisotropic Gaussians).

    Returns:
        The scene, float32 on the CPU, ``n`` Gaussians of SH degree ``degree``.
    """
    s = GaussianScene.random_in_box(n, [-half] * 3, [half] * 3, sh_degree=degree, seed=seed, init_opacity=opacity)
    g = torch.Generator().manual_seed(seed)
    if sh_std:
        s.params["shN"] = sh_std * torch.randn(s.shN.shape, generator=g)
    if jitter:
        s.params["quats"] = torch.randn(n, 4, generator=g)
        s.params["scales"] = s.scales + jitter * torch.randn(n, 3, generator=g)
    if antialiased:
        s = GaussianScene(**s.params, antialiased=True)
    return s


def look_at_camera(
    width: int = 48,
    height: int = 40,
    eye=(0.3, -3.2, 0.8),
    target=(0.0, 0.0, 0.0),
    *,
    fx: float | None = None,
    fy: float | None = None,
    cx: float | None = None,
    cy: float | None = None,
    name: str = "",
) -> Camera:
    """A pinhole camera of ``width`` x ``height`` pixels at ``eye`` looking at ``target``, world z up.

    The focal lengths default to ``0.9 * width`` (fy = fx), the principal point to the image centre.
    """
    fx = 0.9 * width if fx is None else fx
    return Camera(
        fx=fx,
        fy=fx if fy is None else fy,
        cx=width / 2 if cx is None else cx,
        cy=height / 2 if cy is None else cy,
        width=width,
        height=height,
        world_to_camera=look_at(np.asarray(eye, np.float64), np.asarray(target, np.float64)),
        image_name=name,
    )


def ring_cameras(
    n: int = 8, radius: float = 4.0, z: float = 1.0, *, width: int = 100, height: int = 80, fx: float | None = None
) -> list[Camera]:
    """``n`` cameras evenly spaced on the circle of ``radius`` at height ``z`` around the z axis, all
    looking at the origin, named ``c0``, ``c1``, ... (focal length ``fx``, default ``width``)."""
    cams = []
    for i in range(n):
        a = 2 * np.pi * i / n
        eye = np.array([radius * np.cos(a), radius * np.sin(a), z])
        cams.append(look_at_camera(width, height, eye, fx=width if fx is None else fx, name=f"c{i}"))
    return cams


def _as_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def assert_close(actual, expected, *, rtol: float, atol: float, what: str = "") -> None:
    """Fail unless ``|actual - expected| <= atol + rtol * |expected|`` everywhere.

    ``actual`` and ``expected`` are tensors or arrays of the same shape, compared in float64; equal values
    (infinities too) are close, NaN is close to nothing. The message names ``what``, the number of elements
    out of tolerance, and the largest absolute and relative errors with their indices.
    """
    a, e = _as_float64(actual), _as_float64(expected)
    label = f"{what}: " if what else ""
    assert a.shape == e.shape, f"{label}shape {a.shape} != expected {e.shape}"
    if a.size == 0:
        return
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # inf - inf, NaN, x / 0
        err = np.abs(a - e)
        bad = ~((err <= atol + rtol * np.abs(e)) | (a == e))
        if not bad.any():
            return
        err = np.where(bad & ~(err >= 0), np.inf, np.where(bad, err, 0.0))
        rel = np.nan_to_num(np.where(err > 0, err / np.abs(e), 0.0), nan=np.inf)
    ia = np.unravel_index(np.argmax(err), err.shape)
    ir = np.unravel_index(np.argmax(rel), rel.shape)
    raise AssertionError(
        f"{label}{int(bad.sum())} of {a.size} elements beyond atol={atol:g} + rtol={rtol:g} * |expected|; "
        f"max abs error {err[ia]:.3g} at {tuple(int(i) for i in ia)} (actual {a[ia]:.9g}, expected {e[ia]:.9g}); "
        f"max rel error {rel[ir]:.3g} at {tuple(int(i) for i in ir)}"
    )


def write_model(path: Path, scene: GaussianScene | None = None, **box) -> Path:
    """Write ``scene`` (default: ``box_scene(**box)``) as an Inria PLY at ``path``; returns ``path``."""
    return write_ply(box_scene(**box) if scene is None else scene, path)
