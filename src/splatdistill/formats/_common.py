"""Small helpers shared by the format modules."""

from __future__ import annotations

import numpy as np
import torch

from splatdistill.scene.gaussians import GaussianScene

SH_C0 = 0.28209479177387814  # the degree-0 real SH basis constant, 1 / (2 sqrt(pi))


def scene_arrays(scene: GaussianScene) -> dict[str, np.ndarray]:
    """float64 numpy copies of the scene's tensors, keyed by parameter name.

    Args:
        scene: The scene.

    Returns:
        ``means`` [N, 3], ``quats`` [N, 4], ``scales`` [N, 3], ``opacities`` [N], ``sh0`` [N, 3] (the
        coefficient axis dropped) and ``shN`` [N, K-1, 3], all float64.
    """
    p = {k: np.array(v.detach().cpu().numpy(), dtype=np.float64) for k, v in scene.items()}
    p["sh0"] = p["sh0"].reshape(-1, 3)
    return p


def build_scene(means, quats, scales, opacities, sh0, shN, antialiased=False) -> GaussianScene:
    """A float32 CPU scene from numpy arrays, as the format readers decode them.

    Args:
        means: [N, 3] positions.
        quats: [N, 4] quaternions (w, x, y, z).
        scales: [N, 3] log-scales.
        opacities: [N] opacity logits.
        sh0: [N, 3] SH DC coefficients.
        shN: [N, K-1, 3] higher SH coefficients.
        antialiased: The scene's anti-aliasing flag.

    Returns:
        A ``GaussianScene`` of float32 CPU tensors.
    """
    n = means.shape[0]

    def t(x, shape=None):
        a = np.ascontiguousarray(x, dtype=np.float32)
        return torch.from_numpy(a.reshape(shape) if shape is not None else a)

    return GaussianScene(
        t(means, (n, 3)),
        t(quats, (n, 4)),
        t(scales, (n, 3)),
        t(opacities, (n,)),
        t(sh0, (n, 1, 3)),
        t(shN, (n, -1, 3) if n else (0, shN.shape[1], 3)),
        antialiased=antialiased,
    )


def alpha_to_logit(alpha: np.ndarray, levels: int = 255) -> np.ndarray:
    """Opacity logits of quantised alphas, kept finite at 0 and 1.

    Alphas of exactly 0 or 1 move a quarter step inwards, so re-quantising gives the same value back.

    Args:
        alpha: [...] alphas in [0, 1].
        levels: Number of quantisation steps of the format (255 for 8-bit codes).

    Returns:
        [...] float64 logits.
    """
    a = np.clip(alpha, 0.25 / levels, 1.0 - 0.25 / levels)
    return np.log(a / (1.0 - a))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, without overflow warnings for large ``|x|``.

    Args:
        x: [...] logits.

    Returns:
        [...] values in [0, 1], dtype of ``x``.
    """
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warnings for large |x|


def unit_quats(q: np.ndarray) -> np.ndarray:
    """Unit quaternions (w, x, y, z); a zero quaternion becomes the identity.

    Args:
        q: [N, 4] quaternions.

    Returns:
        [N, 4] unit quaternions, float dtype of ``q``.
    """
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    out = q / np.where(norm == 0, 1.0, norm)
    out[norm[:, 0] == 0] = (1.0, 0.0, 0.0, 0.0)
    return out
