"""``splatdistill view``: the server (routes, bytes, loopback, errors, vendored files) and, where a
Chromium is installed, the page in a real headless browser: its first frame resembles our own
render of the same camera, and two models draw side by side.

The browser tests need Debian's ``chromium`` (``apt-get install chromium``); they are skipped with
a message when no Chromium is found. WebGL runs on SwiftShader (software), so no GPU is needed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, assert_one_line_error, run_cli  # noqa: E402
from helpers import look_at_camera
from splatdistill.cameras.camera import Camera
from splatdistill.formats.ply import read_ply, write_ply
from splatdistill.scene.gaussians import GaussianScene

STATIC = REPO / "src" / "splatdistill" / "view" / "static"


# ---- scenes ---------------------------------------------------------------------------------------
def blob_scene(n=4000, degree=3, seed=0) -> GaussianScene:
    """Gaussians in an ellipsoid, coloured by position (so a wrong pose or flip shows), with view-
    dependent SH of every degree up to ``degree``."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.7, 0.5, 0.35])
    col = (means / torch.tensor([1.4, 1.0, 0.7])).clamp(-1, 1) * 0.45 + 0.5
    sh0 = ((col - 0.5) / 0.28209479177387814).unsqueeze(1)
    shN = torch.randn(n, (degree + 1) ** 2 - 1, 3, generator=g) * 0.04
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    scales = torch.log(torch.rand(n, 3, generator=g) * 0.05 + 0.015)
    return GaussianScene(means=means, quats=quats, scales=scales, opacities=torch.full((n,), 1.0), sh0=sh0, shN=shN)


def pose_camera(width=320, height=240, azimuth_deg=35.0, elevation_deg=25.0, dist=3.2) -> Camera:
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    eye = dist * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return look_at_camera(width, height, eye)


def camera_json(cam: Camera) -> dict:
    return {k: v for k, v in cam.to_dict().items() if k != "model"}


# ---- image comparison (computed here, not by the code under test) -------------------------------
def area_down(img: np.ndarray, f: int) -> np.ndarray:
    h, w = img.shape[0] // f * f, img.shape[1] // f * f
    return img[:h, :w].reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(max(float(((a - b) ** 2).mean()), 1e-12)))


def histogram(img: np.ndarray, bins=4) -> np.ndarray:
    q = np.clip((img * bins).astype(int), 0, bins - 1)
    idx = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    h = np.bincount(idx.ravel(), minlength=bins**3).astype(float)
    return h / h.sum()


def foreground(img: np.ndarray, background) -> float:
    """The fraction of pixels that differ from the background colour by more than 0.1."""
    return float((np.abs(img - np.asarray(background, dtype=np.float32)).max(axis=-1) > 0.1).mean())


def our_render(scene: GaussianScene, cam: Camera, background) -> np.ndarray:
    from splatdistill.render import render

    with torch.no_grad():
        out = render(scene, cam, background=tuple(background), backend="cpu")
    return out.rgb[0].clamp(0, 1).numpy()


# ---- the server, without a browser -----------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A degree-3 PLY, a degree-1 SPZ of another scene, and an empty PLY."""
    from splatdistill.formats.spz import write_spz

    d = tmp_path_factory.mktemp("view_models")
    a, b = d / "teacher.ply", d / "student.spz"
    write_ply(blob_scene(4000, 3, seed=0), a)
    write_spz(blob_scene(1500, 1, seed=1), b)
    empty = d / "empty.ply"
    write_ply(blob_scene(4, 0)[torch.zeros(4, dtype=torch.bool)], empty)
    return a, b, empty


@pytest.fixture(scope="module")
def sdz_model(tmp_path_factory):
    from splatdistill.formats.io import save_model

    p = tmp_path_factory.mktemp("view_sdz") / "compressed.sdz"
    save_model(blob_scene(800, 2, seed=2), p)
    return p


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, dict(r.headers), r.read()


