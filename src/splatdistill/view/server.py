"""``splatdistill view``: a local web page that shows several models from one camera.

The page (``static/``) draws with Spark (``@sparkjsdev/spark``, a three.js 3DGS renderer; the
released build files are vendored under ``static/vendor/``, see ``VERSIONS.md`` there). This module
only serves it: every model is read with :func:`splatdistill.formats.io.load_model` (any format we
read) and sent to the page as an Inria PLY written in memory (float32, so the page shows exactly
the decoded model, whatever the file's own encoding); a dataset's cameras and photos are sent
when ``--data`` is given. Nothing is fetched from the network: the page loads only from here.

Routes: ``/`` (the page), ``/static/...`` (page and vendored files; ``*.gz`` files are sent with
``Content-Encoding: gzip``), ``/api/scene.json`` (models, cameras, initial view),
``/model/<i>.ply`` and ``/photo/<split>/<i>.png``.
"""

from __future__ import annotations

import io
import json
import socket
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from splatdistill.errors import UserError

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8765
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


@dataclass
class ModelEntry:
    """One model shown by the viewer.

    Args:
        path: Its file.
        scene: The ``GaussianScene``, on the CPU.
        format: Its format (as ``model_format``).
        file_bytes: Its size on disk.
    """

    path: Path
    scene: object  # GaussianScene on the CPU
    format: str
    file_bytes: int
    _ply: bytes | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def info(self, index: int) -> dict:
        """The model's caption for the page.

        Args:
            index: Its position among the models.

        Returns:
            A JSON-ready dict: ``index``, ``name``, ``format``, ``num_gaussians``, ``sh_degree``,
            ``bytes``, ``antialiased`` and the ``url`` of its PLY.
        """
        return {
            "index": index,
            "name": str(self.path),
            "format": self.format,
            "num_gaussians": len(self.scene),
            "sh_degree": int(self.scene.sh_degree),
            "bytes": int(self.file_bytes),
            "antialiased": bool(getattr(self.scene, "antialiased", False)),
            "url": f"/model/{index}.ply",
        }

    def ply_bytes(self) -> bytes:
        """The model as an Inria PLY (float32 little-endian), built once on first request."""
        with self._lock:
            if self._ply is None:
                self._ply = scene_to_ply_bytes(self.scene)
            return self._ply


def scene_to_ply_bytes(scene) -> bytes:
    """``scene`` in the Inria PLY layout, as bytes (the same layout ``write_ply`` writes).

    Args:
        scene: The scene.

    Returns:
        The whole PLY file (binary little-endian float32).
    """
    from splatdistill.formats.ply import property_names

    p = {k: v.detach().to("cpu").float().contiguous().numpy() for k, v in scene.items()}
    n = p["means"].shape[0]
    k1 = p["shN"].shape[1]
    names = property_names(scene.sh_degree)
    mat = np.zeros((n, len(names)), dtype="<f4")
    mat[:, 0:3] = p["means"]
    mat[:, 6:9] = p["sh0"].reshape(n, 3)
    r = 9 + 3 * k1
    mat[:, 9:r] = p["shN"].transpose(0, 2, 1).reshape(n, 3 * k1)
    mat[:, r] = p["opacities"].reshape(n)
    mat[:, r + 1 : r + 4] = p["scales"]
    mat[:, r + 4 : r + 8] = p["quats"]
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    return header.encode("ascii") + mat.tobytes()


def _model_format(path: Path) -> str:
    if path.is_dir():
        return "dir"
    name = path.name.lower()
    if name.endswith(".sog") or name.endswith("meta.json"):
        return "sog"
    return path.suffix.lower().lstrip(".") or "?"


def _file_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def load_models(paths: list[Path]) -> list[ModelEntry]:
    """Load the models to view, each through ``load_model``.

    Args:
        paths: Model files or SOG folders.

    Returns:
        One ``ModelEntry`` per path. No path, or a missing or unreadable one, raises ``UserError``.
    """
    from splatdistill.formats.io import load_model

    if not paths:
        raise UserError("give at least one model to view")
    entries = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise UserError("no such file or directory", p)
        scene = load_model(p).to("cpu")
        entries.append(ModelEntry(path=p, scene=scene, format=_model_format(p), file_bytes=_file_bytes(p)))
    return entries


def _camera_json(cam, name: str = "") -> dict:
    return {
        "name": name or cam.image_name,
        "fx": float(cam.fx),
        "fy": float(cam.fy),
        "cx": float(cam.cx),
        "cy": float(cam.cy),
        "width": int(cam.width),
        "height": int(cam.height),
        "world_to_camera": np.asarray(cam.world_to_camera, dtype=float).tolist(),
    }


