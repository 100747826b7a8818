"""The commands of ``splatdistill``: name -> the dataclass tyro builds from the command line.

Each dataclass is the command's settings (its fields are its flags and positional arguments, their
docstrings the help) and its ``run()`` does the work. ``cli`` parses into one of them; ``batch``
parses every job's flags into one."""

from __future__ import annotations

from splatdistill.commands.batch import BatchCommand
from splatdistill.commands.compress import CompressCommand
from splatdistill.commands.convert import ConvertCommand
from splatdistill.commands.demo import DemoCommand
from splatdistill.commands.distill import DistillCommand
from splatdistill.commands.eval import EvalCommand
from splatdistill.commands.info import InfoCommand
from splatdistill.commands.make_scene import MakeSceneCommand
from splatdistill.commands.metrics import MetricsCommand
from splatdistill.commands.render import RenderCommand
from splatdistill.commands.train import TrainCommand
from splatdistill.commands.view import ViewCommand

COMMANDS: dict[str, type] = {
    "info": InfoCommand,
    "convert": ConvertCommand,
    "make-scene": MakeSceneCommand,
    "render": RenderCommand,
    "train": TrainCommand,
    "eval": EvalCommand,
    "metrics": MetricsCommand,
    "distill": DistillCommand,
    "demo": DemoCommand,
    "compress": CompressCommand,
    "batch": BatchCommand,
    "view": ViewCommand,
}
"""Every command, in the order ``splatdistill --help`` lists them."""


def flags_of(name: str) -> list[str]:
    """Every option string of command ``name`` as tyro builds it (``--help`` included)."""
    import warnings

    import tyro

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        parser = tyro.extras.get_parser(COMMANDS[name])
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