@pytest.fixture
def served(models, sdz_model):
    from splatdistill.view.server import make_server

    server = make_server([*models, sdz_model], port=0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


def test_server_binds_loopback_and_serves_models_bit_exact(served, models, sdz_model, tmp_path):
    from splatdistill.formats.io import load_model

    models = [*models, sdz_model]
    assert served.server_address[0] == "127.0.0.1"
    status, _, body = _get(served.url + "api/scene.json")
    info = json.loads(body)
    assert [m["num_gaussians"] for m in info["models"]] == [4000, 1500, 0, 800]
    assert [m["format"] for m in info["models"]] == ["ply", "spz", "ply", "sdz"]
    assert [m["bytes"] for m in info["models"]] == [os.path.getsize(p) for p in models]
    assert [m["sh_degree"] for m in info["models"]] == [3, 1, 0, 2]
    for i, path in enumerate(models):
        _, _, ply = _get(served.url + f"model/{i}.ply")
        (tmp_path / f"{i}.ply").write_bytes(ply)
        got, want = read_ply(tmp_path / f"{i}.ply"), load_model(path)
        # the page is sent the decoded model, float32 bit for bit (an SPZ in our frame: our reader
        # undoes SPZ's RUB axes, so every format reaches the page in the same frame)
        for k, v in want.items():
            assert torch.equal(got.params[k], v.float()), (path, k)
    for bad in ("model/4.ply", "model/x.ply", "photo/train/0.png", "static/../server.py", "nothing"):
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(served.url + bad)
        assert e.value.code == 404, bad


def test_vendored_files_are_the_released_ones_and_served_gzip(served):
    """Each vendored file is served gzip-encoded and its bytes are the SHA-256 listed in VERSIONS.md."""
    table = (STATIC / "vendor" / "VERSIONS.md").read_text()
    rows = re.findall(r"\| `([\w.]+)\.gz` \| `([^`]+)` \| ([\d.]+) \|.*\| `([0-9a-f]{64})` \|", table)
    assert {r[0] for r in rows} == {"spark.module.min.js", "three.module.js", "three.core.js", "Pass.js"}
    total = 0
    for name, _package, _version, sha in rows:
        req = urllib.request.Request(served.url + f"static/vendor/{name}", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            assert r.headers["Content-Type"].startswith("text/javascript")
            raw = gzip.decompress(r.read())
        assert hashlib.sha256(raw).hexdigest() == sha, name
        total += (STATIC / "vendor" / f"{name}.gz").stat().st_size
    assert total < 3_000_000  # what the package carries
    for lic in ("LICENSE-spark.txt", "LICENSE-three.txt"):
        assert "MIT License" in (STATIC / "vendor" / lic).read_text()


def test_page_names_no_remote_url_and_package_data_covers_static():
    from fnmatch import fnmatch

    import tomllib

    for f in ("index.html", "viewer.js", "viewer.css"):
        text = (STATIC / f).read_text()
        assert not re.search(r"(https?:)?//[\w-]+\.[\w.-]+/", text), f  # no CDN, no remote host
    page = (STATIC / "index.html").read_text()
    imports = json.loads(re.search(r'<script type="importmap">(.*?)</script>', page, re.S).group(1))["imports"]
    assert all(u.startswith("/static/vendor/") for u in imports.values())
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "splatdistill.view"
    ]
    for f in STATIC.rglob("*"):
        if f.is_file():
            rel = f.relative_to(STATIC.parent).as_posix()
            assert any(fnmatch(rel, g) for g in globs), rel


def test_view_errors_are_one_line(models, tmp_path, capsys):
    code, _, err = run_cli(capsys, "view", "--port", "0")
    assert_one_line_error(code, err, "at least one model")
    code, _, err = run_cli(capsys, "view", tmp_path / "missing.ply", "--port", "0")
    assert_one_line_error(code, err, "missing.ply", "no such file")
    (tmp_path / "bad.ply").write_bytes(b"not a ply")
    code, _, err = run_cli(capsys, "view", tmp_path / "bad.ply", "--port", "0")
    assert_one_line_error(code, err, "bad.ply")
    code, _, err = run_cli(capsys, "view", models[0], "--port", "0", "--data", tmp_path / "nodata")
    assert_one_line_error(code, err, "nodata")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, _, err = run_cli(capsys, "view", models[0], "--port", port)
        assert_one_line_error(code, err, f"127.0.0.1:{port}", "in use")


def test_view_with_dataset_serves_cameras_and_photos(demo_scene_dir, models):
    from PIL import Image

    from splatdistill.data.dataset import load_dataset
    from splatdistill.view.server import make_server

    server = make_server([models[0]], data=demo_scene_dir, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        info = json.loads(_get(server.url + "api/scene.json")[2])
        ds = load_dataset(demo_scene_dir)
        assert len(info["cameras"]["train"]) == len(ds.split("train"))
        assert len(info["cameras"]["test"]) == len(ds.split("test"))
        c = info["cameras"]["test"][1]
        want = ds.split("test")[1].camera
        assert np.allclose(c["world_to_camera"], want.world_to_camera) and c["fx"] == want.fx
        assert info["initial_camera"]["name"] == ds.split("train")[0].camera.image_name
        assert info["background"] == list(ds.background)
        png = _get(server.url + "photo/test/1.png")[2]
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), ds.image_uint8(ds.split("test")[1]))
    finally:
        server.shutdown()
        server.server_close()


