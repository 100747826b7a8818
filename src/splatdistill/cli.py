"""The ``splatdistill`` command line: tyro over the commands' dataclasses (``commands.registry``).

Each command is a dataclass whose fields are its flags (their docstrings the help) and whose
``run()`` does the work. Errors a user can cause end with one line on stderr naming the file and the
problem and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import tyro

from splatdistill.commands.registry import COMMANDS
from splatdistill.errors import UserError

__all__ = ["COMMANDS", "main", "parse_error_message"]


def main(argv: list[str] | None = None) -> int:
    """Run ``splatdistill`` on ``argv``.

    Args:
        argv: the command line without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0, 2 for an error a user can cause (one line on stderr), 130 on Ctrl-C, 141 when
        stdout's reader left.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or bool(os.environ.get("SPLATDISTILL_DEBUG"))
    args = [a for a in args if a != "--debug"]
    if args[:1] == ["batch"]:  # the sub-command's flags pass through tyro unparsed (batch.py parses them)
        args = ["batch", "--", *args[1:]]
    try:
        try:
            _run(args)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not at exit
    except UserError as e:
        if debug:
            raise
        return _error(str(e))
    except BrokenPipeError:  # `splatdistill info m.ply --json | head -c1`: the reader left; stay quiet
        _silence_stdout()
        return 141
    except KeyboardInterrupt:
        _close_progress_bars()
        print("splatdistill: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # no permission, read-only file system, disk full, ... (mid-run)
        if debug or e.errno not in _USER_ERRNOS:
            raise
        where = e.filename if e.filename is not None else ""
        return _error(f"{where}: {(e.strerror or str(e)).lower()}" if where else (e.strerror or str(e)).lower())
    except Exception as e:  # out of memory (host or GPU) is the user's to fix; anything else is a bug
        if debug or not _is_out_of_memory(e):
            raise
        return _error("out of memory (try --downscale, fewer Gaussians or --device cpu)")
    return 0


_USER_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.ENOTDIR,
    errno.EEXIST,
    errno.EISDIR,
    errno.ENAMETOOLONG,
    errno.EMFILE,
    errno.ENFILE,
    errno.ENOENT,
}


def _error(message: str) -> int:
    _close_progress_bars()
    print(f"splatdistill: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return 2


def _close_progress_bars() -> None:
    """Clear the progress bars a failed job left open, so its message starts on a clean line."""
    try:
        from tqdm import tqdm

        for bar in list(getattr(tqdm, "_instances", ())):
            bar.leave = False
            bar.close()
    except Exception:
        pass


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


# --- one error path for tyro's parse errors ---------------------------------------------------------------
class _ParseCapture:
    """While tyro parses, stderr is captured and parse errors become one line (``UserError``).

    tyro's error hook (``tyro._errors.on_parse_error``) gives the structured error; where it is absent
    or the event is of a kind not known here, tyro's printed box is flattened to its first message
    instead. Capture ends once the command line is parsed (``end()``), before the command runs."""

    def __init__(self, args: list[str]):
        self.args = args
        self.buffer = None
        self.saved = None

    def __enter__(self):
        import io

        self.saved, self.buffer = sys.stderr, io.StringIO()
        sys.stderr = self.buffer
        return self

    def end(self) -> None:
        if self.saved is not None:
            sys.stderr, self.saved = self.saved, None
            text = self.buffer.getvalue()
            if text:
                sys.stderr.write(text)  # warnings printed while parsing

    def __exit__(self, exc_type, exc, tb) -> bool:
        parsing = self.saved is not None  # False once the command runs: its own exits pass through
        captured = self.buffer.getvalue() if parsing else ""
        if parsing:
            sys.stderr, self.saved = self.saved, None
        if parsing and exc_type is SystemExit and exc.code not in (0, None):
            raise UserError(_flatten_box(captured) or "invalid command line (see splatdistill --help)") from None
        if captured and exc_type is not None and exc_type is not _ParseError:
            sys.stderr.write(captured)  # --help, or an error that is not tyro's
        return False


def _command_of(args: list[str]) -> str | None:
    for a in args:
        if not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def _flags_of(name: str) -> list[str]:
    from splatdistill.commands.registry import flags_of

    try:
        return flags_of(name) + ["--debug"]
    except Exception:  # another tyro: no suggestions
        return ["--help", "--debug"]


def _nearest(word: str, choices: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]}?" if close else ""


def _arg_name(arg) -> str:
    try:
        if arg.is_positional():
            return str(arg.field.extern_name).upper().replace("-", "_")
        return "/".join(arg.lowered.name_or_flags)
    except Exception:
        return "an argument"


