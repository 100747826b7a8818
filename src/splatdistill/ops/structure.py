"""Structural losses: keep a student's spatial point distribution close to a teacher's.

Distilled-3DGS (Xiang et al. 2025, arXiv 2508.14037; see ``../shared/METHODS.md`` §1) adds a
"structural similarity" loss between the student's and the teacher's Gaussian centres: soft 1-D
histograms of x, y and z (256 bins, Gaussian kernel of σ = 0.5 bin) over a bounding box shared by
both point sets, H = hx ⊗ hy ⊗ hz, and L = 1 − cos(H_student, H_teacher).

Two losses live here:

- ``marginal``: the paper's loss. Since ⟨a⊗b⊗c, a'⊗b'⊗c'⟩ = ⟨a,a'⟩⟨b,b'⟩⟨c,c'⟩ and the norm of an
  outer product is the product of the norms, cos(H_s, H_t) = Π_axis cos(h_s, h_t): we never form the
  256³ tensor. The same identity shows the loss only matches the three marginals (METHODS.md §1),
  so two clouds with equal marginals but different shapes (a diagonal vs an anti-diagonal) score 0.
- ``joint``: ours. 1 − cos between trilinear occupancy grids (G³ cells) of the two clouds, which
  sees the joint 3-D distribution. By default it averages five resolutions (G, G/2, …, G/16): the
  coarse grids give gradient at longer range (a fine grid gives none between cells that do not
  overlap); docs/benchmarks.md ("Measurements behind design choices") has the experiment behind that
  choice.

Conventions shared by both:

- The box is computed once from detached points (no gradient flows through it) and padded.
- Coordinates in "cell units" are u = (x − lo)/(hi − lo)·n − 0.5, so integer u is a bin/cell centre.
- Points outside the box are *clamped* onto the outermost bin/cell centres with a straight-through
  gradient: they keep their mass (the loss sees them piling up at the border, where the teacher has
  little) and still receive the gradient computed at the border, which pulls them back inside. Dropping
  them instead would let the cosine improve by pushing surplus student points out of the box.
- Memory is O(N·taps) for the histograms (6 taps per axis at σ = 0.5; O(N + bins) in the kernels)
  and O(N + G³) for the grids: everything is a scatter-add, whose backward is a gather.

Two implementations: compiled CPU kernels (numba, used for CPU tensors) and torch ops (any device;
the reference the tests compare the kernels with). On CPU the losses run as one fused autograd
function whose only per-point work is one kernel pass forward and one backward, with the G³ algebra in
numpy: on a busy CPU every multi-threaded torch op on a large tensor pays a thread wake-up, so a chain
of torch ops costs far more than the kernels (see docs/benchmarks.md, "Measurements behind design
choices").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from splatdistill.errors import UserError

__all__ = [
    "shared_bbox",
    "marginal_histograms",
    "marginal_loss",
    "occupancy_grid",
    "grid_sizes",
    "joint_loss",
    "DEFAULT_LEVELS",
    "StructuralLossConfig",
    "StructuralLoss",
]

Impl = Literal["auto", "torch", "numba"]

_EPS = 1e-12


# ----------------------------------------------------------------------------------------------
# bounding box


def _finite_points(means: torch.Tensor, what: str) -> torch.Tensor:
    if means.ndim != 2 or means.shape[-1] != 3:
        raise ValueError(f"{what} must have shape (N, 3), got {tuple(means.shape)}")
    pts = means.detach()
    ok = torch.isfinite(pts).all(dim=1)
    if not bool(ok.all()):
        pts = pts[ok]
    if pts.shape[0] == 0:
        raise UserError(f"{what}: no point with finite coordinates")
    return pts


def _axis_range(pts: torch.Tensor, quantile: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    if not quantile:
        return pts.min(dim=0).values, pts.max(dim=0).values
    n = pts.shape[0]
    # kthvalue (1-based k) rather than torch.quantile, which refuses inputs of more than 2^24 values
    k_lo = min(max(int(round(quantile * (n - 1))) + 1, 1), n)
    k_hi = min(max(int(round((1.0 - quantile) * (n - 1))) + 1, 1), n)
    lo = torch.kthvalue(pts, k_lo, dim=0).values
    hi = torch.kthvalue(pts, k_hi, dim=0).values
    return lo, hi


def shared_bbox(
    teacher_means: torch.Tensor,
    student_means: torch.Tensor | None = None,
    quantile: float | None = None,
    pad: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The box shared by the teacher's and (optionally) the student's points. Detached.

    The box is the union of the sets' ranges, widened by ``pad`` × extent on every side (a flat axis
    counts as 1e-3 of the largest extent, so no axis has zero width).

    Args:
        teacher_means: [N_t, 3] teacher positions.
        student_means: [N_s, 3] student positions, or None.
        quantile: None (default, as the paper) takes each set's per-axis min/max; q takes its q and
            1−q quantiles instead, so a few far-away floaters do not stretch the box and waste bins.
        pad: Margin as a fraction of the extent.

    Returns:
        ``(lo, hi)``: [3] tensors each.
    """
    if quantile is not None and not 0.0 <= quantile < 0.5:
        raise ValueError(f"quantile must be in [0, 0.5), got {quantile}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    lo, hi = _axis_range(_finite_points(teacher_means, "teacher means"), quantile)
    if student_means is not None:
        s_lo, s_hi = _axis_range(_finite_points(student_means, "student means"), quantile)
        s_lo, s_hi = s_lo.to(lo.device, lo.dtype), s_hi.to(lo.device, lo.dtype)
        lo, hi = torch.minimum(lo, s_lo), torch.maximum(hi, s_hi)
    extent = hi - lo
    scale = float(extent.max())
    floor = 1e-3 * scale if scale > 0 else 1e-6 * (1.0 + float(lo.abs().max()))
    margin = pad * extent.clamp_min(floor)
    # whatever pad is, never return an axis of zero width (all points on a plane, or a single point)
    margin = torch.where(extent + 2 * margin < floor, torch.full_like(margin, 0.5 * floor), margin)
    return lo - margin, hi + margin


# ----------------------------------------------------------------------------------------------
# helpers


def _cell_coords(means: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3) coordinates in cell units (integer = cell centre), clamped to [0, n−1] straight-through,
    and the (N, 3) mask of finite ones (non-finite coordinates are set to 0; callers drop them)."""
    lo = lo.to(means.device, means.dtype)
    hi = hi.to(means.device, means.dtype)
    u = (means - lo) * (n / (hi - lo)) - 0.5
    ok = torch.isfinite(u)
    if not bool(ok.all()):
        u = torch.where(ok, u, torch.zeros_like(u))
    return u + (u.detach().clamp(0.0, n - 1.0) - u.detach()), ok


def _check_weights(weights: torch.Tensor | None, means: torch.Tensor) -> torch.Tensor | None:
    if means.ndim != 2 or means.shape[-1] != 3:
        raise ValueError(f"means must have shape (N, 3), got {tuple(means.shape)}")
    if weights is None:
        return None
    weights = weights.to(means.device, means.dtype).reshape(-1)
    if weights.shape[0] != means.shape[0]:
        raise ValueError(f"weights must have one value per point ({means.shape[0]}), got {weights.shape[0]}")
    return weights


def _cosine(a: torch.Tensor, b: torch.Tensor, dim=None) -> torch.Tensor:
    """Cosine between a and b along ``dim`` (all dims when None)."""
    if dim is None:
        a, b, dim = a.reshape(-1), b.reshape(-1), 0
    dot = (a * b).sum(dim=dim)
    return dot / (a.norm(dim=dim) * b.norm(dim=dim)).clamp_min(_EPS)


# ----------------------------------------------------------------------------------------------
# compiled CPU kernels (numba). Accumulation in float64; non-finite points are skipped (no mass, no
# gradient). Gradient kernels *add* into their outputs, so several resolutions share one buffer.

try:  # numba is a dependency of the package (the cpu renderer); keep a torch-only fallback anyway
    from numba import njit

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    _HAVE_NUMBA = False

if _HAVE_NUMBA:

    @njit(cache=True, nogil=True, inline="always")
    def _nb_cell(x, lo, inv, n):
        """Clamped cell coordinate of x -> (lower corner in [0, n−2], fraction in [0, 1])."""
        u = min(max((x - lo) * inv - 0.5, 0.0), n - 1.0)
        i = min(int(u), n - 2)  # u >= 0: truncation is floor
        return i, u - i

    @njit(cache=True, nogil=True, fastmath={"contract", "reassoc", "arcp", "nsz"})
    def _nb_splat(means, lo, inv, weights, has_w, sizes, offsets, out):
        """Trilinear splat into several grids at once: grid l (size G = sizes[l], inv[l] = G / box
        width) is the flat slice out[offsets[l] : offsets[l] + G³]. One pass over the points."""
        for p in range(means.shape[0]):
            x, y, z = means[p, 0], means[p, 1], means[p, 2]
            if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
                continue
            wp = weights[p] if has_w else 1.0
            for lvl in range(sizes.shape[0]):
                G = sizes[lvl]
                ix, fx = _nb_cell(x, lo[0], inv[lvl, 0], G)
                iy, fy = _nb_cell(y, lo[1], inv[lvl, 1], G)
                iz, fz = _nb_cell(z, lo[2], inv[lvl, 2], G)
                base = offsets[lvl] + (ix * G + iy) * G + iz
                for dx in range(2):
                    wx = wp * (fx if dx else 1.0 - fx)
                    for dy in range(2):
                        wxy = wx * (fy if dy else 1.0 - fy)
                        o = base + dx * G * G + dy * G
                        out[o] += wxy * (1.0 - fz)
                        out[o + 1] += wxy * fz

    @njit(cache=True, nogil=True, fastmath={"contract", "reassoc", "arcp", "nsz"})
    def _nb_splat_grad(means, lo, inv, weights, has_w, sizes, offsets, gout, gmeans, gweights):
        """Backward of ``_nb_splat``: gout is laid out like its ``out``; adds into gmeans, gweights."""
        for p in range(means.shape[0]):
            x, y, z = means[p, 0], means[p, 1], means[p, 2]
            if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
                continue
            wp = weights[p] if has_w else 1.0
            tx = 0.0
            ty = 0.0
            tz = 0.0
            val = 0.0
            for lvl in range(sizes.shape[0]):
                G = sizes[lvl]
                ix, fx = _nb_cell(x, lo[0], inv[lvl, 0], G)
                iy, fy = _nb_cell(y, lo[1], inv[lvl, 1], G)
                iz, fz = _nb_cell(z, lo[2], inv[lvl, 2], G)
                base = offsets[lvl] + (ix * G + iy) * G + iz
                # value = Σ_corners g·wx·wy·wz; its partial derivatives in fx, fy, fz
                gx = 0.0
                gy = 0.0
                gz = 0.0
                for dx in range(2):
                    wx = fx if dx else 1.0 - fx
                    sx = 1.0 if dx else -1.0
                    for dy in range(2):
                        wy = fy if dy else 1.0 - fy
                        sy = 1.0 if dy else -1.0
                        o = base + dx * G * G + dy * G
                        g0 = gout[o]
                        g1 = gout[o + 1]
                        gi = g0 * (1.0 - fz) + g1 * fz
                        val += wx * wy * gi
                        gx += sx * wy * gi
                        gy += sy * wx * gi
                        gz += wx * wy * (g1 - g0)
                # straight-through clamp: du/dx = inv everywhere
                tx += gx * inv[lvl, 0]
                ty += gy * inv[lvl, 1]
                tz += gz * inv[lvl, 2]
            gmeans[p, 0] += wp * tx
            gmeans[p, 1] += wp * ty
            gmeans[p, 2] += wp * tz
            gweights[p] += val

    @njit(cache=True, nogil=True)
    def _nb_hist(means, lo, inv, weights, has_w, B, sigma, R, out):
        cut = math.exp(-0.5 * ((R + 1) / sigma) ** 2)
        dl = 1.0 / sigma
        rr = math.exp(-dl * dl)
        for p in range(means.shape[0]):
            if not (math.isfinite(means[p, 0]) and math.isfinite(means[p, 1]) and math.isfinite(means[p, 2])):
                continue
            wp = weights[p] if has_w else 1.0
            for a in range(3):
                x = means[p, a]
                u = min(max((x - lo[a]) * inv[a] - 0.5, 0.0), B - 1.0)
                k0 = int(u)  # u >= 0
                k1 = max(k0 - R, 0)
                # exp(−d²/2) at d = (u − k)/σ for consecutive k by recurrence: 2 exps instead of 2R+2
                d = (u - k1) * dl
                e = math.exp(-0.5 * d * d)
                q = math.exp(d * dl - 0.5 * dl * dl)
                for k in range(k1, min(k0 + R + 2, B)):
                    out[a, k] += wp * (e - cut)
                    e *= q
                    q *= rr

    @njit(cache=True, nogil=True)
    def _nb_hist_grad(means, lo, inv, weights, has_w, B, sigma, R, gout, gmeans, gweights):
        cut = math.exp(-0.5 * ((R + 1) / sigma) ** 2)
        dl = 1.0 / sigma
        rr = math.exp(-dl * dl)
        for p in range(means.shape[0]):
            if not (math.isfinite(means[p, 0]) and math.isfinite(means[p, 1]) and math.isfinite(means[p, 2])):
                continue
            wp = weights[p] if has_w else 1.0
            val = 0.0
            for a in range(3):
                x = means[p, a]
                u = min(max((x - lo[a]) * inv[a] - 0.5, 0.0), B - 1.0)
                k0 = int(u)  # u >= 0
                k1 = max(k0 - R, 0)
                d = (u - k1) * dl
                e = math.exp(-0.5 * d * d)
                q = math.exp(d * dl - 0.5 * dl * dl)
                gu = 0.0
                for k in range(k1, min(k0 + R + 2, B)):
                    val += gout[a, k] * (e - cut)
                    gu -= gout[a, k] * e * d * dl  # d/du exp(−d²/2) = −e·d/σ
                    e *= q
                    q *= rr
                    d -= dl
                gmeans[p, a] += wp * gu * inv[a]
            gweights[p] += val


def _use_numba(impl: str, means: torch.Tensor) -> bool:
    if impl not in ("auto", "torch", "numba"):
        raise ValueError(f"impl must be auto, torch or numba, got '{impl}'")
    ok = _HAVE_NUMBA and means.device.type == "cpu" and means.dtype in (torch.float32, torch.float64)
    if impl == "numba" and not ok:
        raise ValueError("impl='numba' needs numba and float32/float64 CPU tensors")
    return impl == "numba" or (impl == "auto" and ok)


class _Points:
    """float64 numpy copies of a point set and its box for the kernels (one compiled signature per
    kernel, whatever the tensors' dtype: a cold start compiles 4 kernels, not 8)."""

    def __init__(self, means: torch.Tensor, weights: torch.Tensor | None, lo, hi):
        # copies, never views: the backward must see the values the forward saw
        self.dtype = means.dtype
        self.means = np.array(means.detach().numpy(), dtype=np.float64, order="C")
        self.has_w = weights is not None
        self.weights = np.array(weights.detach().numpy(), dtype=np.float64) if self.has_w else np.ones(1)
        self.lo = lo.detach().to("cpu", torch.float64).numpy()
        self.width = hi.detach().to("cpu", torch.float64).numpy() - self.lo

    def inv(self, n: int) -> np.ndarray:
        return n / self.width

    def _inv_levels(self, sizes) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(sizes, dtype=np.float64)[:, None] / self.width[None, :])

    @staticmethod
    def _layout(sizes):
        sizes = np.asarray(sizes, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes**3)]).astype(np.int64)
        return sizes, offsets

    def splat(self, sizes) -> list[np.ndarray]:
        """Flat unnormalised grids, one per size (views into one buffer)."""
        sizes, offsets = self._layout(sizes)
        out = np.zeros(int(offsets[-1]))
        _nb_splat(self.means, self.lo, self._inv_levels(sizes), self.weights, self.has_w, sizes, offsets, out)
        return [out[offsets[i] : offsets[i + 1]] for i in range(len(sizes))]

    def hist(self, bins: int, sigma: float) -> np.ndarray:
        out = np.zeros((3, bins))
        r = int(math.ceil(3.0 * sigma))
        _nb_hist(self.means, self.lo, self.inv(bins), self.weights, self.has_w, bins, sigma, r, out)
        return out

    def grad_buffers(self):
        return np.zeros(self.means.shape), np.zeros(self.means.shape[0])

    def splat_grad(self, sizes, gouts, gm: np.ndarray, gw: np.ndarray) -> None:
        """Add the gradient of Σ_l <gouts[l], grid_l> into gm, gw."""
        sizes, offsets = self._layout(sizes)
        gout = np.concatenate([np.ascontiguousarray(g, dtype=np.float64).reshape(-1) for g in gouts])
        inv = self._inv_levels(sizes)
        _nb_splat_grad(self.means, self.lo, inv, self.weights, self.has_w, sizes, offsets, gout, gm, gw)

    def hist_grad(self, bins: int, sigma: float, gout: np.ndarray, gm: np.ndarray, gw: np.ndarray) -> None:
        """Add the gradient of <gout, histograms> into gm, gw."""
        r = int(math.ceil(3.0 * sigma))
        inv = self.inv(bins)
        _nb_hist_grad(self.means, self.lo, inv, self.weights, self.has_w, bins, sigma, r, gout, gm, gw)

    def to_torch(self, a: np.ndarray) -> torch.Tensor:
        """A float64 kernel result as a tensor of the points' dtype."""
        return torch.from_numpy(a.astype(self.np_dtype, copy=False))

    @property
    def np_dtype(self):
        return np.float32 if self.dtype == torch.float32 else np.float64

    def grads_out(self, ctx, gm: np.ndarray, gw: np.ndarray):
        """(grad of means, grad of weights or None) for an autograd backward."""
        gweights = self.to_torch(gw) if self.has_w and ctx.needs_input_grad[1] else None
        return self.to_torch(gm), gweights