# ---- in a real browser ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium():
    from splatdistill.view.headless import find_chromium

    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium); browser tests skipped")
    return exe


class ViewProcess:
    """``splatdistill view ... --port 0`` as a subprocess (the real command); ``url`` from its output."""

    def __init__(self, *args):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "splatdistill", "view", *map(str, args), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        line = self.proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if not m:
            self.proc.kill()
            raise AssertionError(f"view did not start: {line!r} {self.proc.stderr.read()}")
        self.url = m.group(1)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _open_page(chromium_exe, url, width=1100, height=560):
    from splatdistill.view.headless import Chromium

    page = Chromium(chromium_exe, width=width, height=height)
    try:
        if not page.evaluate("!!document.createElement('canvas').getContext('webgl2')"):
            pytest.skip("this Chromium has no WebGL 2 (not even SwiftShader); browser tests skipped")
    except BaseException:
        page.close()
        raise
    page.goto(url)
    try:
        page.wait_for("window.splatdistill && (window.splatdistill.ready || window.splatdistill.error)", timeout=120)
        assert page.evaluate("window.splatdistill.error") is None, page.console
    except BaseException:
        page.close()
        raise
    return page


def _settle(page, timeout=120):
    """Wait until every visible panel drew at least twice since the last camera change and the page
    has been idle for a while (Spark sorts in a worker and redraws when the sort is done)."""
    page.wait_for(
        "(() => { const h = window.splatdistill; return h.panels.every((p, i) => p.div.hidden || "
        "h.framesSinceCamera()[i] >= 2) && h.idleMs() > 700; })()",
        timeout=timeout,
    )


def _canvas_shots(page) -> list[tuple[dict, np.ndarray]]:
    from PIL import Image

    rects = page.evaluate(
        "[...document.querySelectorAll('.panel:not([hidden]):not(.photo) canvas')].map(c => {"
        "const r = c.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, "
        "height: r.height, pw: c.width, ph: c.height}; })"
    )
    shots = []
    for r in rects:
        png = page.screenshot(r)
        img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float32) / 255.0
        shots.append((r, img))
    return shots