def _scene_sphere(models: list[ModelEntry]) -> tuple[np.ndarray, float]:
    from splatdistill.cameras.views import bounding_sphere

    for m in models:
        if len(m.scene):
            try:
                center, radius = bounding_sphere(m.scene.means)
            except ValueError:
                continue
            return center, max(radius, 1e-6)
    return np.zeros(3), 1.0


def _up_from_cameras(cams) -> np.ndarray:
    """The mean of the cameras' up directions (-y of the OpenCV camera frame), normalised."""
    ups = [-np.asarray(c.world_to_camera, dtype=float)[1, :3] for c in cams]
    u = np.mean(ups, axis=0)
    n = np.linalg.norm(u)
    return u / n if n > 1e-8 else np.array([0.0, 0.0, 1.0])


class ViewerState:
    """What the page asks for: model bytes, the dataset's cameras and photos, the initial view.

    Args:
        models: The models.
        dataset: A ``Dataset`` whose cameras and photos the page offers, or None.
        title: The page title.
    """

    def __init__(self, models: list[ModelEntry], dataset=None, title: str = "splatdistill view"):
        self.models = models
        self.dataset = dataset
        self.title = title
        self.center, self.radius = _scene_sphere(models)
        self.cameras: dict[str, list] = {}
        background = (0.0, 0.0, 0.0)
        if dataset is not None:
            for split in ("train", "test"):
                views = dataset.splits.get(split) or []
                if views:
                    self.cameras[split] = views
            background = tuple(float(b) for b in dataset.background)
        self.background = background
        train = [v.camera for v in self.cameras.get("train", [])]
        if train:
            self.up = _up_from_cameras(train)
            self.initial = _camera_json(train[0], train[0].image_name)
            self.initial.update(split="train", index=0)
        else:
            from splatdistill.cameras.views import orbit_cameras

            self.up = np.array([0.0, 0.0, 1.0])
            cam = orbit_cameras(self.center, 2.2 * self.radius, 1, 960, 720)[0]
            self.initial = _camera_json(cam, "orbit")

    def scene_json(self) -> dict:
        """What ``/scene.json`` sends the page.

        Returns:
            A JSON-ready dict: ``title``, ``models`` (their captions), ``center``, ``radius``, ``up``,
            ``background``, ``initial_camera`` and ``cameras`` per split.
        """
        return {
            "title": self.title,
            "models": [m.info(i) for i, m in enumerate(self.models)],
            "center": [float(v) for v in self.center],
            "radius": float(self.radius),
            "up": [float(v) for v in self.up],
            "background": list(self.background),
            "initial_camera": self.initial,
            "cameras": {
                split: [dict(_camera_json(v.camera), index=i, split=split) for i, v in enumerate(views)]
                for split, views in self.cameras.items()
            },
        }

    def photo_png(self, split: str, index: int) -> bytes:
        """A dataset photo as PNG.

        Args:
            split: ``train`` or ``test``.
            index: The view's index in that split.

        Returns:
            The PNG file. An unknown split or index raises ``KeyError``.
        """
        from PIL import Image

        views = self.cameras.get(split)
        if views is None or not 0 <= index < len(views):
            raise KeyError(index)
        arr = self.dataset.image_uint8(views[index])
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=1)
        return buf.getvalue()


def _static_root():
    return resources.files("splatdistill.view") / "static"


