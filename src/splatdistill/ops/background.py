"""The training background: which colour the renders and the ground truth are composited on.

Choices (``--background``):

* ``auto`` (the default): ``random`` when the dataset's images have an alpha channel (NeRF-synthetic,
  the built-in scene), ``dataset`` otherwise (photos: there is nothing to recomposite);
* ``random``: a new uniform random colour every iteration; the RGBA ground truth is composited on it
  (from its black and white composites: ``img_bg = img_black + (img_white - img_black) * bg``, since
  ``img_white - img_black = 1 - alpha``). A constant background lets Gaussians of the background's
  colour float in empty space at no cost; a random one penalises them (docs/benchmarks.md);
* ``dataset``: the dataset's background (white for NeRF-synthetic, the benchmark convention);
* ``white`` / ``black``.

Evaluation always uses the dataset's background, whatever the training background was.
"""

from __future__ import annotations

from typing import Literal

from PIL import Image, UnidentifiedImageError

BackgroundChoice = Literal["auto", "dataset", "random", "black", "white"]
CHOICES = ("auto", "dataset", "random", "black", "white")


def image_has_alpha(path) -> bool:
    """Whether an image file has transparency (read from its header only).

    Args:
        path: The image file.

    Returns:
        True for RGBA / LA / PA modes and palettes with transparency; False also for a missing or
        unreadable file (the loader reports those, with the path).
    """
    try:
        with Image.open(path) as im:
            return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)
    except (OSError, UnidentifiedImageError):
        return False  # a missing or unreadable image is reported by the loader, with its path


def dataset_has_alpha(dataset) -> bool:
    """Whether the dataset's training images carry alpha.

    The first training image decides (a dataset mixes formats rarely, and the loader composites every
    RGBA image the same way); the answer is memoised on the dataset.

    Args:
        dataset: A ``Dataset``.

    Returns:
        True when its first training image has transparency.
    """
    memo = dataset._memo
    if "has_alpha" not in memo:
        views = dataset.splits.get("train") or []
        memo["has_alpha"] = bool(views) and image_has_alpha(views[0].image_path)
    return bool(memo["has_alpha"])


def resolve_background(choice: str, dataset) -> str:
    """The background mode a ``--background`` choice means for a dataset.

    Args:
        choice: One of ``CHOICES``.
        dataset: A ``Dataset``.

    Returns:
        ``auto`` -> ``random`` for RGBA data, ``dataset`` otherwise; other choices as they are. An
        unknown choice raises ``UserError``.
    """
    if choice not in CHOICES:
        from splatdistill.errors import UserError

        raise UserError(f"unknown background '{choice}' (choose {', '.join(CHOICES)})")
    if choice == "auto":
        return "random" if dataset_has_alpha(dataset) else "dataset"
    return choice


def fixed_background(mode: str, dataset) -> tuple[float, float, float]:
    """The constant colour of a resolved mode, for rendering outside training.

    Args:
        mode: A resolved mode (``dataset``, ``random``, ``white`` or ``black``).
        dataset: A ``Dataset``.

    Returns:
        RGB in [0, 1]; ``random`` and ``dataset`` give the dataset's background.
    """
    if mode == "black":
        return (0.0, 0.0, 0.0)
    if mode == "white":
        return (1.0, 1.0, 1.0)
    return tuple(float(b) for b in dataset.background)
