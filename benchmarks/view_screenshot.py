"""A screenshot of the ``splatdistill view`` page in headless Chromium (the README's picture).

    python benchmarks/view_screenshot.py MODEL [MODEL ...] [--data DATA] [--camera test/3] [--compare] --out view.png

Starts the viewer in this process on a free loopback port, opens the page, optionally jumps to a
dataset camera, waits until every panel has drawn and the page is idle, and writes a PNG of the
whole page (reduced to a 256-colour palette when ``--palette``, to keep it small). Needs Chromium.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from pathlib import Path


def compare(models, cam: dict, shots: list[bytes], background) -> None:
    """PSNR (full and 1/4 resolution) of each panel against our CPU rasterizer at the same camera."""
    import numpy as np
    import torch
    from PIL import Image

    from splatdistill.cameras.camera import Camera
    from splatdistill.formats.io import load_model
    from splatdistill.render import render

    c = Camera(**{k: cam[k] for k in ("fx", "fy", "cx", "cy", "width", "height", "world_to_camera")})

    def down(x, f):
        h, w = x.shape[0] // f * f, x.shape[1] // f * f
        return x[:h, :w].reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3))

    for path, png in zip(models, shots):
        shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32) / 255.0
        with torch.no_grad():
            ours = render(load_model(path), c, background=tuple(background), backend="cpu").rgb[0].clamp(0, 1).numpy()
        psnr = [float(-10 * np.log10(((down(shot, f) - down(ours, f)) ** 2).mean())) for f in (1, 4)]
        print(
            f"{path}: page vs our render at {c.width}x{c.height}: PSNR {psnr[0]:.2f} dB, "
            f"{psnr[1]:.2f} dB at 1/4 resolution"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--camera", help="SPLIT/INDEX of a dataset camera, e.g. test/3")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=470)
    ap.add_argument("--palette", action="store_true")
    ap.add_argument(
        "--compare", action="store_true", help="also print each panel's PSNR against our CPU render of the same camera"
    )
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)

    from PIL import Image

    from splatdistill.view.headless import Chromium
    from splatdistill.view.server import make_server

    server = make_server(a.models, data=a.data, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    t0 = time.perf_counter()
    try:
        with Chromium(width=a.width, height=a.height) as page:
            page.goto(server.url)
            page.wait_for("window.splatdistill && (window.splatdistill.ready || window.splatdistill.error)", 300)
            if page.evaluate("window.splatdistill.error"):
                print(page.evaluate("window.splatdistill.error"), file=sys.stderr)
                return 1
            if a.camera:
                split, idx = a.camera.split("/")
                page.evaluate(
                    f"window.splatdistill.setCamera(window.splatdistill.formats.io.cameras[{json.dumps(split)}]"
                    f"[{int(idx)}])"
                )
            page.wait_for(
                "(() => { const h = window.splatdistill; return h.panels.every((p, i) => p.div.hidden || "
                "h.framesSinceCamera()[i] >= 2) && h.idleMs() > 1000 && [...document.images].every("
                "i => i.complete); })()",
                300,
            )
            png = page.screenshot()
            if a.compare:
                cam = page.evaluate("window.splatdistill.getCamera()")
                rects = page.evaluate(
                    "[...document.querySelectorAll('.panel:not([hidden]):not(.photo) canvas')]"
                    ".map(c => { const r = c.getBoundingClientRect(); "
                    "return {x: r.x, y: r.y, width: r.width, height: r.height}; })"
                )
                shots = [page.screenshot(r) for r in rects]
                bg = page.evaluate("window.splatdistill.formats.io.background")
    finally:
        server.shutdown()
        server.server_close()
    if a.compare:
        compare(a.models, cam, shots, bg)
    img = Image.open(io.BytesIO(png)).convert("RGB")
    if a.palette:
        img = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    img.save(a.out, optimize=True)
    print(
        f"wrote {a.out} ({a.out.stat().st_size} bytes, {img.size[0]}x{img.size[1]}) in {time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
