"""Render benchmark: forward and forward+backward milliseconds per backend.

Cases (Gaussians, width x height): (2,000, 64x64), (20,000, 256x256), (100,000, 400x400) on ``cpu``;
the dense ``reference`` on the smallest case in the same run, and the ratio; ``gsplat`` too on a GPU.
Scenes are fixed by a seed: Gaussians spread uniformly over the view, anisotropic, screen-space
standard deviations uniform in [1, 4] px, opacities uniform in (0, 1), SH degree 3; the loss is the
sum over all pixels and channels.

    python benchmarks/render.py [--json] [--repeats N] [--cases small,medium,large]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time

import numpy as np
import torch

from splatdistill.cameras.camera import Camera
from splatdistill.render import render
from splatdistill.scene.gaussians import GaussianScene

CASES = {"small": (2_000, 64, 64), "medium": (20_000, 256, 256), "large": (100_000, 400, 400)}


def benchmark_scene(n: int, width: int, height: int, seed: int = 0):
    """A camera at the origin looking down +z and n Gaussians filling its view."""
    rng = np.random.default_rng(seed)
    f = 0.5 * width / math.tan(math.radians(30))  # 60 degree horizontal field of view
    cam = Camera(fx=f, fy=f, cx=width / 2, cy=height / 2, width=width, height=height, world_to_camera=np.eye(4))
    z = rng.uniform(2.0, 10.0, n)
    u = rng.uniform(0, width, n)
    v = rng.uniform(0, height, n)
    means = np.stack([(u - cam.cx) * z / f, (v - cam.cy) * z / f, z], axis=1)
    std_px = rng.uniform(1.0, 4.0, (n, 3))  # per-axis screen-space std -> anisotropic
    scales = std_px * z[:, None] / f
    quats = rng.normal(size=(n, 4))
    opac = rng.uniform(0.0, 1.0, n).clip(1e-4, 1 - 1e-4)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    scene = GaussianScene(
        means=t(means),
        quats=t(quats),
        scales=t(np.log(scales)),
        opacities=t(np.log(opac / (1 - opac))),
        sh0=t(rng.normal(0, 0.5, (n, 1, 3))),
        shN=t(rng.normal(0, 0.1, (n, 15, 3))),
    )
    return scene, cam


def time_backend(scene, cam, backend: str, repeats: int, device: str = "cpu") -> tuple[float, float]:
    scene = scene.to(device)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in scene.items()}
    s = GaussianScene(**params)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def fwd():
        with torch.no_grad():
            render(s, [cam], background=(1.0, 1.0, 1.0), backend=backend)
        sync()

    def fwd_bwd():
        out = render(s, [cam], background=(1.0, 1.0, 1.0), backend=backend)
        out.rgb.sum().backward()
        sync()

    fwd(), fwd_bwd()  # warm-up (compilation, caches)
    res = []
    for fn in (fwd, fwd_bwd):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        res.append(1000.0 * float(np.median(times)))
    return res[0], res[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cases", default="small,medium,large")
    args = ap.parse_args(argv)
    names = [c for c in args.cases.split(",") if c]
    cases = []
    for name in names:
        n, w, h = CASES[name]
        scene, cam = benchmark_scene(n, w, h)
        backends = ["cpu"] + (["reference"] if name == "small" else [])
        if torch.cuda.is_available():
            backends.append("gsplat")
        for b in backends:
            dev = "cuda" if b == "gsplat" else "cpu"
            reps = 1 if b == "reference" else args.repeats
            f_ms, fb_ms = time_backend(scene, cam, b, reps, dev)
            cases.append(
                {
                    "backend": b,
                    "gaussians": n,
                    "width": w,
                    "height": h,
                    "forward_ms": round(f_ms, 2),
                    "forward_backward_ms": round(fb_ms, 2),
                }
            )
            if not args.json:
                print(
                    f"{b:>9} {n:>7} {w}x{h}: forward {f_ms:9.1f} ms, forward+backward {fb_ms:9.1f} ms", file=sys.stderr
                )
    speedup = None
    small = [c for c in cases if (c["gaussians"], c["width"]) == (2_000, 64)]
    ref = [c for c in small if c["backend"] == "reference"]
    cpu = [c for c in small if c["backend"] == "cpu"]
    if ref and cpu:
        speedup = round(ref[0]["forward_backward_ms"] / cpu[0]["forward_backward_ms"], 1)
    result = {
        "cases": cases,
        "speedup_vs_reference": speedup,
        "machine": {
            "cpus": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
    }
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
