"""Flag values checked against their meaning, before any work, with one message style.

Every command checks its whole settings dataclass with :func:`check_config` first; library configs
(``TrainConfig.validate``, ``StudentConfig.validate``) use :func:`check` too. A rejected value is a
``UserError`` naming the flag: ``--width: must be at least 1, got 0``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass

from splatdistill.errors import UserError


@dataclass(frozen=True)
class Rule:
    """A number's allowed range: ``minimum <= v <= maximum``; ``above`` / ``below`` are exclusive."""

    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None


SIZE = Rule(minimum=1)  # counts and sizes: at least 1
COUNT = Rule(minimum=0)  # may be 0
FRACTION = Rule(above=0, maximum=1)  # (0, 1]
WEIGHT = Rule(minimum=0)

# Flag meanings shared by the commands (a command may override one, e.g. compress --iterations 0).
RULES: dict[str, Rule] = {
    "iterations": SIZE,
    "teacher_iterations": SIZE,
    "student_iterations": SIZE,
    "compress_iterations": COUNT,
    "width": SIZE,
    "height": SIZE,
    "orbit": SIZE,
    "downscale": SIZE,
    "resolution": SIZE,
    "train_views": SIZE,
    "test_views": COUNT,
    "init_points": SIZE,
    "teacher_init_points": SIZE,
    "checkpoint_every": SIZE,
    "views": SIZE,
    "target_gaussians": SIZE,
    "pseudo_views": COUNT,
    "vq_size": SIZE,
    "rvq_stages": COUNT,
    "rvq_size": Rule(minimum=1, maximum=65536),
    "seed": Rule(minimum=0),
    "sh_degree": Rule(minimum=0, maximum=3),
    "keep": FRACTION,
    "prune": Rule(minimum=0, below=1),
    "vq_ratio": Rule(minimum=0, maximum=1),
    "lambda_struct": WEIGHT,
    "lambda_depth": WEIGHT,
    "lambda_kd": WEIGHT,
    "lambda_gt": WEIGHT,
    "refine": COUNT,
    "importance_views": COUNT,
    "position_bits": Rule(minimum=8, maximum=16),
    "rotation_bits": Rule(minimum=4, maximum=16),
    "opacity_bits": Rule(minimum=4, maximum=16),
    "codebook_levels": Rule(minimum=2, maximum=65536),
}


def flag(name: str) -> str:
    return name if name.startswith("-") else "--" + name.replace("_", "-")


def _fmt(v) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def check(name: str, value, rule: Rule | None = None):
    """Return ``value`` if it is a finite number within ``rule``; otherwise raise a one-line UserError.
    None (an unset optional flag) and non-numbers pass."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    f = flag(name)
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"must be a finite number, got {value}", f)
    if rule is None:
        return value
    if rule.minimum is not None and value < rule.minimum:
        raise UserError(_range_msg(rule, value), f)
    if rule.maximum is not None and value > rule.maximum:
        raise UserError(_range_msg(rule, value), f)
    if rule.above is not None and not value > rule.above:
        raise UserError(_range_msg(rule, value), f)
    if rule.below is not None and not value < rule.below:
        raise UserError(_range_msg(rule, value), f)
    return value


def _range_msg(rule: Rule, value) -> str:
    lo = (
        None
        if rule.minimum is None and rule.above is None
        else ("[" + _fmt(rule.minimum))
        if rule.minimum is not None
        else ("(" + _fmt(rule.above))
    )
    hi = (
        None
        if rule.maximum is None and rule.below is None
        else (_fmt(rule.maximum) + "]")
        if rule.maximum is not None
        else (_fmt(rule.below) + ")")
    )
    if hi is None:
        want = f"at least {_fmt(rule.minimum)}" if rule.minimum is not None else f"greater than {_fmt(rule.above)}"
    elif lo is None:
        want = f"at most {_fmt(rule.maximum)}" if rule.maximum is not None else f"less than {_fmt(rule.below)}"
    elif (
        rule.minimum is not None
        and rule.maximum is not None
        and float(rule.minimum).is_integer()
        and float(rule.maximum).is_integer()
        and isinstance(value, int)
    ):
        want = f"in {_fmt(rule.minimum)}..{_fmt(rule.maximum)}"
    else:
        want = f"in {lo}, {hi}"
    return f"must be {want}, got {_fmt(value) if isinstance(value, (int, float)) else value}"


def check_config(cfg, overrides: dict[str, Rule | None] | None = None, prefix: str = "") -> None:
    """Check every numeric field of a settings dataclass before any work: the shared ``RULES`` by
    field name, ``overrides`` (by field name) for this command, every float finite; lists and tuples
    element by element. Nested dataclasses are checked too.

    The flag a message names is the one the command line shows: a field renamed on the command line
    (an ``Annotated`` marker with a ``name``) by that name, the fields of a nested dataclass whose
    marker has the empty name (flattened into its parent) without a prefix, other nested fields as
    ``--outer.inner`` (unless its marker says ``prefix_name=False``).

    Args:
        cfg: a dataclass instance (a command, or a config).
        overrides: rules replacing ``RULES`` for some field names (None: only finiteness).
        prefix: the flag prefix of ``cfg``'s fields (for nested dataclasses).
    """
    overrides = overrides or {}
    try:
        hints = typing.get_type_hints(type(cfg), include_extras=True)
    except Exception:  # an annotation that does not resolve here: field names as they are
        hints = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        cli_name, prefixed = _cli_name(hints.get(f.name))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            inner = prefix if cli_name == "" else f"{prefix}{(cli_name or f.name).replace('_', '-')}."
            check_config(value, overrides, inner)
            continue
        name = "--" + (prefix if prefixed else "") + (cli_name or f.name).replace("_", "-")
        rule = overrides[f.name] if f.name in overrides else RULES.get(f.name)
        for v in value if isinstance(value, (list, tuple)) else (value,):
            check(name, v, rule)


def _cli_name(hint) -> tuple[str | None, bool]:
    """The name an ``Annotated`` marker gives a field on the command line (None: none given), and
    whether the flag carries its nested dataclass's prefix (a marker's ``prefix_name=False``: not)."""
    for m in getattr(hint, "__metadata__", ()):
        name = getattr(m, "name", None)
        if isinstance(name, str):
            return name, getattr(m, "prefix_name", True) is not False
    return None, True
