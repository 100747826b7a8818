"""Realistic synthetic Gaussian models of any size for the compression benchmarks.

Built from the real SfM points of the Mip-NeRF 360 "garden" scene (``../shared/data/test_garden.npz``,
138,766 points with colours): the points are resampled to N with a jitter of half their
nearest-neighbour spacing, scales follow the local density (anisotropic: one axis flattened, as
trained splats are), rotations are random, opacities follow the bimodal shape of trained models
(a mass of faint Gaussians and a mass of nearly opaque ones), SH DC is the point colour plus noise
and the higher bands decay with the band (|c_l| ~ 0.15 / (l + 1)), as in trained scenes. Without
the npz a uniform box of points is used.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from splatdistill.scene.gaussians import GaussianScene, num_sh_coeffs
from splatdistill.scene.sh import rgb_to_sh0

GARDEN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "test_garden.npz"


def synthetic_model(n: int, sh_degree: int = 3, seed: int = 0) -> GaussianScene:
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    if GARDEN.exists():
        z = np.load(GARDEN)
        pts, cols = z["means3d"].astype(np.float64), z["colors"].astype(np.float64) / 255.0
        c = np.median(pts, axis=0)
        r = np.quantile(np.linalg.norm(pts - c, axis=1), 0.9)
        keep = np.linalg.norm(pts - c, axis=1) < 2.0 * r  # the garden's far background shell stays out
        pts, cols = pts[keep], cols[keep]
    else:
        pts = rng.uniform(-1, 1, (50_000, 3))
        cols = rng.uniform(0, 1, (50_000, 3))
    d, _ = cKDTree(pts).query(pts, k=2)
    spacing = d[:, 1]
    src = rng.integers(0, len(pts), n)
    local = spacing[src] * math.sqrt(len(pts) / max(n, 1)) ** (2 / 3) + 1e-6
    means = pts[src] + rng.normal(0, 0.5, (n, 3)) * local[:, None]
    log_s = np.log(local)[:, None] + rng.normal(0, 0.35, (n, 3))
    log_s[:, 2] -= 1.2  # flattened
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    faint = rng.random(n) < 0.45
    alpha = np.where(faint, rng.beta(1.2, 12, n), rng.beta(8, 1.5, n)).clip(0.004, 0.995)
    opac = np.log(alpha / (1 - alpha))
    rgb = np.clip(cols[src] + rng.normal(0, 0.05, (n, 3)), 0, 1)
    k = num_sh_coeffs(sh_degree) - 1
    shN = np.zeros((n, k, 3))
    for j in range(k):
        band = int(math.isqrt(j + 1))  # coefficient j+1 belongs to band floor(sqrt(j+1))
        shN[:, j] = rng.normal(0, 0.15 / (band + 1), (n, 3))
    f = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return GaussianScene(f(means), f(q), f(log_s), f(opac), rgb_to_sh0(f(rgb)).unsqueeze(1), f(shN))