def test_browser_first_frame_resembles_our_render(chromium, models):
    """The page's render of a known camera (set through the page's hook) against our CPU rasterizer's
    render of the same camera, at the canvas size: low-resolution PSNR and a coarse colour histogram;
    a render from another camera is the control (the comparison must tell the two apart)."""
    from splatdistill.formats.io import load_model

    view = ViewProcess(models[0])
    try:
        page = _open_page(chromium, view.url)
        try:
            cam = pose_camera()
            assert page.evaluate(f"window.splatdistill.setCamera({json.dumps(camera_json(cam))})") is True
            _settle(page)
            ((rect, shot),) = _canvas_shots(page)
            requests = list(page.requests)
        finally:
            page.close()
    finally:
        view.close()
    assert rect["x"] == int(rect["x"]) and rect["y"] == int(rect["y"])  # whole-pixel placement
    h, w = shot.shape[:2]
    assert (w, h) == (rect["pw"], rect["ph"]) and abs(w / h - cam.width / cam.height) < 0.01
    # everything the page loaded came from the local server (no network)
    assert requests and all(u.startswith(view.url) or u.startswith(("data:", "blob:")) for u in requests), requests

    scene = load_model(models[0])
    ours = our_render(scene, cam.with_size(w, h), (0, 0, 0))
    other = our_render(scene, pose_camera(azimuth_deg=35 + 50, elevation_deg=-20).with_size(w, h), (0, 0, 0))
    assert shot.std() > 0.05 and foreground(shot, (0, 0, 0)) > 0.15, "the page's canvas is blank"
    match, control = psnr(area_down(shot, 4), area_down(ours, 4)), psnr(area_down(shot, 4), area_down(other, 4))
    hist = np.minimum(histogram(shot), histogram(ours)).sum()
    hist_control = np.minimum(histogram(shot), histogram(other)).sum()
    print(
        f"\nbrowser vs our render at {w}x{h} (1/4 resolution): PSNR {match:.2f} dB (control {control:.2f} dB); "
        f"histogram intersection {hist:.3f} (control {hist_control:.3f})"
    )
    assert match > 24.0 and match > control + 6.0
    assert hist > 0.85


