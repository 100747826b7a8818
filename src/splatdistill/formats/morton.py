"""Morton (Z-order) ordering of 3-D points.

Sorting Gaussians along a space-filling curve puts spatially close Gaussians next to each other
in the file, so their (similar) attributes sit close together and an entropy coder / LZ matcher
finds more redundancy. Compact-3DGS (Lee et al., CVPR 2024) uses Morton order in its
post-processing for exactly this reason (METHODS.md §4).

The Morton code of a point interleaves the bits of its integer coordinates: bit ``b`` of x goes
to bit ``3b``, of y to ``3b+1``, of z to ``3b+2``. With 21 bits per axis the code fits a uint64
(63 bits). Bits are spread with the classic "magic number" shifts-and-masks, vectorised in numpy
(no Python loop over points), so the sort dominates (see docs/benchmarks.md, "Measurements behind
design choices").
"""

from __future__ import annotations

import numpy as np

MAX_BITS = 21  # 3 x 21 = 63 bits: the code fits a uint64

# (shift, mask) pairs that spread the low 21 bits of a uint64 so that two zero bits separate
# consecutive bits ("Part1By2" for 64-bit codes).
_SPREAD_STEPS = (
    (32, 0x001F00000000FFFF),
    (16, 0x001F0000FF0000FF),
    (8, 0x100F00F00F00F00F),
    (4, 0x10C30C30C30C30C3),
    (2, 0x1249249249249249),
)


def spread_bits(v: np.ndarray) -> np.ndarray:
    """Insert two zero bits between the low 21 bits of each uint64 in ``v`` (one axis of a Morton code).

    Args:
        v: [...] uint64 values; bits above the 21st are ignored.

    Returns:
        [...] uint64, bit ``i`` of ``v`` moved to bit ``3 * i``.
    """
    v = v & np.uint64(0x1FFFFF)
    for shift, mask in _SPREAD_STEPS:
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


# the inverse steps: gather every third bit back into the low 21 bits ("Compact1By2")
_COMPACT_STEPS = (
    (2, 0x10C30C30C30C30C3),
    (4, 0x100F00F00F00F00F),
    (8, 0x001F0000FF0000FF),
    (16, 0x001F00000000FFFF),
    (32, 0x00000000001FFFFF),
)


def compact_bits(v: np.ndarray) -> np.ndarray:
    """The inverse of ``spread_bits``: bit ``3 * i`` of each uint64 in ``v`` moved to bit ``i``.

    Args:
        v: [...] uint64 values (one axis of a Morton code in bits 0, 3, 6, ...; other bits ignored).

    Returns:
        [...] uint64 values below 2**21.
    """
    v = np.asarray(v, np.uint64) & np.uint64(0x1249249249249249)
    for shift, mask in _COMPACT_STEPS:
        v = (v | (v >> np.uint64(shift))) & np.uint64(mask)
    return v


def interleave(codes: np.ndarray) -> np.ndarray:
    """Morton codes of integer coordinates: bit ``b`` of x to bit ``3b``, of y to ``3b+1``, of z to ``3b+2``.

    Args:
        codes: [N, 3] non-negative integer coordinates below 2**21.

    Returns:
        [N] uint64 codes; ``deinterleave`` inverts them.
    """
    c = np.asarray(codes).astype(np.uint64)
    return spread_bits(c[:, 0]) | (spread_bits(c[:, 1]) << np.uint64(1)) | (spread_bits(c[:, 2]) << np.uint64(2))


def deinterleave(keys: np.ndarray) -> np.ndarray:
    """The integer coordinates of Morton codes (the inverse of ``interleave``).

    Args:
        keys: [N] uint64 Morton codes.

    Returns:
        [N, 3] uint64 coordinates.
    """
    k = np.asarray(keys, np.uint64)
    return np.stack([compact_bits(k >> np.uint64(a)) for a in range(3)], axis=1)


def morton_codes(means: np.ndarray, bits: int = MAX_BITS) -> np.ndarray:
    """Morton codes of points quantised to ``bits`` bits per axis.

    Each axis is mapped linearly from the bounding box of the finite points onto
    ``0 .. 2**bits - 1`` (a flat axis maps to 0). Points with a non-finite coordinate get the
    largest code, so they sort last.

    Args:
        means: [N, 3] positions.
        bits: Bits per axis, at most ``MAX_BITS`` (21).

    Returns:
        [N] uint64 codes.
    """
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in 1..{MAX_BITS}, got {bits}")
    m = np.asarray(means, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != 3:
        raise ValueError(f"means must have shape (N, 3), got {m.shape}")
    n = m.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    finite = np.isfinite(m).all(axis=1)
    all_finite = bool(finite.all())
    if not all_finite:
        if not finite.any():
            return np.full(n, np.iinfo(np.uint64).max, dtype=np.uint64)
        m = np.where(finite[:, None], m, 0.0)
        lo = m[finite].min(axis=0)
        hi = m[finite].max(axis=0)
    else:
        lo = m.min(axis=0)
        hi = m.max(axis=0)
    top = float((1 << bits) - 1)
    span = hi - lo
    scale = np.divide(top, span, out=np.zeros(3), where=span > 0)
    q = np.clip((m - lo) * scale, 0.0, top).astype(np.uint64)  # truncation = floor (values >= 0)
    code = interleave(q)
    if not all_finite:
        code[~finite] = np.iinfo(np.uint64).max
    return code


def morton_order(means: np.ndarray, bits: int = MAX_BITS) -> np.ndarray:
    """The permutation that sorts points along a 3-D Morton curve.

    ``means[morton_order(means)]`` are the points in Z-order of their ``bits``-bit quantised
    positions within their bounding box. The sort is stable, so the result is deterministic
    (ties keep their input order).

    Args:
        means: [N, 3] positions.
        bits: Bits per axis, at most ``MAX_BITS`` (21).

    Returns:
        [N] int64 permutation.
    """
    return np.argsort(morton_codes(means, bits), kind="stable").astype(np.int64, copy=False)