def _value_of(flag: str, args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _expected(arg) -> str:
    import typing

    try:
        t = arg.field.type_stripped
        kinds = [a for a in typing.get_args(t) if a is not type(None)] or [t]
        names = {int: "an integer", float: "a number", bool: "true or false", Path: "a path", str: "text"}
        if len(kinds) == 1 and kinds[0] in names:
            return names[kinds[0]]
        return str(arg.lowered.metavar)
    except Exception:
        return "another kind of value"


def parse_error_message(event, args: list[str]) -> str | None:
    """One line for a tyro parse-error event, or None for a kind not known here (tyro's printed box
    is then flattened instead).

    Args:
        event: the event tyro's error hook gives.
        args: the command line (without the program name).

    Returns:
        The message (without the ``splatdistill: error:`` prefix), or None.
    """
    import tyro._errors as te

    cmd = _command_of(args)
    if isinstance(event, te.InvalidChoice):
        choices = ", ".join(str(c) for c in event.choices)
        return f"{_arg_name(event.argument)}: invalid choice '{event.value}' (choose from {choices})"
    if isinstance(event, te.InstantiationFailure):
        if event.argument is None:
            return event.message.splitlines()[0]
        name = _arg_name(event.argument)
        value = _value_of(name.split("/")[0], args)
        got = f", got '{value}'" if value is not None else ""
        return f"{name}: expected {_expected(event.argument)}{got}"
    if isinstance(event, te.UnrecognizedArgs):
        tok = event.tokens[0] if event.tokens else ""
        if cmd is None:
            first = next((a for a in args if not a.startswith("-")), None)
            names = list(COMMANDS)
            if first is None:
                return f"unrecognized option {tok} (give a command first: {', '.join(names)})"
            return f"unknown command '{first}' (choose from {', '.join(names)}){_nearest(first, names)}"
        if tok.startswith("-"):
            return f"{cmd}: unrecognized option {tok.split('=')[0]}{_nearest(tok.split('=')[0], _flags_of(cmd))}"
        return f"{cmd}: unexpected argument '{tok}' (see splatdistill {cmd} --help)"
    if isinstance(event, te.MissingArgs):
        names = [_arg_name(a.arg) for a in event.missing_arguments]
        where = f"{cmd}: " if cmd else ""
        return (
            f"{where}missing required {'argument' if len(names) == 1 else 'arguments'} {', '.join(names)} "
            f"(see splatdistill {cmd or ''} --help)".replace("  ", " ")
        )
    if isinstance(event, te.MissingSubcommand):
        return f"missing command (choose from {', '.join(COMMANDS)})"
    if isinstance(event, te.BadValue):
        return f"{_arg_name(event.argument)}: " + (
            "expected a value"
            if event.offending_value is None
            else f"does not take the value '{event.offending_value}'"
        )
    return None


def _flatten_box(text: str) -> str:
    """The first message of one of tyro's error boxes, on one line (title: message)."""
    rows, title = [], ""
    for line in text.splitlines():
        inner = line.strip().strip("│").strip()
        if line.strip().startswith("╭"):
            title = line.strip().strip("╭╮─ ").strip()
            continue
        if line.strip().startswith("╰"):
            break
        if set(inner) <= set("─ ") and inner:
            break  # the first rule ends the message
        if inner:
            rows.append(inner)
    msg = " ".join(rows)
    if title and msg and not msg.lower().startswith(title.lower()):
        return f"{title.lower()}: {msg}"
    return msg or title


def _run(args: list[str]) -> None:
    """Parse ``args`` into a command (parse errors become one-line user errors) and run it."""
    capture = _ParseCapture(args)

    def hook(event):
        if capture.saved is None:  # the command runs (e.g. batch parsing its jobs' flags): tyro's own way
            return
        try:
            msg = parse_error_message(event, args)
        except Exception:  # an event shaped differently in another tyro: its box is flattened instead
            msg = None
        if msg is not None:
            raise _ParseError(msg)

    try:
        import tyro._errors as te

        on_error = te.on_parse_error(hook)
    except (ImportError, AttributeError):  # another tyro: the box is flattened instead
        import contextlib

        on_error = contextlib.nullcontext()
    try:
        with capture, on_error:
            command = tyro.extras.subcommand_cli_from_dict(
                COMMANDS,
                prog="splatdistill",
                args=args,
                description="splatdistill: make 3D Gaussian Splatting scenes small and fast. "
                "Add --debug to any command to see tracebacks.",
            )
            capture.end()
    except _ParseError as e:
        raise UserError(str(e)) from None
    command.run()


class _ParseError(Exception):
    pass


def _is_out_of_memory(e: BaseException) -> bool:
    """MemoryError, torch's (CUDA) OutOfMemoryError, or the CPU allocator's failure message."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


if __name__ == "__main__":
    sys.exit(main())