def test_browser_two_models_side_by_side_toggle_and_dataset_cameras(chromium, models, demo_scene_dir):
    from splatdistill.data.dataset import load_dataset
    from splatdistill.formats.io import load_model
    from splatdistill.view.server import make_server

    ds = load_dataset(demo_scene_dir)
    bg = tuple(ds.background)
    # in this process (the command line itself is exercised by the test above): saves a start-up
    server = make_server([models[0], models[1]], data=demo_scene_dir, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = _open_page(chromium, server.url)
        try:
            assert page.evaluate("window.splatdistill.formats.io.background") == list(bg)
            # the page opens on the first training camera, its photo beside the renders
            first = page.evaluate("window.splatdistill.getCamera()")
            photo0 = page.evaluate("!document.querySelector('.panel.photo').hidden")
            cam = pose_camera(azimuth_deg=-60)
            page.evaluate(f"window.splatdistill.setCamera({json.dumps(camera_json(cam))})")
            _settle(page)
            shots = _canvas_shots(page)
            frames = page.evaluate("window.splatdistill.frames()")
            captions = page.evaluate("[...document.querySelectorAll('.panel .caption')].map(c => c.textContent)")
            photo_after_move = page.evaluate("!document.querySelector('.panel.photo').hidden")
            page.key("t")  # one at a time
            page.wait_for("window.splatdistill.layout === 'single'")
            _settle(page)
            single = _canvas_shots(page)
            page.key("t")  # the next model alone
            _settle(page)
            second = page.evaluate("[...document.querySelectorAll('.panel:not(.photo)')].map(p => p.hidden)")
            page.key("0")  # side by side again
            page.key("]")  # the next dataset camera: train 1
            page.wait_for(
                "(() => { const i = document.querySelector('.panel.photo img'); "
                "return !i.parentElement.hidden && i.complete && i.naturalWidth > 0; })()"
            )
            _settle(page)
            jumped = page.evaluate("window.splatdistill.getCamera()")
            photo = page.evaluate(
                "(() => { const i = document.querySelector('.panel.photo img'); "
                "const r = i.getBoundingClientRect(); return [i.naturalWidth, i.naturalHeight, "
                "r.width, r.height, i.getAttribute('src')]; })()"
            )
            panel_shots = _canvas_shots(page)
            # orbit: a drag on a panel turns the shared camera about its target, at the same distance
            r = panel_shots[0][0]
            target = page.evaluate("window.splatdistill.target()")
            page.drag(r["x"] + 100, r["y"] + 100, r["x"] + 160, r["y"] + 120)
            _settle(page)
            orbited = page.evaluate("window.splatdistill.getCamera()")
            photo_after_drag = page.evaluate("!document.querySelector('.panel.photo').hidden")
        finally:
            page.close()
    finally:
        server.shutdown()
        server.server_close()
    train = ds.split("train")
    assert photo0 and not photo_after_move
    assert np.allclose(first["world_to_camera"], train[0].camera.world_to_camera, atol=1e-5)
    assert np.allclose(jumped["world_to_camera"], train[1].camera.world_to_camera, atol=1e-5)
    assert photo[:2] == [train[1].camera.width, train[1].camera.height] and photo[4] == "/photo/train/1.png"
    assert len(panel_shots) == 2 and all((r["width"], r["height"]) == tuple(photo[2:4]) for r, _ in panel_shots)

    def centre(c):
        m = np.asarray(c["world_to_camera"])
        return -m[:3, :3].T @ m[:3, 3]

    assert np.linalg.norm(centre(orbited) - centre(jumped)) > 0.05
    assert np.isclose(np.linalg.norm(centre(orbited) - target), np.linalg.norm(centre(jumped) - target), rtol=1e-4)
    assert not photo_after_drag  # the photo is shown only at its own camera
    # the jumped-to camera's intrinsics, scaled to the canvas
    w1 = panel_shots[0][0]["pw"]
    assert abs(jumped["fx"] / w1 - train[1].camera.fx / train[1].camera.width) < 1e-6

    assert len(shots) == 2 and all(f >= 2 for f in frames), frames
    (ra, a), (rb, b) = shots
    assert ra["y"] == rb["y"] and rb["x"] >= ra["x"] + ra["width"]  # side by side, same size
    assert a.shape == b.shape
    for img in (a, b):
        assert img.std() > 0.05 and foreground(img, bg) > 0.1, "a panel did not draw"
    h, w = a.shape[:2]
    # each panel shows its own model: panel 2 (the SPZ) is nearer our render of the SPZ than of the PLY
    ra_, rb_ = (our_render(load_model(p), cam.with_size(w, h), bg) for p in models[:2])
    assert psnr(area_down(b, 4), area_down(rb_, 4)) > psnr(area_down(b, 4), area_down(ra_, 4)) + 1.0
    assert psnr(area_down(a, 4), area_down(ra_, 4)) > psnr(area_down(a, 4), area_down(rb_, 4)) + 1.0
    assert "4,000 Gaussians" in captions[0] and "PLY" in captions[0] and "SH 3" in captions[0]
    assert "1,500 Gaussians" in captions[1] and "SPZ" in captions[1]
    assert f"{os.path.getsize(models[1]) / 1e3:.1f} kB" in captions[1]
    assert len(single) == 1 and single[0][1].shape[1] > w  # one model alone gets the room of two
    assert second == [True, False]


def test_view_command_quotes_paths_and_loopback_check():
    from splatdistill.view.server import is_loopback, view_command

    assert (
        view_command([Path("runs/a b.ply"), Path("c.sdz")], Path("data"))
        == "splatdistill view 'runs/a b.ply' c.sdz --data data"
    )
    assert view_command([Path("m.spz")]) == "splatdistill view m.spz"
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
