"""Drive a local headless Chromium through the DevTools protocol over a pipe (standard library only).

Used by the browser test of ``splatdistill view`` and by ``benchmarks/view_screenshot.py``; it
needs a Chromium executable (Debian's ``chromium`` package) and nothing else. Chromium started
with ``--remote-debugging-pipe`` reads protocol messages on file descriptor 3 and writes them on
4, each one a JSON object followed by a NUL byte (the Chrome DevTools Protocol's pipe transport).
WebGL runs on SwiftShader, Chromium's software renderer, so no GPU is needed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--use-gl=angle",
    "--ignore-gpu-blocklist",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--disable-dev-shm-usage",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
)


class BrowserError(RuntimeError):
    """Chromium is missing, exited, did not answer in time, or the page raised."""


def find_chromium() -> str | None:
    """A Chromium executable: ``$SPLATDISTILL_CHROMIUM`` or the first of the usual names on PATH.

    Returns:
        Its path, or None when there is none.
    """
    env = os.environ.get("SPLATDISTILL_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in CHROMIUM_NAMES:
        exe = shutil.which(name)
        if exe:
            return exe
    return None


class Chromium:
    """One headless Chromium with one page, driven over its DevTools pipe. Use as a context manager.

    Args:
        executable: The browser; ``find_chromium()`` when None (``BrowserError`` if there is none).
        width, height: The page's viewport in CSS pixels.
    """

    def __init__(self, executable: str | None = None, width: int = 1200, height: int = 700):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError("no Chromium executable found")
        self.width, self.height = int(width), int(height)
        self._profile = tempfile.TemporaryDirectory(prefix="splatdistill-chromium-")
        to_child_r, self._to_child_w = os.pipe()
        self._from_child_r, from_child_w = os.pipe()

        def put_on_3_and_4():  # in the child, before exec
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [
            self.executable,
            *FLAGS,
            f"--user-data-dir={self._profile.name}",
            "--remote-debugging-pipe",
            f"--window-size={self.width},{self.height}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=put_on_3_and_4,
            pass_fds=(3, 4),
            start_new_session=True,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._next_id = 0
        self._lock = threading.Lock()
        self._responses: dict[int, dict] = {}
        self._cv = threading.Condition()
        self.console: list[str] = []
        self.requests: list[str] = []  # every URL the page asked for
        self._stderr: list[bytes] = []
        threading.Thread(target=self._read_loop, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.session = None
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Network.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )

    # -- protocol ---------------------------------------------------------------------------
    def _drain_stderr(self):
        for line in self.proc.stderr:
            self._stderr.append(line)
            del self._stderr[:-50]

    def _read_loop(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_child_r, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cv:
                    self._responses[-1] = {"closed": True}
                    self._cv.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cv:
                        self._responses[msg["id"]] = msg
                        self._cv.notify_all()
                elif msg.get("method") == "Network.requestWillBeSent":
                    self.requests.append(msg["params"]["request"]["url"])
                elif msg.get("method") == "Runtime.consoleAPICalled":
                    args = msg["params"].get("args", [])
                    self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
                elif msg.get("method") == "Runtime.exceptionThrown":
                    d = msg["params"]["exceptionDetails"]
                    self.console.append("exception: " + str(d.get("exception", {}).get("description", d.get("text"))))

    def send(self, method: str, params: dict | None = None, timeout: float = 60.0) -> dict:
        """Send one DevTools command and wait for its answer.

        Args:
            method: The protocol method, e.g. ``"Page.navigate"``.
            params: Its parameters.
            timeout: Seconds to wait.

        Returns:
            The ``result`` dict. An error answer, a timeout or a dead browser raises ``BrowserError``.
        """
        with self._lock:
            self._next_id += 1
            i = self._next_id
        msg = {"id": i, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._to_child_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cv:
            while i not in self._responses:
                if -1 in self._responses:
                    raise BrowserError(f"Chromium exited: {b''.join(self._stderr[-5:]).decode(errors='replace')}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError(f"no answer to {method} in {timeout:.0f} s")
                self._cv.wait(left)
            resp = self._responses.pop(i)
        if "error" in resp:
            raise BrowserError(f"{method}: {resp['error'].get('message')}")
        return resp.get("result", {})

    # -- page -------------------------------------------------------------------------------
    def goto(self, url: str) -> None:
        """Navigate the page to ``url``."""
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str, timeout: float = 60.0):
        """Evaluate a JavaScript expression in the page (promises awaited).

        Args:
            expression: The expression.
            timeout: Seconds to wait.

        Returns:
            Its value, as JSON decodes it. An exception in the page raises ``BrowserError``.
        """
        r = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, timeout=timeout
        )
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise BrowserError(f"page error: {d.get('exception', {}).get('description', d.get('text'))}")
        return r.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, interval: float = 0.1):
        """Poll ``expression`` until it is truthy.

        Args:
            expression: A JavaScript expression.
            timeout: Seconds before ``BrowserError``.
            interval: Seconds between polls.

        Returns:
            Its first truthy value.
        """
        deadline = time.monotonic() + timeout
        while True:
            v = self.evaluate(expression)
            if v:
                return v
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout:.0f} s waiting for: {expression}")
            time.sleep(interval)

    def key(self, key: str) -> None:
        """Press and release one printable key (e.g. ``"t"``) in the page."""
        for kind in ("keyDown", "keyUp"):
            self.send(
                "Input.dispatchKeyEvent",
                {
                    "type": kind,
                    "key": key,
                    "text": key if kind == "keyDown" else "",
                    "code": f"Key{key.upper()}" if key.isalpha() else "",
                },
            )

    def drag(self, x0: float, y0: float, x1: float, y1: float, steps: int = 5, button: str = "left") -> None:
        """Press the mouse at (x0, y0), move to (x1, y1) in ``steps`` moves, release (CSS pixels)."""
        self.send(
            "Input.dispatchMouseEvent",
            {"type": "mousePressed", "x": x0, "y": y0, "button": button, "buttons": 1, "clickCount": 1},
        )
        for i in range(1, steps + 1):
            x, y = x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps
            self.send(
                "Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y, "button": button, "buttons": 1}
            )
        self.send(
            "Input.dispatchMouseEvent",
            {"type": "mouseReleased", "x": x1, "y": y1, "button": button, "buttons": 0, "clickCount": 1},
        )

    def screenshot(self, clip: dict | None = None) -> bytes:
        """PNG bytes of the page, or of a part of it.

        Args:
            clip: ``{x, y, width, height}`` in CSS pixels, or None for the whole viewport.

        Returns:
            The PNG file.
        """
        params = {"format": "png", "captureBeyondViewport": False}
        if clip:
            params["clip"] = {**{k: float(clip[k]) for k in ("x", "y", "width", "height")}, "scale": 1}
        return base64.b64decode(self.send("Page.captureScreenshot", params)["data"])

    def close(self) -> None:
        """Close the browser and its pipes (idempotent)."""
        try:
            if self.proc.poll() is None:
                try:
                    self.send("Browser.close", timeout=5)
                except BrowserError:
                    pass
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=5)
        finally:
            for fd in (self._to_child_w, self._from_child_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._profile.cleanup()

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
