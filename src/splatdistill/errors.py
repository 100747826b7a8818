"""Errors a user can cause. The CLI turns them into one line on stderr and exit code 2."""

from __future__ import annotations

import os


class UserError(Exception):
    """A problem with the user's input (a file, a flag, a dataset), not a bug.

    The command line prints it as one line, ``splatdistill: error: [path: ]message``, and exits with
    code 2.

    Args:
        message: What is wrong, in one line.
        path: The file or folder concerned, if any; it is printed before the message.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if self.path:
            return f"{self.path}: {self.message}"
        return self.message


def warn(message: str, path: str | os.PathLike | None = None) -> None:
    """One plain line on stderr: ``splatdistill: warning: [path: ]message``.

    Args:
        message: The warning, in one line.
        path: The file or folder concerned, if any.

    Returns:
        None.
    """
    import sys

    where = f"{path}: " if path is not None else ""
    print(f"splatdistill: warning: {where}{message}", file=sys.stderr, flush=True)
