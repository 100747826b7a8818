"""The command line's help and its compatibility: every flag of every command describes itself in
``--help``, every flag (and its default) of the command line as it was before the commands became
dataclasses still parses, and ``--flag`` errors name the flag."""

from __future__ import annotations

import re
import typing
import warnings

import pytest

from conftest import assert_one_line_error, run_cli
from splatdistill.commands.registry import COMMANDS

# Every option of every command before the commands became dataclasses, with the default its help
# showed ("required" for a required option). Every one must still parse, with that default.
TODAY = {
    "info": {"--json/--no-json": "default: False"},
    "convert": {"--spz-version": "default: None"},
    "make-scene": {
        "--resolution": "default: 128",
        "--train-views": "default: 100",
        "--test-views": "default: 20",
        "--seed": "default: 0",
    },
    "render": {
        "--out": "required",
        "--data": "default: None",
        "--split": "default: test",
        "--orbit": "default: None",
        "--cameras": "default: None",
        "--width": "default: None",
        "--height": "default: None",
        "--backend": "default: auto",
        "--downscale": "default: 1",
        "--device": "default: auto",
        "--overwrite/--no-overwrite": "default: False",
    },
    "train": {
        "--out": "required",
        "--iterations": "default: 3000",
        "--variant": "default: vanilla",
        "--downscale": "default: 1",
        "--device": "default: auto",
        "--strategy": "default: default",
        "--seed": "default: 0",
        "--resume/--no-resume": "default: False",
        "--branch-from": "default: None",
        "--checkpoint-every": "default: 500",
        "--init-points": "default: 20000",
        "--background": "default: auto",
        "--train-views": "default: None",
        "--eval/--no-eval": "default: True",
        "--overwrite/--no-overwrite": "default: False",
    },
    "eval": {
        "--data": "required",
        "--split": "default: test",
        "--out": "default: None",
        "--downscale": "default: 1",
        "--backend": "default: auto",
        "--device": "default: auto",
        "--lpips/--no-lpips": "default: True",
        "--json/--no-json": "default: False",
    },
    "metrics": {"--json/--no-json": "default: False"},
    "distill": {
        "--out": "required",
        "--teachers": "default: None",
        "--keep": "default: 0.12",
        "--target-gaussians": "default: None",
        "--iterations": "default: 3000",
        "--teacher-iterations": "default: 3000",
        "--teacher-init-points": "default: 20000",
        "--background": "default: auto",
        "--train-views": "default: None",
        "--student-init": "default: teacher",
        "--struct": "default: none",
        "--lambda-struct": "default: 0.01",
        "--lambda-kd": "default: 0.0",
        "--lambda-gt": "default: 1.0",
        "--kd-views": "default: all",
        "--kd-weight": "default: uniform",
        "--kd-spread-scale": "default: 0.05",
        "--kd-anneal": "default: 0.0",
        "--kd-far": "default: 1.0",
        "--teacher-margin-db": "default: None",
        "--score": "default: significance",
        "--prune-policy": "default: significance",
        "--pseudo-views": "default: None",
        "--downscale": "default: 1",
        "--device": "default: auto",
        "--seed": "default: 0",
        "--ablation/--no-ablation": "default: False",
        "--resume/--no-resume": "default: False",
        "--overwrite/--no-overwrite": "default: False",
    },
    "demo": {
        "--out": "default: demo_out",
        "--teacher-iterations": "default: 1500",
        "--student-iterations": "default: 1000",
        "--resolution": "default: 128",
        "--compress-iterations": "default: 300",
        "--overwrite/--no-overwrite": "default: False",
    },
    "compress": {
        "--out": "required",
        "--data": "default: None",
        "--quality": "default: balanced",
        "--prune": "default: None",
        "--sh-degree": "default: None",
        "--vq-size": "default: None",
        "--vq-ratio": "default: None",
        "--prune-policy": "default: significance",
        "--rvq-stages": "default: 0",
        "--rvq-size": "default: 64",
        "--sweep/--no-sweep": "default: False",
        "--downscale": "default: 1",
        "--iterations": "default: 1000",
        "--views": "default: 48",
        "--resolution": "default: 192",
        "--spz/--no-spz": "default: True",
        "--spz-version": "default: 4",
        "--lpips/--no-lpips": "default: True",
        "--device": "default: auto",
        "--seed": "default: 0",
        "--overwrite/--no-overwrite": "default: False",
        "--training-free/--no-training-free": "default: True",
        "--refine": "default: 0",
        "--importance-views": "default: 8",
        "--merge/--no-merge": "default: True",
        "--lod": "default: None",
    },
    "view": {
        "--port": "default: 8765",
        "--host": "default: 127.0.0.1",
        "--data": "default: None",
        "--downscale": "default: 1",
    },
}

# the positional arguments, in order
POSITIONALS = {
    "info": 1,
    "convert": 2,
    "make-scene": 1,
    "render": 1,
    "train": 1,
    "eval": 1,
    "metrics": 2,
    "distill": 1,
    "demo": 0,
    "compress": 1,
    "batch": 1,
    "view": 1,
}


