"""Small helpers shared by the format modules."""

from __future__ import annotations

import numpy as np
import torch

from ..scene.gaussians import GaussianScene

SH_C0 = 0.28209479177387814  # the degree-0 real SH basis constant, 1 / (2 sqrt(pi))


def scene_arrays(scene: GaussianScene) -> dict[str, np.ndarray]:
    """float64 numpy copies of the scene's tensors (sh0 as (N, 3))."""
    p = {k: np.array(v.detach().cpu().numpy(), dtype=np.float64) for k, v in scene.items()}
    p["sh0"] = p["sh0"].reshape(-1, 3)
    return p


def build_scene(means, quats, scales, opacities, sh0, shN, antialiased=False) -> GaussianScene:
    """A float32 CPU scene from numpy arrays (sh0 as (N, 3), shN as (N, K-1, 3))."""
    n = means.shape[0]

    def t(x, shape=None):
        a = np.ascontiguousarray(x, dtype=np.float32)
        return torch.from_numpy(a.reshape(shape) if shape is not None else a)

    return GaussianScene(t(means, (n, 3)), t(quats, (n, 4)), t(scales, (n, 3)), t(opacities, (n,)),
                         t(sh0, (n, 1, 3)), t(shN, (n, -1, 3) if n else (0, shN.shape[1], 3)),
                         antialiased=antialiased)


def alpha_to_logit(alpha: np.ndarray, levels: int = 255) -> np.ndarray:
    """Opacity logits of alphas in [0, 1] quantised to ``levels`` steps, kept finite at 0 and 1
    by moving a quarter step inwards (re-quantising gives the same value back)."""
    a = np.clip(alpha, 0.25 / levels, 1.0 - 0.25 / levels)
    return np.log(a / (1.0 - a))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warnings for large |x|


def unit_quats(q: np.ndarray) -> np.ndarray:
    """Unit quaternions (w, x, y, z); a zero quaternion becomes the identity."""
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    out = q / np.where(norm == 0, 1.0, norm)
    out[norm[:, 0] == 0] = (1.0, 0.0, 0.0, 0.0)
    return out
