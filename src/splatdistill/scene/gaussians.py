"""The Gaussian scene: raw (pre-activation) parameters and their activations.

Parameter names and layouts follow gsplat, so its densification strategies work on them unchanged:

- ``means``     (N, 3)      positions
- ``quats``     (N, 4)      rotation quaternions (w, x, y, z), normalised at use
- ``scales``    (N, 3)      log-scales (scale = exp)
- ``opacities`` (N,)        opacity logits (opacity = sigmoid)
- ``sh0``       (N, 1, 3)   SH DC coefficient
- ``shN``       (N, K-1, 3) higher SH coefficients, K = (degree+1)^2 (K-1 = 0 for degree 0)

Besides the tensors a scene carries one flag: ``antialiased`` — the model was trained with the
Mip-Splatting style 2D filter (gsplat's ``rasterize_mode="antialiased"``) and must be rendered that way.
Structural operations (``map``, indexing, ``clone``, ``to``, ``with_sh_degree``) keep it.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from splatdistill.scene.sh import rgb_to_sh0

PARAM_NAMES = ("means", "quats", "scales", "opacities", "sh0", "shN")


def num_sh_coeffs(degree: int) -> int:
    """SH coefficients per colour channel of a degree.

    Args:
        degree: SH degree, 0-3.

    Returns:
        ``(degree + 1) ** 2``.
    """
    return (degree + 1) ** 2


def sh_degree_from_coeffs(k: int) -> int:
    """The SH degree that has ``k`` coefficients per colour channel.

    Args:
        k: Coefficients per channel, DC included.

    Returns:
        The degree d with ``(d + 1) ** 2 == k``. Raises ``ValueError`` when there is none in 0-3.
    """
    d = int(round(math.sqrt(k))) - 1
    if (d + 1) ** 2 != k or not 0 <= d <= 3:
        raise ValueError(f"{k} SH coefficients per channel is not (d+1)^2 for a degree 0..3")
    return d


class GaussianScene:
    """A set of N 3D Gaussians: raw parameters in gsplat's names and layouts (see the module docstring).

    Each parameter is a tensor (optionally an ``nn.Parameter``), reachable as an attribute
    (``scene.means``) and in ``scene.params``. Indexing with a mask or indices gives a sub-scene.

    Args:
        means: [N, 3] float32 positions.
        quats: [N, 4] float32 quaternions (w, x, y, z), normalised at use.
        scales: [N, 3] float32 log-scales.
        opacities: [N] float32 opacity logits.
        sh0: [N, 1, 3] float32 SH DC coefficients.
        shN: [N, K-1, 3] float32 higher SH coefficients, K = (degree+1)^2, degree 0-3.
        antialiased: The model was trained with the 2D anti-aliasing filter and must be rendered so.
    """

    def __init__(self, means, quats, scales, opacities, sh0, shN, antialiased: bool = False):
        self.antialiased = bool(antialiased)
        n = means.shape[0]
        shapes = {
            "means": (n, 3),
            "quats": (n, 4),
            "scales": (n, 3),
            "opacities": (n,),
            "sh0": (n, 1, 3),
        }
        self.params: dict[str, torch.Tensor] = {
            "means": means,
            "quats": quats,
            "scales": scales,
            "opacities": opacities,
            "sh0": sh0,
            "shN": shN,
        }
        for name, shape in shapes.items():
            if tuple(self.params[name].shape) != shape:
                raise ValueError(f"{name} has shape {tuple(self.params[name].shape)}, expected {shape}")
        if shN.ndim != 3 or shN.shape[0] != n or shN.shape[2] != 3:
            raise ValueError(f"shN has shape {tuple(shN.shape)}, expected ({n}, K-1, 3)")
        sh_degree_from_coeffs(shN.shape[1] + 1)

    # --- accessors -------------------------------------------------------------------------
    def __getattr__(self, name: str):
        params = self.__dict__.get("params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(name)

    def __len__(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def num_gaussians(self) -> int:
        """N, the number of Gaussians."""
        return len(self)

    @property
    def sh_degree(self) -> int:
        """The SH degree, 0-3, from the shape of ``shN``."""
        return sh_degree_from_coeffs(self.params["shN"].shape[1] + 1)

    @property
    def device(self) -> torch.device:
        """The device of the tensors (that of ``means``)."""
        return self.params["means"].device

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, tensor)`` pairs in ``PARAM_NAMES`` order."""
        return iter((k, self.params[k]) for k in PARAM_NAMES)

    # --- activations ---------------------------------------------------------------------------
    def activated_scales(self) -> torch.Tensor:
        """[N, 3] scales, ``exp(scales)``."""
        return torch.exp(self.params["scales"])

    def activated_opacities(self) -> torch.Tensor:
        """[N] opacities in (0, 1), ``sigmoid(opacities)``."""
        return torch.sigmoid(self.params["opacities"])

    def normalized_quats(self) -> torch.Tensor:
        """[N, 4] unit quaternions (w, x, y, z)."""
        q = self.params["quats"]
        return q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def sh_coeffs(self) -> torch.Tensor:
        """[N, K, 3] all SH coefficients, DC first."""
        return torch.cat([self.params["sh0"], self.params["shN"]], dim=1)

    # --- structural operations -------------------------------------------------------------------
    def map(self, fn) -> "GaussianScene":
        """A scene with ``fn`` applied to every parameter tensor (the ``antialiased`` flag kept).

        Args:
            fn: Tensor -> tensor; must keep the leading dimension consistent across parameters.

        Returns:
            The new ``GaussianScene``.
        """
        return GaussianScene(**{k: fn(v) for k, v in self.items()}, antialiased=self.antialiased)

    def to(self, device) -> "GaussianScene":
        """The same scene with its tensors on ``device``."""
        return self.map(lambda t: t.to(device))

    def detach(self) -> "GaussianScene":
        """The same scene with its tensors detached from autograd (storage shared)."""
        return self.map(lambda t: t.detach())

    def clone(self) -> "GaussianScene":
        """A detached copy with its own storage."""
        return self.map(lambda t: t.detach().clone())

    def __getitem__(self, index) -> "GaussianScene":
        """Index or mask the Gaussians (a bool mask, an index tensor or a slice)."""
        return self.map(lambda t: t[index])

    def with_sh_degree(self, degree: int) -> "GaussianScene":
        """The same scene with its SH truncated (or zero-padded) to ``degree``.

        Args:
            degree: The new SH degree, 0-3.

        Returns:
            A ``GaussianScene`` whose ``shN`` is [N, (degree+1)^2 - 1, 3].
        """
        k = num_sh_coeffs(degree) - 1
        shN = self.params["shN"]
        if shN.shape[1] >= k:
            new = shN[:, :k]
        else:
            pad = torch.zeros(shN.shape[0], k - shN.shape[1], 3, dtype=shN.dtype, device=shN.device)
            new = torch.cat([shN, pad], dim=1)
        params = dict(self.params)
        params["shN"] = new
        return GaussianScene(**params, antialiased=self.antialiased)

    @staticmethod
    def concat(scenes: "list[GaussianScene]") -> "GaussianScene":
        """All Gaussians of ``scenes`` in one scene, in order.

        Args:
            scenes: Scenes of one SH degree.

        Returns:
            A ``GaussianScene`` with the sum of their counts.
        """
        if not scenes:
            raise ValueError("concat needs at least one scene")
        deg = max(s.sh_degree for s in scenes)
        scenes = [s.with_sh_degree(deg) for s in scenes]
        aa = {s.antialiased for s in scenes}
        if len(aa) > 1:
            raise ValueError("cannot concatenate antialiased and non-antialiased scenes")
        return GaussianScene(**{k: torch.cat([s.params[k] for s in scenes]) for k in PARAM_NAMES}, antialiased=aa.pop())

    def numpy(self) -> dict[str, np.ndarray]:
        """The parameters as numpy arrays (detached, on the CPU), keyed by ``PARAM_NAMES``."""
        return {k: v.detach().cpu().numpy() for k, v in self.items()}

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds of the means.

        Returns:
            ``(lo, hi)``, two [3] float32 arrays.
        """
        m = self.params["means"].detach().cpu().numpy()
        if len(m) == 0:
            return np.zeros(3), np.zeros(3)
        return m.min(axis=0), m.max(axis=0)

    def nbytes(self) -> int:
        """Bytes held by the parameter tensors."""
        return int(sum(v.element_size() * v.nelement() for _, v in self.items()))

    def check_finite(self, source: str = "scene") -> None:
        """Raise ``UserError`` naming ``source`` and the parameter if any value is NaN or infinite.

        Args:
            source: The file (or a description) to name in the error.
        """
        from splatdistill.errors import UserError

        for k, v in self.items():
            if v.numel() and not torch.isfinite(v).all():
                raise UserError(f"parameter '{k}' contains NaN or Inf", source)

    # --- construction --------------------------------------------------------------------------
    @staticmethod
    def from_points(
        points: np.ndarray | torch.Tensor,
        colors: np.ndarray | torch.Tensor | None = None,
        sh_degree: int = 3,
        init_opacity: float = 0.1,
        init_scale: float = 1.0,
        knn: int = 3,
    ) -> "GaussianScene":
        """Gaussians initialised at points, as the Inria code and gsplat initialise from SfM points.

        Each is isotropic with scale = ``init_scale`` x the mean distance to its ``knn`` nearest
        neighbours, identity rotation, opacity ``init_opacity`` and its colour as SH DC (higher bands 0).

        Args:
            points: [N, 3] positions.
            colors: [N, 3] RGB in [0, 1], or None for grey.
            sh_degree: SH degree of the scene, 0-3.
            init_opacity: Initial opacity in (0, 1).
            init_scale: Multiplier of the neighbour distance.
            knn: Neighbours averaged for the scale.

        Returns:
            A float32 ``GaussianScene`` of N Gaussians on the CPU.
        """
        pts = torch.as_tensor(np.asarray(points), dtype=torch.float32).reshape(-1, 3)
        n = pts.shape[0]
        if n == 0:
            raise ValueError("from_points needs at least one point")
        if colors is None:
            rgb = torch.full((n, 3), 0.5)
        else:
            rgb = torch.as_tensor(np.asarray(colors), dtype=torch.float32).reshape(-1, 3)
            if rgb.max() > 1.0:
                rgb = rgb / 255.0
        dist = _knn_mean_distance(pts, knn)
        log_scale = torch.log(dist.clamp_min(1e-7) * init_scale).unsqueeze(-1).repeat(1, 3)
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1.0
        opac = torch.full((n,), float(math.log(init_opacity / (1 - init_opacity))))
        sh0 = rgb_to_sh0(rgb).unsqueeze(1)
        shN = torch.zeros(n, num_sh_coeffs(sh_degree) - 1, 3)
        return GaussianScene(pts.clone(), quats, log_scale, opac, sh0, shN)

    @staticmethod
    def random_in_box(n: int, lo, hi, sh_degree: int = 3, seed: int = 0, init_opacity: float = 0.1) -> "GaussianScene":
        """N Gaussians at uniform random points in the box ``[lo, hi]`` with random colours.

        Args:
            n: Number of Gaussians.
            lo: [3] lower corner.
            hi: [3] upper corner.
            sh_degree: SH degree, 0-3.
            seed: Seed of the generator (deterministic).
            init_opacity: Initial opacity in (0, 1).

        Returns:
            A ``GaussianScene`` as from ``from_points``.
        """
        g = torch.Generator().manual_seed(seed)
        lo = torch.as_tensor(lo, dtype=torch.float32)
        hi = torch.as_tensor(hi, dtype=torch.float32)
        pts = lo + (hi - lo) * torch.rand(n, 3, generator=g)
        rgb = torch.rand(n, 3, generator=g)
        return GaussianScene.from_points(pts, rgb, sh_degree=sh_degree, init_opacity=init_opacity)


def _knn_mean_distance(pts: torch.Tensor, k: int) -> torch.Tensor:
    """Mean distance of each point to its k nearest other points (chunked, O(N) memory per chunk)."""
    n = pts.shape[0]
    if n == 1:
        return torch.full((1,), 0.01)
    k = min(k, n - 1)
    try:
        from scipy.spatial import cKDTree

        d, _ = cKDTree(pts.numpy()).query(pts.numpy(), k=k + 1)
        d = torch.as_tensor(np.asarray(d).reshape(n, k + 1)[:, 1:], dtype=torch.float32)
        return d.mean(dim=1)
    except ImportError:
        out = torch.empty(n)
        for s in range(0, n, 2048):
            dd = torch.cdist(pts[s : s + 2048], pts)
            out[s : s + 2048] = dd.topk(k + 1, largest=False).values[:, 1:].mean(dim=1)
        return out
