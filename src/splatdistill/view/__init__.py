"""A local browser viewer: several models side by side from one camera (``splatdistill view``)."""

from splatdistill.view.server import DEFAULT_PORT, LOOPBACK, make_server, view_command

__all__ = ["make_server", "view_command", "DEFAULT_PORT", "LOOPBACK"]