def parser_of(name: str):
    import tyro

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return tyro.extras.get_parser(COMMANDS[name])


def actions(name: str) -> list:
    """Every argument of command ``name`` but --help."""
    return [a for a in parser_of(name)._actions if "--help" not in a.option_strings]


def description(help_text: str | None) -> str:
    """An argument's help without the "(default: ...)" / "(required)" tyro appends."""
    return re.sub(r"\s*\((default: [^()]*|required)\)\s*$", "", help_text or "", flags=re.S).strip()


def default_of(help_text: str | None) -> str:
    m = re.search(r"\((default: [^()]*|required)\)\s*$", help_text or "", re.S)
    return m.group(1) if m else ""


def test_the_registry_lists_every_command():
    assert list(COMMANDS) == list(POSITIONALS)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_argument_has_a_description(name):
    missing = ["/".join(a.option_strings) or a.dest for a in actions(name) if not description(a.help)]
    assert not missing, f"{name}: no help text for {missing}"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_positional_arguments_stay_positional(name):
    assert sum(1 for a in actions(name) if not a.option_strings) == POSITIONALS[name]


@pytest.mark.parametrize("name", list(TODAY))
def test_every_earlier_flag_keeps_its_name_and_default(name):
    now = {"/".join(a.option_strings): default_of(a.help) for a in actions(name) if a.option_strings}
    for flags, default in TODAY[name].items():
        assert flags in now, f"{name}: {flags} is gone"
        assert now[flags] == default, f"{name} {flags}: default was '{default}', now '{now[flags]}'"


def sample_value(action) -> list[str]:
    """A value the option accepts (none for a switch)."""
    if action.nargs == 0:
        return []
    if action.choices:
        return [str(next(c for c in action.choices if str(c) != "None"))]
    metavar = str(action.metavar)
    kinds = re.findall(r"INT|FLOAT|PATH|STR", metavar)
    value = {"INT": "2", "FLOAT": "0.5", "PATH": "some/path", "STR": "text"}[kinds[-1] if kinds else "STR"]
    return [value] * max(1, metavar.count(kinds[-1]) if kinds and "{" not in metavar.split("|")[-1][:1] else 1)


def required_args(name: str) -> list[str]:
    args = []
    for a in actions(name):
        if not a.option_strings:
            args.append("x")
        elif default_of(a.help) == "required":
            args += [a.option_strings[0], *sample_value(a)]
    return args


@pytest.mark.parametrize("name", list(TODAY))
def test_every_earlier_flag_still_parses(name):
    import tyro

    by_flag = {s: a for a in actions(name) for s in a.option_strings}
    for flags in TODAY[name]:
        for flag in flags.split("/"):
            args = required_args(name) + [flag, *sample_value(by_flag[flag])]
            cmd = tyro.cli(COMMANDS[name], args=args)
            assert type(cmd) is COMMANDS[name], (name, args)


def test_explicit_flags_override_the_preset():
    import tyro

    from splatdistill.compress.config import PRESETS

    cmd = tyro.cli(COMMANDS["compress"], args=["m.ply", "--out", "o", "--quality", "small", "--prune", "0.1"])
    s = cmd.config().settings(3)
    small = PRESETS["small"]
    assert (s["quality"], s["prune"], s["sh_degree"], s["vq_ratio"]) == ("small", 0.1, small.sh_degree, small.vq_ratio)


def test_flags_reach_the_configs():
    """A flag sets the config field it names, also fields the command line could not set before."""
    import tyro

    cmd = tyro.cli(
        COMMANDS["train"],
        args=["d", "--out", "o", "--lr-scales", "0.01", "--variant-cfg.noise-scale", "0.2", "--sh-degree", "2"],
    )
    assert (cmd.cfg.lr_scales, cmd.cfg.variant_cfg.noise_scale, cmd.cfg.sh_degree) == (0.01, 0.2, 2)
    cmd = tyro.cli(
        COMMANDS["distill"],
        args=["d", "--out", "o", "--student-init", "sfm", "--prune-steps", "5", "--teacher-iterations", "7"],
    )
    assert (cmd.cfg.student.init, cmd.cfg.student.prune_steps, cmd.cfg.teacher.iterations) == ("sfm", 5, 7)
    cmd = tyro.cli(
        COMMANDS["compress"], args=["m", "--out", "o", "--no-spz", "--no-training-free", "--zstd-level", "3"]
    )
    c = cmd.config()
    assert (c.write_spz, c.training_free, c.zstd_level) == (False, False, 3)
    assert tyro.cli(COMMANDS["compress"], args=["m", "--out", "o"]).config().training_free is None


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "d", "--out", "o", "--iterations", "0"], "--iterations"),
        (["train", "d", "--out", "o", "--lr-scales", "-1"], "--lr-scales"),
        (["train", "d", "--out", "o", "--sh-degree", "4"], "--sh-degree"),
        (["train", "d", "--out", "o", "--variant-cfg.noise-scale", "inf"], "--variant-cfg.noise-scale"),
        (["distill", "d", "--out", "o", "--keep", "0"], "--keep"),
        (["distill", "d", "--out", "o", "--teacher-init-points", "0"], "--teacher-init-points"),
        (["distill", "d", "--out", "o", "--teacher.sh-degree", "4"], "--teacher.sh-degree"),
        (["compress", "m", "--out", "o", "--resolution", "4"], "--resolution"),
        (["compress", "m", "--out", "o", "--views", "0"], "--views"),
        (["compress", "m", "--out", "o", "--up", "0", "nan", "1"], "--up"),
        (["render", "m", "--out", "o", "--orbit", "0"], "--orbit"),
        (["make-scene", "o", "--resolution", "0"], "--resolution"),
    ],
)
def test_bad_values_name_the_flag_before_any_work(capsys, tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, needle)
    assert not list(tmp_path.iterdir()), "something was written before the check"


