"""Choosing the torch device a job runs on."""

from __future__ import annotations

import torch

from splatdistill.errors import UserError


def pick_device(name: str) -> torch.device:
    """The torch device for ``--device NAME``.

    Args:
        name: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or any torch device
            string such as ``cuda:1``.

    Returns:
        The ``torch.device``. ``cuda`` without a GPU raises ``UserError``.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA GPU is available")
    return torch.device(name)
