"""Image-quality metrics for rendered views: PSNR, SSIM, LPIPS (VGG and AlexNet).

Conventions (those of the 3D Gaussian Splatting evaluation, Kerbl et al. 2023):

* images are float RGB in [0, 1];
* PSNR: 10 log10(1 / MSE) over all pixels and channels of one image; ``inf``
  for identical images;
* SSIM: 11x11 Gaussian (sigma 1.5), zero-padded same-size map averaged over
  the image (see :mod:`.ssim`);
* LPIPS v0.1 on inputs rescaled to [-1, 1] (see :mod:`.lpips`);
* a folder's score is the mean over its images of the per-image scores.

When LPIPS cannot be computed (weights absent or unreadable, image too small),
``lpips_vgg`` / ``lpips_alex`` are ``None`` and ``lpips_error`` gives the reason;
PSNR and SSIM are still reported.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from splatdistill.errors import UserError
from splatdistill.ops.lpips import LPIPSBank, LPIPSUnavailable, canonical_net
from splatdistill.ops.ssim import psnr, ssim, to_nchw

__all__ = ["IMAGE_SUFFIXES", "compare_paths", "image_metrics", "load_image"]

# File suffixes treated as images when comparing two folders.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

_METRIC_KEYS = ("psnr", "ssim", "lpips_vgg", "lpips_alex")


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as an [H, W, 3] float32 tensor in [0, 1].

    * RGBA / LA / palette images with transparency are **composited on a white
      background** (``rgb * a + (1 - a)``), the NeRF-synthetic convention
      (Mildenhall et al. 2020 evaluate Blender scenes on white; 3DGS does the
      same with ``--white_background``). Note that the Inria 3DGS ``metrics.py``
      instead drops alpha; for fully opaque images the two agree.
    * Grey images are replicated to three channels; 16-bit images are scaled by
      1/65535.

    Args:
        path: The image file.

    Returns:
        [H, W, 3] float32 tensor. Raises :class:`UserError` naming the file if it is missing, a
        folder, or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise UserError("image file not found", p)
    if p.is_dir():
        raise UserError("is a folder, expected an image file", p)
    try:
        with Image.open(p) as im:
            im.load()
            arr = _pil_to_float_rgb(im)
    except UnidentifiedImageError:
        raise UserError("not an image (unrecognised format)", p) from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated / corrupt files
        raise UserError(f"not a readable image: {e}", p) from None
    return torch.from_numpy(arr)


def _pil_to_float_rgb(im) -> np.ndarray:
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit (or 32-bit int / float) greyscale.
        a = np.asarray(im, dtype=np.float64)
        a = a / 65535.0 if mode != "F" else a
        a = np.clip(a, 0.0, 1.0).astype(np.float32)
        return np.repeat(a[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        a = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        rgb, alpha = a[:, :, :3], a[:, :, 3:4]
        return np.ascontiguousarray(rgb * alpha + (1.0 - alpha))  # composite on white
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def _as_batch(img: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(img, torch.Tensor):
        img = torch.as_tensor(np.asarray(img))
    if not torch.is_floating_point(img):
        raise TypeError(f"{name} must be a float image in [0, 1], got dtype {img.dtype}")
    x = to_nchw(img)
    if x.shape[1] != 3:
        raise ValueError(f"{name} must have 3 channels, got shape {tuple(img.shape)}")
    return x.float()


def image_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    lpips_nets: Sequence[str] = ("vgg", "alex"),
    *,
    lpips_bank: LPIPSBank | None = None,
) -> dict:
    """PSNR, SSIM and LPIPS of ``pred`` against ``target``, without gradients.

    For a batch the values are means over its images.

    Args:
        pred: [H, W, 3] or [N, 3, H, W] float tensor in [0, 1].
        target: The same shape as ``pred``.
        lpips_nets: LPIPS networks to compute (``vgg``, ``alex``); the others give ``None``.
        lpips_bank: An :class:`LPIPSBank` to reuse loaded networks across calls (otherwise the
            weights are read from disk on every call).

    Returns:
        A dict with float (or ``None``) values under ``psnr``, ``ssim``, ``lpips_vgg``,
        ``lpips_alex``; an LPIPS network that could not be computed gives ``None`` plus
        ``lpips_error`` (one line).
    """
    x, y = _as_batch(pred, "pred"), _as_batch(target, "target")
    if x.shape != y.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    y = y.to(x.device)
    bank = lpips_bank if lpips_bank is not None else LPIPSBank()
    out: dict = {}
    errors: list[str] = []
    with torch.no_grad():
        out["psnr"] = float(psnr(x, y))
        out["ssim"] = float(ssim(x, y))
        wanted = {canonical_net(n) for n in lpips_nets}
        for net in ("vgg", "alex"):
            out[f"lpips_{net}"] = None
            if net not in wanted:
                continue
            try:
                out[f"lpips_{net}"] = float(bank.distance(x, y, net, normalize=True).mean())
            except LPIPSUnavailable as e:
                errors.append(f"lpips_{net}: {e}")
    if errors:
        out["lpips_error"] = "; ".join(errors)
    return out


def _image_names(folder: Path) -> set[str]:
    try:
        return {p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
    except OSError as e:
        raise UserError(f"cannot list folder: {e.strerror or e}", folder) from None


def _mean(values: Iterable[float | None]) -> float | None:
    vals = list(values)
    if not vals or any(v is None for v in vals):
        return None
    return math.fsum(vals) / len(vals)


def compare_paths(
    a: str | os.PathLike,
    b: str | os.PathLike,
    *,
    lpips_nets: Sequence[str] = ("vgg", "alex"),
    device: str | torch.device = "cpu",
    lpips_bank: LPIPSBank | None = None,
) -> dict:
    """Compare two images, or two folders image by image (files with the same name).

    All metrics are symmetric, so the order of ``a`` and ``b`` only affects naming.

    Args:
        a: An image file or a folder of images.
        b: The same kind as ``a``.
        lpips_nets: LPIPS networks to compute (``vgg``, ``alex``).
        device: Where the metrics are computed.
        lpips_bank: An :class:`LPIPSBank` to reuse loaded networks.

    Returns:
        ``{"count", "psnr", "ssim", "lpips_vgg", "lpips_alex", ["lpips_error"],
        "per_image": [{"name", "psnr", "ssim", "lpips_vgg", "lpips_alex"}, ...],
        "only_in_a": [...], "only_in_b": [...]}``; the top-level metric values are means over the
        images (an LPIPS mean is ``None`` unless every image has a value; a PSNR mean is ``inf`` if
        any pair is identical). :class:`UserError` when a path is missing, one path is a file and the
        other a folder, an image is unreadable, two images differ in size (naming both), or two
        folders share no image names.
    """
    pa, pb = Path(a), Path(b)
    for p in (pa, pb):
        if not p.exists():
            raise UserError("no such file or folder", p)
    if pa.is_dir() != pb.is_dir():
        folder, file = (pa, pb) if pa.is_dir() else (pb, pa)
        raise UserError(f"cannot compare folder {folder} with a single image file", file)

    if pa.is_dir():
        names_a, names_b = _image_names(pa), _image_names(pb)
        common = sorted(names_a & names_b)
        if not common:
            raise UserError(
                f"no images with the same file name in {pa} ({len(names_a)} images) and {pb} ({len(names_b)} images)",
                pb,
            )
        pairs = [(n, pa / n, pb / n) for n in common]
        only_a, only_b = sorted(names_a - names_b), sorted(names_b - names_a)
    else:
        pairs = [(pa.name if pa.name == pb.name else f"{pa.name} vs {pb.name}", pa, pb)]
        only_a, only_b = [], []

    bank = lpips_bank if lpips_bank is not None else LPIPSBank()
    per_image = []
    errors: list[str] = []
    for name, fa, fb in pairs:
        ia, ib = load_image(fa), load_image(fb)
        if ia.shape != ib.shape:
            raise UserError(
                f"image size {ib.shape[1]}x{ib.shape[0]} differs from {fa} ({ia.shape[1]}x{ia.shape[0]})", fb
            )
        m = image_metrics(ia.to(device), ib.to(device), lpips_nets, lpips_bank=bank)
        err = m.pop("lpips_error", None)
        if err and err not in errors:
            errors.append(err)
        per_image.append({"name": name, **m})

    result: dict = {"count": len(per_image)}
    for k in _METRIC_KEYS:
        result[k] = _mean(r[k] for r in per_image)
    if errors:
        result["lpips_error"] = "; ".join(errors)
    result["per_image"] = per_image
    result["only_in_a"] = only_a
    result["only_in_b"] = only_b
    return result
