"""``splatdistill view``: models side by side in a local browser page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from splatdistill.commands.common import Pos


@dataclass
class ViewCommand:
    """Show models side by side in a local browser page (any format we read), all from one camera:
    orbit/fly controls, t toggles side by side / one at a time, captions give Gaussians, bytes and
    format. --data adds the dataset's cameras to jump to and the ground-truth photo beside the
    renders. Serves on 127.0.0.1 only unless --host says otherwise; --port 0 picks a free port.
    Every asset is local: the page needs no network. Stop with Ctrl-C."""

    models: Pos[list[Path]]
    """the model files."""
    port: int = 8765
    """the port to serve on (0: a free one)."""
    host: str = "127.0.0.1"
    """the address to serve on (anything but loopback lets others see the models)."""
    data: Optional[Path] = None
    """a dataset whose cameras and ground-truth photos the page offers."""
    downscale: int = 1
    """divide the dataset's image size by this factor."""

    def run(self) -> None:
        from splatdistill.view.server import is_loopback, make_server

        server = make_server(self.models, data=self.data, host=self.host, port=self.port, downscale=self.downscale)
        if not is_loopback(self.host):
            from splatdistill.errors import warn

            warn(
                f"serving on {self.host}: anyone who can reach this machine on port "
                f"{server.server_address[1]} can see these models"
            )
        print(f"serving {len(self.models)} model(s) at {server.url}  (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        finally:
            server.server_close()
