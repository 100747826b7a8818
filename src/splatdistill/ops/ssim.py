"""SSIM and PSNR in torch, differentiable, for images in [0, 1].

SSIM follows Wang et al., "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 13(4), 2004: an 11x11 Gaussian window with
sigma = 1.5, K1 = 0.01, K2 = 0.03, dynamic range L = 1, so C1 = (K1 L)^2 = 0.01^2
and C2 = (K2 L)^2 = 0.03^2, computed per colour channel.

Border convention: the one of the 3D Gaussian Splatting paper (Kerbl et al.
2023, Inria ``utils/loss_utils.py::ssim``, used both for its training loss and
its reported SSIM, and by much of the follow-up work): ``F.conv2d(img, window,
padding=window_size // 2, groups=channels)``, i.e. a *same-size* map with
**zero padding** outside the image, averaged over channels and all H x W
pixels (border pixels included). Wang et al.'s MATLAB code and scikit-image
instead use the "valid" map (the 5-pixel border is cropped); the two differ
by an amount that depends on how much of the image the border is (an example
in docs/benchmarks.md, "Measurements behind design choices").

The 2-D Gaussian window is separable (outer product of a normalised 1-D
Gaussian with itself), so it is applied as a 1x11 then an 11x1 depthwise
convolution; with zero padding this is exactly the 11x11 convolution and
several times faster on CPU (see docs/benchmarks.md, "Measurements behind
design choices"). The five local statistics (mu_x, mu_y, E[x^2], E[y^2], E[xy])
are filtered in one batched convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ssim", "psnr", "gaussian_window_1d", "to_nchw"]

# Wang et al. 2004, Sec. III-C: K1 = 0.01, K2 = 0.03, L = 1 for images in [0, 1].
C1 = 0.01**2
C2 = 0.03**2


def to_nchw(img: torch.Tensor) -> torch.Tensor:
    """View an image as NCHW: 4-D input is taken as NCHW, 3-D as HWC (channel last).

    Args:
        img: [N, C, H, W] or [H, W, C] tensor.

    Returns:
        [N, C, H, W] (N = 1 for 3-D input).
    """
    if img.dim() == 4:
        return img
    if img.dim() == 3:
        return img.permute(2, 0, 1).unsqueeze(0)
    raise ValueError(f"expected an image of shape (N, C, H, W) or (H, W, C), got {tuple(img.shape)}")


def gaussian_window_1d(
    size: int = 11, sigma: float = 1.5, *, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """Normalised 1-D Gaussian, centred on the middle tap (as Inria ``gaussian()``).

    Args:
        size: Taps.
        sigma: Standard deviation in taps.
        dtype: Output dtype.
        device: Output device.

    Returns:
        [size] tensor summing to 1.
    """
    x = torch.arange(size, dtype=torch.float64, device=device) - (size // 2)
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype)


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Depthwise separable blur of (N, C, H, W) with the 1-D kernel ``g`` (odd length), zero padding."""
    c, k = x.shape[1], g.numel()
    pad = k // 2
    x = F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), padding=(0, pad), groups=c)
    return F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), padding=(pad, 0), groups=c)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not (torch.is_floating_point(a) and torch.is_floating_point(b)):
        raise TypeError("images must be floating-point tensors with values in [0, 1]")
    a4, b4 = to_nchw(a), to_nchw(b)
    if a4.shape != b4.shape:
        raise ValueError(f"image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a4.dtype != b4.dtype:
        dt = torch.promote_types(a4.dtype, b4.dtype)
        a4, b4 = a4.to(dt), b4.to(dt)
    return a4, b4


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    raise ValueError(f"reduction must be 'mean' or 'none', not {reduction!r}")


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    window_size: int = 11,
    sigma: float = 1.5,
    reduction: str = "mean",
) -> torch.Tensor:
    """Structural similarity of two images in [0, 1] (differentiable).

    Each image's value is the SSIM map averaged over channels and all pixels, zero padding at the
    borders (the Inria 3DGS convention, see the module docstring). Identical images give exactly 1.
    Use as a loss as ``1 - ssim(pred, gt)``.

    Args:
        a: [N, C, H, W] or [H, W, C] float tensor.
        b: The same shape as ``a``.
        window_size: Taps of the Gaussian window.
        sigma: Its standard deviation.
        reduction: ``"mean"`` (mean over the batch) or ``"none"`` (one value per image).

    Returns:
        A 0-d tensor (``"mean"``) or an [N] tensor (``"none"``).
    """
    x, y = _check_pair(a, b)
    n, c, h, w = x.shape
    if window_size % 2 != 1 or window_size < 1:
        raise ValueError(f"window_size must be odd, got {window_size}")
    g = gaussian_window_1d(window_size, sigma, dtype=x.dtype, device=x.device)
    # Filter all five moment images at once: channels [x | y | x^2 | y^2 | xy].
    stack = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), g)
    mu_x, mu_y, e_xx, e_yy, e_xy = stack.split(c, dim=1)

    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = e_xx - mu_xx
    var_y = e_yy - mu_yy
    cov_xy = e_xy - mu_xy
    # Wang et al. 2004, eq. (13).
    ssim_map = ((2.0 * mu_xy + C1) * (2.0 * cov_xy + C2)) / ((mu_xx + mu_yy + C1) * (var_x + var_y + C2))
    return _reduce(ssim_map.reshape(n, -1).mean(dim=1), reduction)


def psnr(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """Peak signal-to-noise ratio in dB: 10 log10(data_range^2 / MSE).

    The MSE is taken per image over all channels and pixels; ``reduction="mean"`` averages the
    per-image PSNRs (how 3DGS papers report a test set). Identical images give ``inf``.

    Args:
        a: [N, C, H, W] or [H, W, C] float tensor.
        b: The same shape as ``a``.
        data_range: The images' value range.
        reduction: ``"mean"`` or ``"none"``.

    Returns:
        A 0-d tensor (``"mean"``) or an [N] tensor (``"none"``).
    """
    x, y = _check_pair(a, b)
    mse = (x - y).pow(2).reshape(x.shape[0], -1).mean(dim=1)
    # 10 log10(R^2 / mse); division by zero -> +inf, which is the intended value.
    val = 10.0 * torch.log10(data_range**2 / mse)
    return _reduce(val, reduction)
