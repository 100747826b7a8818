"""Fused SH colour evaluation for the ``cpu`` backend: numba forward and hand-written backward.

colour = max(0, sum_k c_k Y_k(d) + 0.5), d = normalise(mean - camera centre); the basis and its
constants are those of :mod:`splatdistill.scene.sh` (gsplat / Inria convention). The backward pass
gives gradients for the coefficients and, through the view direction, for the means.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit, prange

from splatdistill.scene.sh import C0, C1, C2, C3

CHUNK = 512


@njit(cache=True, inline="always")
def _basis(deg, x, y, z, out):
    out[0] = C0
    if deg < 1:
        return
    out[1] = -C1 * y
    out[2] = C1 * z
    out[3] = -C1 * x
    if deg < 2:
        return
    xx, yy, zz = x * x, y * y, z * z
    xy, yz, xz = x * y, y * z, x * z
    out[4] = C2[0] * xy
    out[5] = C2[1] * yz
    out[6] = C2[2] * (2.0 * zz - xx - yy)
    out[7] = C2[3] * xz
    out[8] = C2[4] * (xx - yy)
    if deg < 3:
        return
    out[9] = C3[0] * y * (3 * xx - yy)
    out[10] = C3[1] * xy * z
    out[11] = C3[2] * y * (4 * zz - xx - yy)
    out[12] = C3[3] * z * (2 * zz - 3 * xx - 3 * yy)
    out[13] = C3[4] * x * (4 * zz - xx - yy)
    out[14] = C3[5] * z * (xx - yy)
    out[15] = C3[6] * x * (xx - 3 * yy)


@njit(cache=True, inline="always")
def _basis_grad(deg, x, y, z, gx, gy, gz):
    """d Y_k / d(x, y, z) for k < (deg+1)^2 (unnormalised direction components)."""
    for k in range(16):
        gx[k] = 0.0
        gy[k] = 0.0
        gz[k] = 0.0
    if deg < 1:
        return
    gy[1] = -C1
    gz[2] = C1
    gx[3] = -C1
    if deg < 2:
        return
    gx[4], gy[4] = C2[0] * y, C2[0] * x
    gy[5], gz[5] = C2[1] * z, C2[1] * y
    gx[6], gy[6], gz[6] = -2.0 * C2[2] * x, -2.0 * C2[2] * y, 4.0 * C2[2] * z
    gx[7], gz[7] = C2[3] * z, C2[3] * x
    gx[8], gy[8] = 2.0 * C2[4] * x, -2.0 * C2[4] * y
    if deg < 3:
        return
    xx, yy, zz = x * x, y * y, z * z
    gx[9], gy[9] = C3[0] * 6 * x * y, C3[0] * (3 * xx - 3 * yy)
    gx[10], gy[10], gz[10] = C3[1] * y * z, C3[1] * x * z, C3[1] * x * y
    gx[11], gy[11], gz[11] = C3[2] * (-2 * x * y), C3[2] * (4 * zz - xx - 3 * yy), C3[2] * 8 * y * z
    gx[12], gy[12], gz[12] = C3[3] * (-6 * x * z), C3[3] * (-6 * y * z), C3[3] * (6 * zz - 3 * xx - 3 * yy)
    gx[13], gy[13], gz[13] = C3[4] * (4 * zz - 3 * xx - yy), C3[4] * (-2 * x * y), C3[4] * 8 * x * z
    gx[14], gy[14], gz[14] = C3[5] * 2 * x * z, C3[5] * (-2 * y * z), C3[5] * (xx - yy)
    gx[15], gy[15] = C3[6] * (3 * xx - 3 * yy), C3[6] * (-6 * x * y)


@njit(cache=True, parallel=True)
def sh_forward(deg, means, coeffs, campos, out):
    """SH colours of N Gaussians seen from ``campos``, into ``out`` (numba, parallel).

    Args:
        deg: SH degree.
        means: [N, 3] positions.
        coeffs: [N, K, 3] SH coefficients.
        campos: [3] camera centre.
        out: [N, 3] colours (SH + 0.5, clamped at 0), written.

    Returns:
        None.
    """
    n = means.shape[0]
    kk = (deg + 1) * (deg + 1)
    for ch in prange((n + CHUNK - 1) // CHUNK):
        b = np.zeros(16)
        for i in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            dx, dy, dz = means[i, 0] - campos[0], means[i, 1] - campos[1], means[i, 2] - campos[2]
            nrm = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
            _basis(deg, dx / nrm, dy / nrm, dz / nrm, b)
            for c in range(3):
                acc = 0.0
                for k in range(kk):
                    acc += b[k] * coeffs[i, k, c]
                out[i, c] = max(acc + 0.5, 0.0)


@njit(cache=True, parallel=True)
def sh_backward(deg, means, coeffs, campos, colors, v_colors, g_coeffs, g_means):
    """Hand-derived backward pass of ``sh_forward``, into ``g_coeffs`` and ``g_means``.

    Args:
        deg, means, coeffs, campos: As for ``sh_forward``.
        colors: [N, 3] the forward colours (the clamp's mask).
        v_colors: [N, 3] gradient of the colours.
        g_coeffs: [N, K, 3], written.
        g_means: [N, 3], written.

    Returns:
        None.
    """
    n = means.shape[0]
    kk = (deg + 1) * (deg + 1)
    for ch in prange((n + CHUNK - 1) // CHUNK):
        b = np.zeros(16)
        gx, gy, gz = np.zeros(16), np.zeros(16), np.zeros(16)
        for i in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            for k in range(coeffs.shape[1]):
                for c in range(3):
                    g_coeffs[i, k, c] = 0.0
            g_means[i, 0] = 0.0
            g_means[i, 1] = 0.0
            g_means[i, 2] = 0.0
            v0 = v_colors[i, 0] if colors[i, 0] > 0 else 0.0
            v1 = v_colors[i, 1] if colors[i, 1] > 0 else 0.0
            v2 = v_colors[i, 2] if colors[i, 2] > 0 else 0.0
            if v0 == 0.0 and v1 == 0.0 and v2 == 0.0:
                continue
            dx, dy, dz = means[i, 0] - campos[0], means[i, 1] - campos[1], means[i, 2] - campos[2]
            nrm = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
            x, y, z = dx / nrm, dy / nrm, dz / nrm
            _basis(deg, x, y, z, b)
            for k in range(kk):
                g_coeffs[i, k, 0] = b[k] * v0
                g_coeffs[i, k, 1] = b[k] * v1
                g_coeffs[i, k, 2] = b[k] * v2
            if deg == 0:
                continue
            _basis_grad(deg, x, y, z, gx, gy, gz)
            # d loss / d (unit direction)
            ux = uy = uz = 0.0
            for k in range(1, kk):
                w = v0 * coeffs[i, k, 0] + v1 * coeffs[i, k, 1] + v2 * coeffs[i, k, 2]
                ux += w * gx[k]
                uy += w * gy[k]
                uz += w * gz[k]
            # through the normalisation d = v / |v|
            dot = ux * x + uy * y + uz * z
            g_means[i, 0] = (ux - dot * x) / nrm
            g_means[i, 1] = (uy - dot * y) / nrm
            g_means[i, 2] = (uz - dot * z) / nrm


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32, copy=False))


class SHColorsCPU(torch.autograd.Function):
    """Autograd function: (means [N, 3], sh0 [N, 1, 3], shN [N, K-1, 3], camera centre [3], degree) ->
    colours [N, 3].
    """

    @staticmethod
    def forward(ctx, means, sh0, shN, campos, degree):
        """Run ``sh_forward`` and save what the backward pass needs."""
        coeffs = np.ascontiguousarray(np.concatenate([_np(sh0), _np(shN)], axis=1))
        mu, cp = _np(means), _np(campos).astype(np.float64)
        out = np.empty((mu.shape[0], 3), np.float32)
        sh_forward(int(degree), mu, coeffs, cp, out)
        ctx.saved = (mu, coeffs, cp, out, int(degree))
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, v_colors):
        """Run ``sh_backward``; gradients for means, sh0 and shN."""
        mu, coeffs, cp, out, degree = ctx.saved
        g_coeffs = np.empty_like(coeffs)
        g_means = np.empty_like(mu)
        sh_backward(degree, mu, coeffs, cp, out, _np(v_colors), g_coeffs, g_means)
        g = torch.from_numpy(g_coeffs)
        return torch.from_numpy(g_means), g[:, :1], g[:, 1:], None, None