def _np_cos(a: np.ndarray, b: np.ndarray, axis=None):
    """(cos, |a|, |b|) along ``axis`` (all when None)."""
    na = np.sqrt((a * a).sum(axis=axis))
    nb = np.sqrt((b * b).sum(axis=axis))
    return (a * b).sum(axis=axis) / np.maximum(na * nb, _EPS), na, nb


def _np_cos_grad(a: np.ndarray, b: np.ndarray, c, na, nb) -> np.ndarray:
    """d cos(a, b) / d a = b/(|a||b|) − cos·a/|a|² (0 where a or b is 0)."""
    if na * nb < _EPS:
        return np.zeros_like(a)
    return b / (na * nb) - c * a / (na * na)


class _GridFn(torch.autograd.Function):
    """occupancy_grid on the compiled kernels."""

    @staticmethod
    def forward(ctx, means, weights, lo, hi, G, normalize):
        pts = _Points(means, weights, lo, hi)
        raw = pts.splat([G])[0]
        total = raw.sum()
        out = raw / total if normalize and total > _EPS else raw
        ctx.pts, ctx.G, ctx.out, ctx.total = pts, G, out, (total if normalize and total > _EPS else None)
        return pts.to_torch(out).view(G, G, G)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        pts = ctx.pts
        g = grad.detach().contiguous().view(-1).numpy().astype(np.float64)
        if ctx.total is not None:  # through out = raw / Σ raw
            g = (g - g @ ctx.out) / ctx.total
        gm, gw = pts.grad_buffers()
        pts.splat_grad([ctx.G], [g], gm, gw)
        return (*pts.grads_out(ctx, gm, gw), None, None, None, None)