class _Handler(BaseHTTPRequestHandler):
    server_version = "splatdistill-view"
    state: ViewerState  # set on the subclass made by make_server

    def log_message(self, format, *args):  # quiet: the page makes many requests
        pass

    def _send(self, body: bytes, content_type: str, status=HTTPStatus.OK, gzip_encoded=False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if gzip_encoded:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def _not_found(self):
        self._send(b"not found\n", "text/plain; charset=utf-8", HTTPStatus.NOT_FOUND)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = unquote(urlparse(self.path).path)
        try:
            if path in ("/", "/index.html"):
                return self._static("index.html")
            if path.startswith("/static/"):
                return self._static(path[len("/static/") :])
            if path == "/api/scene.json":
                body = json.dumps(self.state.scene_json()).encode()
                return self._send(body, "application/json")
            if path.startswith("/model/") and path.endswith(".ply"):
                i = int(path[len("/model/") : -len(".ply")])
                if not 0 <= i < len(self.state.models):
                    return self._not_found()
                return self._send(self.state.models[i].ply_bytes(), "application/octet-stream")
            if path.startswith("/photo/") and path.endswith(".png"):
                split, _, idx = path[len("/photo/") : -len(".png")].partition("/")
                try:
                    return self._send(self.state.photo_png(split, int(idx)), "image/png")
                except (KeyError, ValueError):
                    return self._not_found()
        except ValueError:
            return self._not_found()
        return self._not_found()

    def _static(self, rel: str):
        parts = [p for p in rel.split("/") if p]
        if not parts or any(p in (".", "..") or "\\" in p for p in parts):
            return self._not_found()
        node = _static_root()
        for p in parts:
            node = node / p
        target, encoded = node, False
        if not node.is_file():
            gz = _static_root().joinpath(*parts[:-1], parts[-1] + ".gz")
            if not gz.is_file():
                return self._not_found()
            target, encoded = gz, True
        ctype = _CONTENT_TYPES.get(Path(parts[-1]).suffix, "application/octet-stream")
        self._send(target.read_bytes(), ctype, gzip_encoded=encoded)


class ViewerServer(ThreadingHTTPServer):
    """The viewer's threaded HTTP server."""

    daemon_threads = True
    allow_reuse_address = True

    @property
    def url(self) -> str:
        """The address to open in a browser (the loopback address when bound to every interface)."""
        host, port = self.server_address[:2]
        shown = host if ":" not in host else f"[{host}]"
        if host in ("0.0.0.0", "::"):
            shown = LOOPBACK
        return f"http://{shown}:{port}/"


def bind_server(host: str = LOOPBACK, port: int = DEFAULT_PORT) -> ViewerServer:
    """Bind the HTTP server (no state yet), so a busy port fails before any model is loaded.

    Args:
        host: The interface to listen on.
        port: The port, 0 for any free one.

    Returns:
        The bound ``ViewerServer``. A bad or busy port raises ``UserError``.
    """
    if not 0 <= int(port) <= 65535:
        raise UserError(f"--port must be in 0..65535, got {port}")

    class Server(ViewerServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    handler = type("Handler", (_Handler,), {})
    try:
        server = Server((host, int(port)), handler, bind_and_activate=True)
    except OSError as e:
        reason = (
            "in use (pick another with --port, or --port 0 for any free port)"
            if e.errno in (98, 48, 10048)
            else (e.strerror or str(e))
        )
        raise UserError(f"cannot listen on {host}:{port}: {reason}") from None
    return server


def attach_state(server: ViewerServer, state: ViewerState) -> ViewerServer:
    """Give a bound server what it serves.

    Args:
        server: From ``bind_server``.
        state: The ``ViewerState``.

    Returns:
        ``server``.
    """
    server.RequestHandlerClass.state = state
    return server


def make_server(
    models: list[Path], data: Path | None = None, host: str = LOOPBACK, port: int = DEFAULT_PORT, downscale: int = 1
) -> ViewerServer:
    """Bind, then load the models (and dataset) and return a server ready for ``serve_forever``.

    Args:
        models: Model files or SOG folders.
        data: A dataset folder whose cameras and photos the page offers, or None.
        host: The interface to listen on.
        port: The port, 0 for any free one.
        downscale: Image downscale of the dataset.

    Returns:
        The ``ViewerServer``.
    """
    if data is not None and not Path(data).exists():
        raise UserError("no such dataset folder", data)
    for p in models:
        if not Path(p).exists():
            raise UserError("no such file or directory", p)
    server = bind_server(host, port)
    try:
        entries = load_models([Path(p) for p in models])
        dataset = None
        if data is not None:
            from splatdistill.data.dataset import load_dataset

            dataset = load_dataset(data, downscale=downscale)
        attach_state(server, ViewerState(entries, dataset))
    except BaseException:
        server.server_close()
        raise
    return server


def view_command(models: list[Path], data: Path | None = None) -> str:
    """The ``splatdistill view`` command line that compares ``models`` (for other commands to print).

    Args:
        models: Model files.
        data: A dataset folder, or None.

    Returns:
        The command, shell-quoted.
    """
    import shlex

    words = ["splatdistill", "view"] + [str(m) for m in models]
    if data is not None:
        words += ["--data", str(data)]
    return " ".join(shlex.quote(w) for w in words)


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address.

    Args:
        host: A host name or address.

    Returns:
        True for loopback only; False when it does not resolve.
    """
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    import ipaddress

    return all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


__all__ = [
    "make_server",
    "bind_server",
    "ViewerState",
    "load_models",
    "scene_to_ply_bytes",
    "view_command",
    "is_loopback",
    "DEFAULT_PORT",
    "LOOPBACK",
]