def test_literal_choices_match_the_library():
    """The choices the configs spell out (to read the command line without torch) are the library's."""
    from splatdistill.distill import config
    from splatdistill.ops import importance, policies

    assert typing.get_args(config.Score) == typing.get_args(importance.Score)
    assert typing.get_args(config.PolicyName) == typing.get_args(policies.PolicyName) == policies.POLICIES


def test_batch_help_describes_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(capsys, "batch", "--help")
    assert e.value.code == 0
    out = capsys.readouterr().out
    from splatdistill.commands.batch import USAGE

    for opt in re.findall(r"^  (--[a-z-]+)", USAGE, re.M):
        line = next(l for l in out.splitlines() if l.startswith("  " + opt))
        assert line[len(opt) + 2 :].strip(), f"batch {opt} has no description"


def test_the_teachers_train_with_the_distill_flags():
    import tyro

    cmd = tyro.cli(
        COMMANDS["distill"],
        args=[
            "d",
            "--out",
            "o",
            "--teacher-iterations",
            "40",
            "--seed",
            "3",
            "--background",
            "random",
            "--teacher-init-points",
            "300",
        ],
    )
    t = cmd.cfg.teacher_train_config()
    assert (t.iterations, t.seed, t.background, t.init_points, t.variant) == (40, 3, "random", 300, "vanilla")
    assert t.branch_points == (t.branch_iteration(),)
    assert type(t).__name__ == "TrainConfig"  # what each teacher's run folder records


def test_every_teacher_training_setting_is_a_distill_flag():
    """DistillConfig holds the teachers' TrainConfig: its settings are --teacher.NAME; the ones distill
    decides itself (variant, seed, background, device, size, views, checkpoints) are not flags."""
    import dataclasses

    import tyro

    from splatdistill.train.config import TrainConfig

    cmd = tyro.cli(
        COMMANDS["distill"],
        args=[
            "d",
            "--out",
            "o",
            "--teacher.strategy",
            "mcmc",
            "--teacher.lr-scales",
            "0.01",
            "--teacher.variant-cfg.noise-scale",
            "0.3",
        ],
    )
    t = cmd.cfg.teacher_train_config()
    assert (t.strategy, t.lr_scales, t.variant_cfg.noise_scale) == ("mcmc", 0.01, 0.3)
    default = tyro.cli(COMMANDS["distill"], args=["d", "--out", "o"]).cfg.teacher_train_config()
    changed = {f.name for f in dataclasses.fields(TrainConfig) if getattr(t, f.name) != getattr(default, f.name)}
    assert changed == {"strategy", "lr_scales", "variant_cfg"}
    flags = {a.option_strings[0] for a in actions("distill") if a.option_strings}
    for hidden in (
        "variant",
        "seed",
        "background",
        "device",
        "downscale",
        "train-views",
        "checkpoint-every",
        "branch-points",
    ):
        assert f"--teacher.{hidden}" not in flags
    assert "--teacher.strategy" in flags and "--teacher-iterations" in flags


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--data", "d", "--position-bits", "12"], "--position-bits"),
        (["--data", "d", "--lod", "1,0.5"], "--lod"),
        (["--no-training-free", "--palette-size", "64"], "--palette-size"),
        (["--no-training-free", "--refine", "5"], "--refine"),
    ],
)
def test_training_free_settings_on_the_fine_tuning_path_are_refused(capsys, tmp_path, monkeypatch, extra, needle):
    """A training-free-only setting would be ignored with --data or --no-training-free: refused before any work."""
    from helpers import write_model

    monkeypatch.chdir(tmp_path)
    write_model(tmp_path / "m.ply")
    (tmp_path / "d").mkdir()
    code, _, err = run_cli(capsys, "compress", "m.ply", "--out", "o", *extra)
    assert_one_line_error(code, err, needle, "training-free")
    assert not (tmp_path / "o").exists()
