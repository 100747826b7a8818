"""SH degree reduction by a closed-form least-squares fit of the lower bands (no training).

LightGaussian distils the higher SH bands away with gradient steps against the teacher's renders.
Per Gaussian the same objective has a closed form: the colour (before the +0.5 offset and the clamp)
is linear in the coefficients, ``c(d) = Y(d)^T C``, so the degree-``l`` coefficients that best
reproduce the degree-``L`` colour over a set of viewing directions ``d_1 .. d_V`` solve

    minimise  sum_v |Y_l(d_v)^T X - Y_L(d_v)^T C|^2  +  mu * integral_S2 |Y_l(d)^T X - Y_L(d)^T C|^2 dd

The second term (weight ``mu``) is the same error averaged over the whole sphere; with the
orthonormal real SH basis (``scene/sh.py``) it equals ``|X - C_low|^2 + |C_high|^2``, so it pulls the
fit towards plain truncation (its exact minimiser) where the views leave directions unconstrained.
The normal equations, per Gaussian and per colour channel (a (K_l x K_l) system, K_l = (l+1)^2):

    (A + mu I) X = B C + mu C_low,   A = sum_v Y_l(d_v) Y_l(d_v)^T,   B = sum_v Y_l(d_v) Y_L(d_v)^T

``d_v`` is the direction from camera centre v to the Gaussian, as the renderer evaluates it.
``mu = rho * V / (4 pi)``: the prior carries ``rho`` times the weight of the views (for directions
spread over the sphere ``E[Y_k^2] = 1 / (4 pi)``, so A's diagonal is about ``V / (4 pi)``).
When the higher bands are zero the fit returns the lower bands exactly (zero residual for any
``mu``). Solved in chunks of Gaussians with batched Cholesky (torch), O(chunk * V * K) memory.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit, prange

from splatdistill.scene.gaussians import num_sh_coeffs
from splatdistill.scene.sh import sh_basis


def fit_lower_bands(
    means: np.ndarray,
    sh: np.ndarray,
    degree: int,
    camera_centers: np.ndarray,
    rho: float = 0.5,
    chunk: int = 65536,
    reference: bool = False,
) -> np.ndarray:
    """``sh`` (N, K_L, 3) coefficients of degree L -> (N, K_l, 3) of ``degree`` l < L, the
    least-squares fit over the directions from ``camera_centers`` (V, 3) to ``means`` (N, 3)
    plus ``rho`` times the whole-sphere error (see the module docstring). ``rho = 0`` is the pure
    least-squares fit over the views (needs at least K_l views in general position).
    The work is a compiled per-Gaussian kernel (basis, normal equations, Cholesky solve);
    ``reference=True`` runs the batched torch version (same maths, for tests)."""
    sh = np.asarray(sh, dtype=np.float32)
    n, k_full = sh.shape[0], sh.shape[1]
    deg_full = int(round(math.sqrt(k_full))) - 1
    k_low = num_sh_coeffs(degree)
    if not 0 <= degree <= deg_full:
        raise ValueError(f"degree {degree} must be in 0..{deg_full}")
    if degree == deg_full or n == 0:
        return sh[:, :k_low].copy()
    cams = torch.as_tensor(np.asarray(camera_centers, np.float64).reshape(-1, 3))
    v = cams.shape[0]
    mu = float(rho) * v / (4.0 * math.pi)
    if v == 0:  # no views: the whole-sphere optimum, plain truncation
        return sh[:, :k_low].copy()
    if not reference:
        out = np.empty((n, k_low, 3), dtype=np.float32)
        _fit_kernel(
            np.ascontiguousarray(means, np.float64), sh, np.ascontiguousarray(cams.numpy()), deg_full, k_low, mu, out
        )
        return out
    out = np.empty((n, k_low, 3), dtype=np.float32)
    eye = torch.eye(k_low, dtype=torch.float64)
    for s in range(0, n, chunk):
        m = torch.as_tensor(np.asarray(means[s : s + chunk], np.float64))
        c = torch.as_tensor(sh[s : s + chunk], dtype=torch.float64)  # (n, K_L, 3)
        dirs = m[:, None, :] - cams[None, :, :]  # (n, V, 3)
        y = sh_basis(deg_full, dirs)  # (n, V, K_L)
        yl = y[..., :k_low]
        a = yl.transpose(1, 2) @ yl + mu * eye  # (n, K_l, K_l)
        target = y @ c  # (n, V, 3): the full colour at each view
        rhs = yl.transpose(1, 2) @ target + mu * c[:, :k_low]
        lc, info = torch.linalg.cholesky_ex(a)
        if bool((info != 0).any()):  # singular (too few views, rho = 0): minimum-norm solution
            x = torch.linalg.lstsq(a, rhs, driver="gelsd").solution
        else:
            x = torch.cholesky_solve(rhs, lc)
        out[s : s + chunk] = x.to(torch.float32).numpy()
    return out


@njit(cache=True, inline="always")
def _basis(x, y, z, deg, out):
    """Real SH basis values (``scene.sh.sh_basis``'s constants and order) of a unit direction."""
    out[0] = 0.28209479177387814
    if deg >= 1:
        out[1] = -0.4886025119029199 * y
        out[2] = 0.4886025119029199 * z
        out[3] = -0.4886025119029199 * x
    if deg >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out[4] = 1.0925484305920792 * x * y
        out[5] = -1.0925484305920792 * y * z
        out[6] = 0.31539156525252005 * (2.0 * zz - xx - yy)
        out[7] = -1.0925484305920792 * x * z
        out[8] = 0.5462742152960396 * (xx - yy)
    if deg >= 3:
        xx, yy, zz = x * x, y * y, z * z
        out[9] = -0.5900435899266435 * y * (3 * xx - yy)
        out[10] = 2.890611442640554 * x * y * z
        out[11] = -0.4570457994644658 * y * (4 * zz - xx - yy)
        out[12] = 0.3731763325901154 * z * (2 * zz - 3 * xx - 3 * yy)
        out[13] = -0.4570457994644658 * x * (4 * zz - xx - yy)
        out[14] = 1.445305721320277 * z * (xx - yy)
        out[15] = -0.5900435899266435 * x * (xx - 3 * yy)


@njit(cache=True, parallel=True)
def _fit_kernel(means, sh, cams, deg_full, k_low, mu, out):
    n, k_full = sh.shape[0], sh.shape[1]
    v = cams.shape[0]
    for i in prange(n):
        a = np.zeros((k_low, k_low))
        rhs = np.zeros((k_low, 3))
        y = np.empty(16)
        for c in range(v):
            dx, dy, dz = means[i, 0] - cams[c, 0], means[i, 1] - cams[c, 1], means[i, 2] - cams[c, 2]
            nr = max(np.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
            _basis(dx / nr, dy / nr, dz / nr, deg_full, y)
            for ch in range(3):
                col = 0.0
                for k in range(k_full):
                    col += y[k] * sh[i, k, ch]
                for r in range(k_low):
                    rhs[r, ch] += y[r] * col
            for r in range(k_low):
                for q in range(r + 1):
                    a[r, q] += y[r] * y[q]
        for r in range(k_low):
            a[r, r] += mu
            for ch in range(3):
                rhs[r, ch] += mu * sh[i, r, ch]
        # Cholesky a = L L^T (lower triangle of a), in place
        ok = True
        for r in range(k_low):
            for q in range(r + 1):
                s = a[r, q]
                for t in range(q):
                    s -= a[r, t] * a[q, t]
                if r == q:
                    if s <= 1e-12:
                        ok = False
                        s = 1e-12
                    a[r, r] = np.sqrt(s)
                else:
                    a[r, q] = s / a[q, q]
        if not ok:  # (nearly) singular: fall back to truncation for this Gaussian
            for r in range(k_low):
                for ch in range(3):
                    out[i, r, ch] = sh[i, r, ch]
            continue
        for ch in range(3):
            z = np.empty(k_low)
            for r in range(k_low):
                s = rhs[r, ch]
                for t in range(r):
                    s -= a[r, t] * z[t]
                z[r] = s / a[r, r]
            for r in range(k_low - 1, -1, -1):
                s = z[r]
                for t in range(r + 1, k_low):
                    s -= a[t, r] * z[t]
                z[r] = s / a[r, r]
                out[i, r, ch] = z[r]
