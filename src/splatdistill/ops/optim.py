"""Optimisation: the Adam factory shared by every job."""

from __future__ import annotations

import functools

import torch


@functools.cache
def fused_adam_ok() -> bool:
    """torch >= 2.4 has a fused Adam on CPU too (one kernel instead of a dozen ops per tensor)."""
    try:
        p = torch.nn.Parameter(torch.zeros(1))
        torch.optim.Adam([p], fused=True)
        return True
    except (RuntimeError, TypeError, ValueError):
        return False