class _HistFn(torch.autograd.Function):
    """marginal_histograms on the compiled kernels."""

    @staticmethod
    def forward(ctx, means, weights, lo, hi, bins, sigma):
        pts = _Points(means, weights, lo, hi)
        raw = pts.hist(bins, sigma)
        total = np.maximum(raw.sum(axis=1, keepdims=True), _EPS)
        out = raw / total
        ctx.pts, ctx.bins, ctx.sigma, ctx.out, ctx.total = pts, bins, sigma, out, total
        return pts.to_torch(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        pts = ctx.pts
        g = grad.detach().contiguous().numpy().astype(np.float64)
        g = (g - (g * ctx.out).sum(axis=1, keepdims=True)) / ctx.total
        gm, gw = pts.grad_buffers()
        pts.hist_grad(ctx.bins, ctx.sigma, g, gm, gw)
        return (*pts.grads_out(ctx, gm, gw), None, None, None, None)


class _JointLossFn(torch.autograd.Function):
    """mean over resolutions of 1 − cos(student grid, teacher grid), fused (grids never leave numpy).

    The cosine is scale-invariant, so the student grids are not normalised."""

    @staticmethod
    def forward(ctx, means, weights, lo, hi, sizes, teacher_grids):
        pts = _Points(means, weights, lo, hi)
        loss, levels = 0.0, []
        for _G, s, t in zip(sizes, pts.splat(sizes), teacher_grids):
            c, ns, nt = _np_cos(s, t)
            levels.append((s, t, c, ns, nt))
            loss += (1.0 - c) / len(sizes)
        ctx.pts, ctx.sizes, ctx.levels = pts, sizes, levels
        return torch.tensor(loss, dtype=means.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        pts, scale = ctx.pts, -float(grad) / len(ctx.levels)
        gm, gw = pts.grad_buffers()
        pts.splat_grad(ctx.sizes, [scale * _np_cos_grad(*lv) for lv in ctx.levels], gm, gw)
        return (*pts.grads_out(ctx, gm, gw), None, None, None, None)


class _MarginalLossFn(torch.autograd.Function):
    """1 − Π_axis cos(h_student, h_teacher), fused."""

    @staticmethod
    def forward(ctx, means, weights, lo, hi, bins, sigma, teacher_hist):
        pts = _Points(means, weights, lo, hi)
        h = pts.hist(bins, sigma)
        c, nh, nt = _np_cos(h, teacher_hist, axis=1)
        ctx.pts, ctx.bins, ctx.sigma, ctx.saved = pts, bins, sigma, (h, teacher_hist, c, nh, nt)
        return torch.tensor(1.0 - float(np.prod(c)), dtype=means.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        pts = ctx.pts
        h, t, c, nh, nt = ctx.saved
        g = np.zeros_like(h)
        for a in range(3):
            others = float(np.prod(np.delete(c, a)))
            g[a] = -float(grad) * others * _np_cos_grad(h[a], t[a], c[a], nh[a], nt[a])
        gm, gw = pts.grad_buffers()
        pts.hist_grad(ctx.bins, ctx.sigma, g, gm, gw)
        return (*pts.grads_out(ctx, gm, gw), None, None, None, None, None)


# ----------------------------------------------------------------------------------------------
# marginal (paper) loss


def marginal_histograms(
    means: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    bins: int = 256,
    sigma_bins: float = 0.5,
    weights: torch.Tensor | None = None,
    impl: Impl = "auto",
) -> torch.Tensor:
    """Soft per-axis histograms of ``means`` over [lo, hi], each summing to 1.

    Each point adds a Gaussian of σ = ``sigma_bins`` bins, evaluated at bin centres, to each axis.
    The kernel is truncated: only the 2R+2 bins nearest the point are touched (R = ⌈3σ⌉, so at least
    ±3σ is covered), and exp(−½((R+1)/σ)²) is subtracted so the kernel reaches exactly 0 where a bin
    leaves the window: the histogram stays continuous in the means. Taps outside [0, bins) are dropped.

    Args:
        means: [N, 3] positions (differentiable).
        lo: [3] lower corner of the box.
        hi: [3] upper corner.
        bins: Bins per axis.
        sigma_bins: Kernel σ in bins.
        weights: [N] per-point weights (e.g. opacities; differentiable), or None.
        impl: "auto" uses the compiled kernels for CPU tensors, torch ops otherwise.

    Returns:
        [3, bins] histograms.
    """
    _check_hist_args(bins, sigma_bins)
    weights = _check_weights(weights, means)
    if _use_numba(impl, means):
        return _HistFn.apply(means, weights, lo, hi, bins, float(sigma_bins))
    h = _hist_torch(means, lo, hi, bins, sigma_bins, weights)
    return h / h.sum(dim=1, keepdim=True).clamp_min(_EPS)


def _check_hist_args(bins: int, sigma_bins: float) -> None:
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if sigma_bins <= 0:
        raise ValueError(f"sigma_bins must be > 0, got {sigma_bins}")


def _hist_torch(means, lo, hi, bins, sigma_bins, weights) -> torch.Tensor:
    """Unnormalised (3, bins) histograms with torch ops (same maths as ``_nb_hist``)."""
    u, ok = _cell_coords(means, lo, hi, bins)  # (N, 3)
    r = int(math.ceil(3.0 * sigma_bins))
    offs = torch.arange(-r, r + 2, device=means.device)  # (T,)
    k = torch.floor(u.detach()).long().unsqueeze(-1) + offs  # (N, 3, T)
    d = (u.unsqueeze(-1) - k.to(u.dtype)) / sigma_bins
    w = torch.exp(-0.5 * d * d) - math.exp(-0.5 * ((r + 1) / sigma_bins) ** 2)
    if weights is not None:
        w = w * weights[:, None, None]
    valid = (k >= 0) & (k < bins) & ok.all(dim=1)[:, None, None]
    w = w * valid.to(w.dtype)
    flat = k.clamp(0, bins - 1) + torch.arange(3, device=means.device).view(1, 3, 1) * bins
    h = torch.zeros(3 * bins, device=means.device, dtype=w.dtype)
    return h.index_add(0, flat.reshape(-1), w.reshape(-1)).view(3, bins)


def _marginal_loss_cached(student_means, student_weights, lo, hi, bins, sigma_bins, teacher_hist, impl):
    """The marginal loss against precomputed (3, bins) teacher histograms (any positive scale)."""
    if _use_numba(impl, student_means):
        t = teacher_hist.detach().to("cpu", torch.float64).contiguous().numpy()
        return _MarginalLossFn.apply(student_means, student_weights, lo, hi, bins, float(sigma_bins), t)
    hs = _hist_torch(student_means, lo, hi, bins, sigma_bins, student_weights)
    ht = teacher_hist.detach().to(hs.device, hs.dtype)
    return 1.0 - _cosine(hs, ht, dim=1).prod()


def marginal_loss(
    student_means: torch.Tensor,
    teacher_means: torch.Tensor,
    bins: int = 256,
    sigma_bins: float = 0.5,
    lo: torch.Tensor | None = None,
    hi: torch.Tensor | None = None,
    quantile: float | None = None,
    student_weights: torch.Tensor | None = None,
    teacher_weights: torch.Tensor | None = None,
    impl: Impl = "auto",
) -> torch.Tensor:
    """The Distilled-3DGS structural loss, 1 − cos(H_s, H_t) with H = hx ⊗ hy ⊗ hz (teacher detached).

    Computed as 1 − Π_axis cos(h_s, h_t) (exact; see the module docstring), without the bins³ tensor.

    Args:
        student_means: [N_s, 3] student positions (differentiable).
        teacher_means: [N_t, 3] teacher positions.
        bins: Bins per axis.
        sigma_bins: Kernel σ in bins.
        lo: [3] lower corner; with ``hi`` None, :func:`shared_bbox` of both sets.
        hi: [3] upper corner.
        quantile: Passed to :func:`shared_bbox`.
        student_weights: [N_s] weights, or None.
        teacher_weights: [N_t] weights, or None.
        impl: "auto", or the implementation to force.

    Returns:
        A 0-d tensor in [0, 1].
    """
    _check_hist_args(bins, sigma_bins)
    student_weights = _check_weights(student_weights, student_means)
    if lo is None or hi is None:
        lo, hi = shared_bbox(teacher_means, student_means, quantile=quantile)
    with torch.no_grad():
        ht = marginal_histograms(teacher_means.detach(), lo, hi, bins, sigma_bins, teacher_weights)
    return _marginal_loss_cached(student_means, student_weights, lo, hi, bins, sigma_bins, ht, impl)


# ----------------------------------------------------------------------------------------------
# joint (3-D occupancy) loss


def occupancy_grid(
    means: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    G: int = 64,
    weights: torch.Tensor | None = None,
    normalize: bool = True,
    impl: Impl = "auto",
) -> torch.Tensor:
    """Soft occupancy: each point splatted into its 8 nearest cell centres, trilinearly.

    Cell (i, j, k) has its centre at lo + (i + ½, j + ½, k + ½)·(hi − lo)/G. Points outside the box
    are clamped onto the outermost cell centres (straight-through gradient; see the module docstring),
    so no mass is lost.

    Args:
        means: [N, 3] positions (differentiable through the trilinear weights).
        lo: [3] lower corner of the box.
        hi: [3] upper corner.
        G: Cells per axis.
        weights: [N] per-point weights (differentiable), or None.
        normalize: Make the grid sum to 1 (the fraction of the total weight in each cell).
        impl: "auto" uses the compiled kernels for CPU tensors, torch ops otherwise.

    Returns:
        [G, G, G] grid.
    """
    _check_grid(G)
    weights = _check_weights(weights, means)
    if _use_numba(impl, means):
        return _GridFn.apply(means, weights, lo, hi, G, normalize)
    grid = _grid_torch(means, lo, hi, G, weights)
    if normalize:
        grid = grid / grid.sum().clamp_min(_EPS)
    return grid.view(G, G, G)


def _check_grid(G: int) -> None:
    if G < 2:
        raise ValueError(f"G must be >= 2, got {G}")


def _grid_torch(means, lo, hi, G, weights) -> torch.Tensor:
    """Unnormalised flat (G³,) occupancy with torch ops (same maths as ``_nb_splat``)."""
    n = means.shape[0]
    u, ok = _cell_coords(means, lo, hi, G)  # (N, 3) in [0, G-1]
    i0 = torch.floor(u.detach()).clamp(0, G - 2)
    f = u - i0  # (N, 3) in [0, 1]
    i0 = i0.long()
    wa = torch.stack([1.0 - f, f], dim=-1)  # (N, 3, 2)
    w = wa[:, 0, :, None, None] * wa[:, 1, None, :, None] * wa[:, 2, None, None, :]  # (N, 2, 2, 2)
    if weights is not None:
        w = w * weights[:, None, None, None]
    if not bool(ok.all()):
        w = w * ok.all(dim=1).to(w.dtype)[:, None, None, None]
    base = (i0[:, 0] * G + i0[:, 1]) * G + i0[:, 2]  # (N,)
    d = torch.arange(2, device=means.device)
    corner = (d.view(2, 1, 1) * (G * G) + d.view(1, 2, 1) * G + d.view(1, 1, 2)).reshape(-1)  # (8,)
    idx = base[:, None] + corner  # (N, 8)
    grid = torch.zeros(G * G * G, device=means.device, dtype=w.dtype)
    return grid.index_add(0, idx.reshape(-1), w.reshape(n * 8))


def grid_sizes(G: int, levels: int) -> list[int]:
    """The resolutions of the joint loss.

    Args:
        G: The finest grid size.
        levels: How many.

    Returns:
        G, G/2, G/4, … (``levels`` of them, none below 2, no repeats).
    """
    _check_grid(G)
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    return list(dict.fromkeys(max(2, G >> i) for i in range(levels)))


# Default number of resolutions of the joint loss (64, 32, 16, 8, 4 at G = 64): the finest grid alone
# gives no gradient to a student whose cells do not overlap the teacher's, every coarser level down to
# five helped and a sixth did not (the experiment is in docs/benchmarks.md, "Measurements behind
# design choices").
DEFAULT_LEVELS = 5


def _joint_loss_cached(student_means, student_weights, lo, hi, sizes, teacher_grids, impl):
    """The joint loss against precomputed flat teacher grids (any positive scale), one per size."""
    if _use_numba(impl, student_means):
        ts = tuple(t.detach().to("cpu", torch.float64).contiguous().view(-1).numpy() for t in teacher_grids)
        return _JointLossFn.apply(student_means, student_weights, lo, hi, tuple(sizes), ts)
    losses = []
    for G, t in zip(sizes, teacher_grids):
        gs = _grid_torch(student_means, lo, hi, G, student_weights)
        losses.append(1.0 - _cosine(gs, t.detach().to(gs.device, gs.dtype).reshape(-1)))
    return torch.stack(losses).mean()


def joint_loss(
    student_means: torch.Tensor,
    teacher_means: torch.Tensor,
    G: int = 64,
    levels: int = DEFAULT_LEVELS,
    lo: torch.Tensor | None = None,
    hi: torch.Tensor | None = None,
    quantile: float | None = None,
    student_weights: torch.Tensor | None = None,
    teacher_weights: torch.Tensor | None = None,
    impl: Impl = "auto",
) -> torch.Tensor:
    """1 − cos between the student's and the teacher's occupancy grids, averaged over resolutions.

    The resolutions are G, G/2, G/4, … (``levels=1``: the G³ grid alone); the teacher is detached.
    Unlike :func:`marginal_loss` this sees the joint 3-D distribution.

    Args:
        student_means: [N_s, 3] student positions (differentiable).
        teacher_means: [N_t, 3] teacher positions.
        G: The finest grid size.
        levels: Number of resolutions.
        lo: [3] lower corner; with ``hi`` None, :func:`shared_bbox` of both sets.
        hi: [3] upper corner.
        quantile: Passed to :func:`shared_bbox`.
        student_weights: [N_s] weights, or None.
        teacher_weights: [N_t] weights, or None.
        impl: "auto", or the implementation to force.

    Returns:
        A 0-d tensor in [0, 1].
    """
    sizes = grid_sizes(G, levels)
    student_weights = _check_weights(student_weights, student_means)
    if lo is None or hi is None:
        lo, hi = shared_bbox(teacher_means, student_means, quantile=quantile)
    with torch.no_grad():
        tm = teacher_means.detach()
        gt = [occupancy_grid(tm, lo, hi, g, teacher_weights, normalize=False) for g in sizes]
    return _joint_loss_cached(student_means, student_weights, lo, hi, sizes, gt, impl)


# ----------------------------------------------------------------------------------------------
# cached loss object


@dataclass
class StructuralLossConfig:
    """Settings of the structural loss.

    Args:
        kind: "joint" (ours, default), "marginal" (the paper's) or "none" (always 0).
        G: Joint-loss grid size.
        levels: Joint-loss number of resolutions.
        bins: Marginal-histogram bins (paper: 256).
        sigma: Marginal-histogram kernel σ in bins (paper: 0.5).
        weight: Multiplies the loss.
        quantile: Box quantile (see :func:`shared_bbox`).
        pad: Box margin (see :func:`shared_bbox`).
    """

    kind: Literal["joint", "marginal", "none"] = "joint"
    G: int = 64
    levels: int = DEFAULT_LEVELS
    bins: int = 256
    sigma: float = 0.5
    weight: float = 1.0
    quantile: float | None = None
    pad: float = 0.01


class StructuralLoss:
    """``loss(student_means) -> weight · structural loss`` against a fixed teacher.

    The box (shared by the teacher and, when given, the student's initial means) and the teacher's
    histograms/grids (float64) are computed once here; later calls only splat the student. The box is
    not updated as the student moves: student points that leave it are clamped to its border (and
    pulled back by the gradient), see the module docstring.

    Args:
        teacher_means: [N_t, 3] teacher positions.
        config: The settings; defaults when None.
        student_means: [N_s, 3] initial student positions, to include in the box, or None.
        teacher_weights: [N_t] teacher weights, or None.
        impl: "auto", or the implementation to force.
    """

    def __init__(
        self,
        teacher_means: torch.Tensor,
        config: StructuralLossConfig | None = None,
        student_means: torch.Tensor | None = None,
        teacher_weights: torch.Tensor | None = None,
        impl: Impl = "auto",
    ):
        self.config = cfg = config or StructuralLossConfig()
        if cfg.kind not in ("joint", "marginal", "none"):
            raise ValueError(f"unknown structural loss kind '{cfg.kind}' (choose joint, marginal or none)")
        self.impl = impl
        self.lo = self.hi = None
        self.sizes: list[int] = []
        self._teacher: list[torch.Tensor] = []
        if cfg.kind == "none":
            return
        tm = teacher_means.detach().double()
        tw = None if teacher_weights is None else teacher_weights.detach().double()
        self.lo, self.hi = shared_bbox(tm, student_means, quantile=cfg.quantile, pad=cfg.pad)
        with torch.no_grad():
            if cfg.kind == "joint":
                self.sizes = grid_sizes(cfg.G, cfg.levels)
                self._teacher = [occupancy_grid(tm, self.lo, self.hi, g, tw) for g in self.sizes]
            else:
                _check_hist_args(cfg.bins, cfg.sigma)
                self._teacher = [marginal_histograms(tm, self.lo, self.hi, cfg.bins, cfg.sigma, tw)]

    def _teacher_on(self, device: torch.device) -> list[torch.Tensor]:
        if self._teacher and self._teacher[0].device != device:
            self._teacher = [t.to(device) for t in self._teacher]
        return self._teacher

    def __call__(self, student_means: torch.Tensor, student_weights: torch.Tensor | None = None) -> torch.Tensor:
        """The weighted structural loss of the student.

        Args:
            student_means: [N_s, 3] student positions (differentiable).
            student_weights: [N_s] weights, or None.

        Returns:
            A 0-d tensor (0 for kind "none" or weight 0).
        """
        cfg = self.config
        if cfg.kind == "none" or cfg.weight == 0:
            return torch.zeros((), device=student_means.device, dtype=student_means.dtype)
        student_weights = _check_weights(student_weights, student_means)
        teacher = self._teacher_on(student_means.device)
        if cfg.kind == "joint":
            loss = _joint_loss_cached(student_means, student_weights, self.lo, self.hi, self.sizes, teacher, self.impl)
        else:
            loss = _marginal_loss_cached(
                student_means, student_weights, self.lo, self.hi, cfg.bins, cfg.sigma, teacher[0], self.impl
            )
        return loss * cfg.weight if cfg.weight != 1 else loss
