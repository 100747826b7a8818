"""Uniform scalar quantisation with per-channel ranges, and float16 helpers.

``quantize(x, bits)`` maps each channel of ``x`` (every index of the trailing dimensions; axis 0
runs over the items, e.g. Gaussians) linearly from its range ``[lo, hi]`` onto the integers
``0 .. 2**bits - 1`` and rounds to nearest::

    step = (hi - lo) / (2**bits - 1)
    code = round((x - lo) / step)          dequantised value = lo + code * step

Maximum error: ``|x - dequantize(quantize(x))| <= step / 2`` per channel (half a step), plus
the rounding of the float32 result (half a float32 ulp of the value). ``quantization_error_bound``
returns that bound. Values outside an explicitly given ``[lo, hi]`` are clipped to it first (their
error is then the clipping distance plus half a step).

A constant channel (``lo == hi``) has ``step = 0``: every code is 0 and decodes to ``lo`` exactly.
An empty array (zero items) gives ``lo = hi = 0`` for every channel.

``lo`` and ``hi`` are returned as float64 arrays of the channel shape; they are the exact min / max
of the channel (float32 data is exactly representable), which JSON stores exactly as well.
"""

from __future__ import annotations

import numpy as np

MAX_BITS = 16
FP16_MAX = 65504.0  # largest finite IEEE half
_FP16_MIN_NORMAL_EXP = -14  # 2**-14 is the smallest normal half
_FP16_MANTISSA_BITS = 10


def code_dtype(bits: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds ``bits``-bit codes.

    Args:
        bits: Bits per code, 1-16.

    Returns:
        uint8 for bits <= 8, else uint16.
    """
    _check_bits(bits)
    return np.dtype(np.uint8) if bits <= 8 else np.dtype(np.uint16)


def _check_bits(bits) -> None:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer in 1..{MAX_BITS}, got {bits!r}")


def quantize(
    x: np.ndarray, bits: int, lo: np.ndarray | float | None = None, hi: np.ndarray | float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantise ``x`` to ``bits``-bit codes with one range per channel.

    Args:
        x: [N, ...] finite values.
        bits: Bits per code, 1-16.
        lo: Lower end of the range, broadcast to ``x.shape[1:]``; the per-channel min when None.
        hi: Upper end of the range, broadcast to ``x.shape[1:]``; the per-channel max when None.
            Values are clipped into a given range.

    Returns:
        ``(codes, lo, hi)``: codes of the shape of ``x``, uint8 (bits <= 8) or uint16; ``lo`` and
        ``hi`` float64 of shape ``x.shape[1:]``. Raises ``ValueError`` for non-finite values, bits
        outside 1..16 or ``lo > hi``.
    """
    _check_bits(bits)
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("quantize needs an array with an item axis (ndim >= 1)")
    xf = x.astype(np.float64, copy=False)
    if xf.size and not np.isfinite(xf).all():
        raise ValueError("cannot quantise non-finite values (NaN or Inf)")
    chan = x.shape[1:]
    empty = x.shape[0] == 0
    if lo is None:
        lo = np.zeros(chan) if empty else xf.min(axis=0)
    if hi is None:
        hi = np.zeros(chan) if empty else xf.max(axis=0)
    lo = np.array(np.broadcast_to(np.asarray(lo, dtype=np.float64), chan))
    hi = np.array(np.broadcast_to(np.asarray(hi, dtype=np.float64), chan))
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError("quantisation range must be finite")
    if (lo > hi).any():
        raise ValueError("quantisation range has lo > hi")
    levels = (1 << bits) - 1
    span = hi - lo
    scale = np.divide(levels, span, out=np.zeros_like(span), where=span > 0)
    t = (np.clip(xf, lo, hi) - lo) * scale
    codes = np.clip(np.rint(t), 0, levels).astype(code_dtype(bits))
    return codes, lo, hi


def dequantize(codes: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int, dtype=np.float32) -> np.ndarray:
    """Inverse of ``quantize``: ``lo + codes * (hi - lo) / (2**bits - 1)`` per channel.

    Args:
        codes: [N, ...] codes.
        lo: Lower ends, shape ``codes.shape[1:]``.
        hi: Upper ends, shape ``codes.shape[1:]``.
        bits: Bits per code.
        dtype: Output dtype.

    Returns:
        Values of the shape of ``codes``, as ``dtype``.
    """
    _check_bits(bits)
    codes = np.asarray(codes)
    chan = codes.shape[1:] if codes.ndim else ()
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), chan)
    hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), chan)
    step = (hi - lo) / float((1 << bits) - 1)
    return (lo + codes.astype(np.float64) * step).astype(dtype)


def quantization_step(lo, hi, bits: int) -> np.ndarray:
    """Per-channel step ``(hi - lo) / (2**bits - 1)``.

    Args:
        lo: Lower ends of the ranges.
        hi: Upper ends of the ranges.
        bits: Bits per code.

    Returns:
        float64 steps, the broadcast shape of ``lo`` and ``hi``.
    """
    _check_bits(bits)
    return (np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)) / float((1 << bits) - 1)


def quantization_error_bound(lo, hi, bits: int) -> np.ndarray:
    """Per-channel maximum absolute error of a round trip: half a step (excluding float32 rounding).

    Args:
        lo: Lower ends of the ranges.
        hi: Upper ends of the ranges.
        bits: Bits per code.

    Returns:
        float64 bounds, the broadcast shape of ``lo`` and ``hi``.
    """
    return 0.5 * quantization_step(lo, hi, bits)


# ---- float16 ------------------------------------------------------------------------------------------
def to_fp16(x: np.ndarray) -> np.ndarray:
    """``x`` as IEEE float16 (round to nearest even).

    Args:
        x: Values of any shape.

    Returns:
        float16 array of the same shape. Raises ``ValueError`` if a finite value overflows the half
        range (|x| >= 65520 rounds to Inf).
    """
    x = np.asarray(x)
    with np.errstate(over="ignore"):
        h = x.astype(np.float16)
    if h.size:
        bad = ~np.isfinite(h) & np.isfinite(x)
        if bad.any():
            raise ValueError(
                f"{int(bad.sum())} value(s) exceed the float16 range (max |x| = {FP16_MAX:g}; "
                f"largest here {float(np.abs(x[bad]).max()):g})"
            )
    return h


def from_fp16(h: np.ndarray, dtype=np.float32) -> np.ndarray:
    """float16 codes back to ``dtype`` (exact: every half is representable in float32).

    Args:
        h: float16 values (or their bit patterns as a float16-viewable array).
        dtype: Output dtype.

    Returns:
        Values of the same shape, as ``dtype``.
    """
    return np.asarray(h, dtype=np.float16).astype(dtype)


def fp16_error_bound(x: np.ndarray) -> np.ndarray:
    """Elementwise bound on ``|x - float(float16(x))|``: half a float16 ulp of ``x``'s binade.

    That is ``2**(floor(log2|x|) - 11)`` for normal halves and ``2**-25`` in the subnormal range.

    Args:
        x: Values of any shape.

    Returns:
        float64 bounds of the same shape.
    """
    a = np.abs(np.asarray(x, dtype=np.float64))
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    e = np.maximum(e, _FP16_MIN_NORMAL_EXP)
    return np.ldexp(1.0, (e - _FP16_MANTISSA_BITS - 1).astype(np.int64))
