"""Fused EWA projection for the ``cpu`` backend: numba kernels, forward and hand-written backward.

The same maths and culling rules as :mod:`.projection` (the torch version, which the ``reference``
backend uses and which the tests compare this one against); written as one pass per Gaussian instead
of a few hundred torch ops (see docs/benchmarks.md, "Measurements behind design choices").

Antialiased mode (gsplat's ``rasterize_mode="antialiased"``, Mip-Splatting's 2D filter): the opacity is
multiplied by the compensation ``rho = sqrt(max(0, det(Sigma2) / det(Sigma2 + eps2d I)))`` (gsplat 1.5.3
``add_blur``; Sigma2 before the low-pass), and the culling / bounding box use the compensated opacity, as
gsplat's projection does. Its vector-Jacobian product w.r.t. Sigma2 is
``(0.5 / rho) ((1 - rho^2) Q - eps2d det(Q) I)`` with Q the (blurred) conic.

Backward (vector-Jacobian products), per Gaussian, with Q the conic and G its upstream gradient as a
symmetric matrix: dSigma2 = -Q G Q; dSigma_c = J^T dSigma2 J; dJ = 2 dSigma2 J Sigma_c; then through the
perspective Jacobian (with gsplat's clamped tx, ty), the rigid transform, Sigma = M M^T with M = R S,
and the quaternion normalisation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit, prange

ALPHA_THRESHOLD = 1.0 / 255.0
CHUNK = 256


@njit(cache=True, inline="always")
def _rotmat(qw, qx, qy, qz):
    return (
        1 - 2 * (qy * qy + qz * qz),
        2 * (qx * qy - qw * qz),
        2 * (qx * qz + qw * qy),
        2 * (qx * qy + qw * qz),
        1 - 2 * (qx * qx + qz * qz),
        2 * (qy * qz - qw * qx),
        2 * (qx * qz - qw * qy),
        2 * (qy * qz + qw * qx),
        1 - 2 * (qx * qx + qy * qy),
    )


@njit(cache=True, parallel=True)
def project_forward(
    means,
    quats,
    scales,
    opacities,
    viewmat,
    fx,
    fy,
    cx,
    cy,
    width,
    height,
    eps2d,
    near,
    far,
    out_m2d,
    out_conics,
    out_depths,
    out_radii,
    out_cov2d,
    antialiased,
    out_comp,
):
    """EWA projection of N Gaussians into one camera, into the ``out_*`` arrays (numba, parallel).

    Args:
        means: [N, 3], quats: [N, 4], scales: [N, 3] (activated), opacities: [N] (activated).
        viewmat: [4, 4] world-to-camera; fx, fy, cx, cy: intrinsics; width, height: image size.
        eps2d: The 2D low-pass in px^2; near, far: depth range.
        out_m2d: [N, 2] means in pixels, written.
        out_conics: [N, 3] inverse 2D covariances (a, b, c), written.
        out_depths: [N] camera-space z, written.
        out_radii: [N, 2] int32 bounding-box half sizes (0: culled), written.
        out_cov2d: [N, 3] 2D covariances with the low-pass (a, b, c), written.
        antialiased: Compute the low-pass compensation.
        out_comp: [N] compensation (1 unless ``antialiased``; 0 for culled Gaussians), written.

    Returns:
        None.
    """
    n = means.shape[0]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lxp, lxn = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lyp, lyn = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    V = viewmat
    n_chunks = (n + CHUNK - 1) // CHUNK
    for ch in prange(n_chunks):
        m = np.empty((3, 3))
        for i in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            out_radii[i, 0] = 0
            out_radii[i, 1] = 0
            out_comp[i] = 0.0
            mx, my, mz = means[i, 0], means[i, 1], means[i, 2]
            x = V[0, 0] * mx + V[0, 1] * my + V[0, 2] * mz + V[0, 3]
            y = V[1, 0] * mx + V[1, 1] * my + V[1, 2] * mz + V[1, 3]
            z = V[2, 0] * mx + V[2, 1] * my + V[2, 2] * mz + V[2, 3]
            out_depths[i] = z
            out_m2d[i, 0] = 0.0
            out_m2d[i, 1] = 0.0
            out_conics[i, 0] = 0.0
            out_conics[i, 1] = 0.0
            out_conics[i, 2] = 0.0
            if not (z > near and z < far):
                continue
            qw, qx, qy, qz = quats[i, 0], quats[i, 1], quats[i, 2], quats[i, 3]
            qn = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
            qn = max(qn, 1e-12)
            r = _rotmat(qw / qn, qx / qn, qy / qn, qz / qn)
            s0, s1, s2 = scales[i, 0], scales[i, 1], scales[i, 2]
            # M = V_R @ R @ S (camera-space), Sigma_c = M M^T
            for a in range(3):
                for b in range(3):
                    acc = V[a, 0] * r[0 * 3 + b] + V[a, 1] * r[1 * 3 + b] + V[a, 2] * r[2 * 3 + b]
                    m[a, b] = acc * (s0 if b == 0 else (s1 if b == 1 else s2))
            rz = 1.0 / z
            u = min(max(x * rz, -lxn), lxp)
            v = min(max(y * rz, -lyn), lyp)
            tx, ty = z * u, z * v
            j00, j02 = fx * rz, -fx * tx * rz * rz
            j11, j12 = fy * rz, -fy * ty * rz * rz
            # T = J M (2x3); Sigma2 = T T^T
            t0 = (j00 * m[0, 0] + j02 * m[2, 0], j00 * m[0, 1] + j02 * m[2, 1], j00 * m[0, 2] + j02 * m[2, 2])
            t1 = (j11 * m[1, 0] + j12 * m[2, 0], j11 * m[1, 1] + j12 * m[2, 1], j11 * m[1, 2] + j12 * m[2, 2])
            c00 = t0[0] * t0[0] + t0[1] * t0[1] + t0[2] * t0[2]
            c01 = t0[0] * t1[0] + t0[1] * t1[1] + t0[2] * t1[2]
            c11 = t1[0] * t1[0] + t1[1] * t1[1] + t1[2] * t1[2]
            a_ = c00 + eps2d
            c_ = c11 + eps2d
            det = a_ * c_ - c01 * c01
            if not det > 0:
                continue
            comp = 1.0
            if antialiased:
                comp = math.sqrt(max(0.0, (c00 * c11 - c01 * c01) / det))
            out_comp[i] = comp
            px = fx * x * rz + cx
            py = fy * y * rz + cy
            op = opacities[i] * comp
            if op < ALPHA_THRESHOLD:
                continue
            ext = min(3.33, math.sqrt(2.0 * math.log(op / ALPHA_THRESHOLD)))
            rx = math.ceil(ext * math.sqrt(a_))
            ry = math.ceil(ext * math.sqrt(c_))
            if rx <= 0 and ry <= 0:
                continue
            if px + rx <= 0 or px - rx >= width or py + ry <= 0 or py - ry >= height:
                continue
            if not (math.isfinite(px) and math.isfinite(py)):
                continue
            out_m2d[i, 0] = px
            out_m2d[i, 1] = py
            out_conics[i, 0] = c_ / det
            out_conics[i, 1] = -c01 / det
            out_conics[i, 2] = a_ / det
            out_radii[i, 0] = int(rx)
            out_radii[i, 1] = int(ry)
            out_cov2d[i, 0] = a_
            out_cov2d[i, 1] = c01
            out_cov2d[i, 2] = c_


@njit(cache=True, inline="always")
def _mm(A, B, out, n, k, m):
    """out[:n, :m] = A[:n, :k] @ B[:k, :m] (small matrices, no BLAS call; A, B may be transposed views)."""
    for a in range(n):
        for b in range(m):
            acc = 0.0
            for c in range(k):
                acc += A[a, c] * B[c, b]
            out[a, b] = acc


@njit(cache=True, parallel=True)
def project_backward(
    means,
    quats,
    scales,
    viewmat,
    fx,
    fy,
    cx,
    cy,
    width,
    height,
    radii,
    conics,
    v_m2d,
    v_conics,
    v_depths,
    g_means,
    g_quats,
    g_scales,
    eps2d,
    comps,
    v_comps,
):
    """Hand-derived backward pass of ``project_forward``, into the ``g_*`` arrays.

    Args:
        means, quats, scales, viewmat, fx, fy, cx, cy, width, height: As for ``project_forward``.
        radii, conics: The forward outputs.
        v_m2d: [N, 2], v_conics: [N, 3], v_depths: [N]: gradients of the outputs.
        g_means: [N, 3], g_quats: [N, 4], g_scales: [N, 3]: gradients, written.
        eps2d: The 2D low-pass.
        comps: [N] forward compensation; v_comps: [N] its gradient.

    Returns:
        None.
    """
    n = means.shape[0]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lxp, lxn = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lyp, lyn = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    V = viewmat
    Vr = np.ascontiguousarray(viewmat[:3, :3])
    n_chunks = (n + CHUNK - 1) // CHUNK
    for ch in prange(n_chunks):
        M = np.empty((3, 3))
        Sig = np.empty((3, 3))
        T3 = np.empty((3, 3))
        Sc = np.empty((3, 3))
        J = np.zeros((2, 3))
        vS2 = np.empty((2, 2))
        T23 = np.empty((2, 3))
        vSc = np.empty((3, 3))
        vJ = np.empty((2, 3))
        vSig = np.empty((3, 3))
        vM = np.empty((3, 3))
        vR = np.empty(9)
        for i in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            for k in range(3):
                g_means[i, k] = 0.0
                g_scales[i, k] = 0.0
            for k in range(4):
                g_quats[i, k] = 0.0
            if radii[i, 0] <= 0 and radii[i, 1] <= 0:
                continue
            mx, my, mz = means[i, 0], means[i, 1], means[i, 2]
            x = V[0, 0] * mx + V[0, 1] * my + V[0, 2] * mz + V[0, 3]
            y = V[1, 0] * mx + V[1, 1] * my + V[1, 2] * mz + V[1, 3]
            z = V[2, 0] * mx + V[2, 1] * my + V[2, 2] * mz + V[2, 3]
            qw0, qx0, qy0, qz0 = quats[i, 0], quats[i, 1], quats[i, 2], quats[i, 3]
            qn = max(math.sqrt(qw0 * qw0 + qx0 * qx0 + qy0 * qy0 + qz0 * qz0), 1e-12)
            qw, qx, qy, qz = qw0 / qn, qx0 / qn, qy0 / qn, qz0 / qn
            r = _rotmat(qw, qx, qy, qz)
            s0, s1, s2 = scales[i, 0], scales[i, 1], scales[i, 2]
            for a in range(3):
                M[a, 0] = r[a * 3 + 0] * s0
                M[a, 1] = r[a * 3 + 1] * s1
                M[a, 2] = r[a * 3 + 2] * s2
            _mm(M, M.T, Sig, 3, 3, 3)  # Sigma = M M^T
            _mm(Vr, Sig, T3, 3, 3, 3)
            _mm(T3, Vr.T, Sc, 3, 3, 3)  # Sigma_c = V Sigma V^T
            rz = 1.0 / z
            rz2 = rz * rz
            ux, uy = x * rz, y * rz
            clx = ux < -lxn or ux > lxp
            cly = uy < -lyn or uy > lyp
            u = min(max(ux, -lxn), lxp)
            v = min(max(uy, -lyn), lyp)
            tx, ty = z * u, z * v
            J[0, 0] = fx * rz
            J[0, 2] = -fx * tx * rz2
            J[1, 1] = fy * rz
            J[1, 2] = -fy * ty * rz2
            # conic gradient -> Sigma2 gradient: dS2 = -Q G Q (G symmetric, off-diagonal halved)
            q00, q01, q11 = conics[i, 0], conics[i, 1], conics[i, 2]
            g00, g01, g11 = v_conics[i, 0], 0.5 * v_conics[i, 1], v_conics[i, 2]
            a00 = q00 * g00 + q01 * g01
            a01 = q00 * g01 + q01 * g11
            a10 = q01 * g00 + q11 * g01
            a11 = q01 * g01 + q11 * g11
            vS2[0, 0] = -(a00 * q00 + a01 * q01)
            vS2[0, 1] = -(a00 * q01 + a01 * q11)
            vS2[1, 0] = -(a10 * q00 + a11 * q01)
            vS2[1, 1] = -(a10 * q01 + a11 * q11)
            rho = comps[i]
            if v_comps[i] != 0.0 and rho > 0.0:  # antialiased: the compensation's dependence on Sigma2
                f = 0.5 * v_comps[i] / rho
                det_q = q00 * q11 - q01 * q01
                vS2[0, 0] += f * ((1.0 - rho * rho) * q00 - eps2d * det_q)
                vS2[0, 1] += f * (1.0 - rho * rho) * q01
                vS2[1, 0] += f * (1.0 - rho * rho) * q01
                vS2[1, 1] += f * ((1.0 - rho * rho) * q11 - eps2d * det_q)
            _mm(vS2, J, T23, 2, 2, 3)
            _mm(J.T, T23, vSc, 3, 2, 3)  # vSc = J^T vS2 J
            _mm(T23, Sc, vJ, 2, 3, 3)  # vJ = 2 vS2 J Sc
            vx = fx * rz * v_m2d[i, 0]
            vy = fy * rz * v_m2d[i, 1]
            vz = -fx * x * rz2 * v_m2d[i, 0] - fy * y * rz2 * v_m2d[i, 1] + v_depths[i]
            rz3 = rz2 * rz
            vz += 2.0 * (
                -fx * rz2 * vJ[0, 0]
                - fy * rz2 * vJ[1, 1]
                + 2.0 * fx * tx * rz3 * vJ[0, 2]
                + 2.0 * fy * ty * rz3 * vJ[1, 2]
            )
            vtx = -2.0 * fx * rz2 * vJ[0, 2]
            vty = -2.0 * fy * rz2 * vJ[1, 2]
            if clx:
                vz += vtx * u
            else:
                vx += vtx
            if cly:
                vz += vty * v
            else:
                vy += vty
            for k in range(3):
                g_means[i, k] = Vr[0, k] * vx + Vr[1, k] * vy + Vr[2, k] * vz
            _mm(Vr.T, vSc, T3, 3, 3, 3)
            _mm(T3, Vr, vSig, 3, 3, 3)  # vSigma = V^T vSc V
            _mm(vSig, M, vM, 3, 3, 3)  # vM = 2 vSigma M (factor 2 below)
            for a in range(3):
                for b in range(3):
                    vm = 2.0 * vM[a, b]
                    vR[a * 3 + b] = vm * (s0 if b == 0 else (s1 if b == 1 else s2))
                    g_scales[i, b] += vm * r[a * 3 + b]
            vw = 2.0 * (-qz * vR[1] + qy * vR[2] + qz * vR[3] - qx * vR[5] - qy * vR[6] + qx * vR[7])
            vqx = 2.0 * (
                qy * vR[1]
                + qz * vR[2]
                + qy * vR[3]
                - 2 * qx * vR[4]
                - qw * vR[5]
                + qz * vR[6]
                + qw * vR[7]
                - 2 * qx * vR[8]
            )
            vqy = 2.0 * (
                -2 * qy * vR[0]
                + qx * vR[1]
                + qw * vR[2]
                + qx * vR[3]
                + qz * vR[5]
                - qw * vR[6]
                + qz * vR[7]
                - 2 * qy * vR[8]
            )
            vqz = 2.0 * (
                -2 * qz * vR[0]
                - qw * vR[1]
                + qx * vR[2]
                + qw * vR[3]
                - 2 * qz * vR[4]
                + qy * vR[5]
                + qx * vR[6]
                + qy * vR[7]
            )
            dot = qw * vw + qx * vqx + qy * vqy + qz * vqz
            g_quats[i, 0] = (vw - qw * dot) / qn
            g_quats[i, 1] = (vqx - qx * dot) / qn
            g_quats[i, 2] = (vqy - qy * dot) / qn
            g_quats[i, 3] = (vqz - qz * dot) / qn


def _np(t: torch.Tensor, dtype=np.float32) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(dtype, copy=False))


class ProjectCPU(torch.autograd.Function):
    """Autograd function of the fused projection for one camera.

    Inputs: means [N, 3], quats [N, 4], activated scales [N, 3], activated opacities [N], viewmat
    [4, 4], K [3, 3], width, height, eps2d, near, far, antialiased. Outputs: means2d [N, 2], conics
    [N, 3], depths [N], radii [N, 2] (int32, non-differentiable) and the antialiasing compensation
    [N] (1 unless ``antialiased``; 0 for culled Gaussians).
    """

    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmat, K, width, height, eps2d, near, far, antialiased=False):
        """Run ``project_forward`` and save what the backward pass needs."""
        n = means.shape[0]
        mu, q, s, o = _np(means), _np(quats), _np(scales), _np(opacities)
        V = _np(viewmat, np.float64)
        Kn = _np(K, np.float64)
        fx, fy, cx, cy = float(Kn[0, 0]), float(Kn[1, 1]), float(Kn[0, 2]), float(Kn[1, 2])
        m2d = np.empty((n, 2), np.float32)
        con = np.empty((n, 3), np.float32)
        dep = np.empty(n, np.float32)
        rad = np.empty((n, 2), np.int32)
        cov = np.zeros((n, 3), np.float32)
        comp = np.empty(n, np.float32)
        project_forward(
            mu,
            q,
            s,
            o,
            V,
            fx,
            fy,
            cx,
            cy,
            width,
            height,
            eps2d,
            near,
            far,
            m2d,
            con,
            dep,
            rad,
            cov,
            bool(antialiased),
            comp,
        )
        ctx.saved = (mu, q, s, V, fx, fy, cx, cy, width, height, rad, con, float(eps2d), comp)
        radii = torch.from_numpy(rad)
        ctx.mark_non_differentiable(radii)
        return torch.from_numpy(m2d), torch.from_numpy(con), torch.from_numpy(dep), radii, torch.from_numpy(comp)

    @staticmethod
    def backward(ctx, v_m2d, v_con, v_dep, _v_rad, v_comp):
        """Run ``project_backward``: gradients for means, quats and scales (None for the other inputs)."""
        mu, q, s, V, fx, fy, cx, cy, width, height, rad, con, eps2d, comp = ctx.saved
        n = mu.shape[0]
        z2 = lambda k: np.zeros((n, k), np.float32)  # noqa: E731
        vm = _np(v_m2d) if v_m2d is not None else z2(2)
        vc = _np(v_con) if v_con is not None else z2(3)
        vd = _np(v_dep) if v_dep is not None else np.zeros(n, np.float32)
        vcomp = _np(v_comp) if v_comp is not None else np.zeros(n, np.float32)
        gm, gq, gs = np.empty((n, 3), np.float32), np.empty((n, 4), np.float32), np.empty((n, 3), np.float32)
        project_backward(
            mu, q, s, V, fx, fy, cx, cy, width, height, rad, con, vm, vc, vd, gm, gq, gs, eps2d, comp, vcomp
        )
        return (
            torch.from_numpy(gm),
            torch.from_numpy(gq),
            torch.from_numpy(gs),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        )
