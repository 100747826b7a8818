"""The student ablation benchmark measures what its rows say: every row but ground truth only trains with
a teacher term (the student's default has none, so a row that forgot the weight would silently be ``gt``)."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest

from splatdistill.distill.config import TEACHER_WEIGHT, StudentConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "student_rows.py"


def _rows() -> dict:
    spec = importlib.util.spec_from_file_location("student_rows", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ROWS


ROWS = _rows()


@pytest.mark.parametrize("row", sorted(ROWS))
def test_row_is_a_distinct_valid_student(row):
    cfg = replace(StudentConfig(), **ROWS[row])
    cfg.validate()
    if row == "gt":
        assert cfg.lambda_kd == 0.0
    else:
        assert cfg.lambda_kd == TEACHER_WEIGHT, f"row {row} trains without the teacher term"
    others = [name for name in ROWS if name != row and replace(StudentConfig(), **ROWS[name]) == cfg]
    assert not others, f"rows {row} and {others} train the same student"


def _rd_module():
    path = SCRIPT.parent / "rd_vs_splat_transform.py"
    spec = importlib.util.spec_from_file_location("rd_vs_splat_transform", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rd_benchmark_codec_knobs_are_valid_compress_settings():
    """Every coarser codec setting the equal-quality search tries is one ``compress`` accepts, and
    coarser than the finest preset codec (high's); ``--point`` specs parse into settings too."""
    from helpers import random_scene
    from splatdistill.compress.config import CompressConfig
    from splatdistill.compress.trainingfree import CODEC
    from splatdistill.validate import check_config

    rd = _rd_module()
    default = CompressConfig()
    for knob, values in rd.KNOBS.items():
        assert values == sorted(values, reverse=True), knob
        for v in values:
            kw = rd.codec_kw({knob: v}, 1000)
            cfg = replace(default, **kw)
            check_config(cfg)
            if knob == "palette":
                assert 1 <= kw["palette_size"] < 1000
            else:
                finest = {**CODEC["high"], "rotation_bits": CODEC["high"]["quat_bits"]}[knob]
                assert v < finest, knob  # coarser than the finest preset codec
    # the refinements, tried alone and in combinations: valid settings, finer than the run's codec
    for preset, codec in CODEC.items():
        codec = {**{k: v for k, v in codec.items() if k != "quat_bits"}, "rotation_bits": codec["quat_bits"]}
        for knob, values in rd.finer_values(codec).items():
            assert values == sorted(values, reverse=True), (preset, knob)
            for v in values:
                check_config(replace(default, **rd.codec_kw({knob: v}, 64)))
                assert v > (1.0 if knob == "palette" else codec[knob]), (preset, knob)
    assert rd.finer_values({"position_bits": 16, "rotation_bits": 15, "opacity_bits": 9, "codebook_levels": 128}) == {
        "palette": [4.0, 2.0],
        "position_bits": [],
        "rotation_bits": [16],
        "opacity_bits": [11, 10],
        "codebook_levels": [512, 256],
    }
    scene = random_scene(50, degree=2)
    label, kw = rd.parse_point("p0:quality=high,prune=0,sh_degree=input,rotation_bits=10", scene)
    assert label == "p0" and kw == {"quality": "high", "prune": 0, "sh_degree": 2, "rotation_bits": 10}
    check_config(replace(default, **kw))
    assert replace(default, **kw).settings(scene.sh_degree)["prune"] == 0.0


def test_set_overrides_are_typed_like_the_field():
    spec = importlib.util.spec_from_file_location("student_rows", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.parse_set("kd_anneal=0.75") == ("kd_anneal", 0.75)
    assert module.parse_set("iterations=500") == ("iterations", 500)
    assert module.parse_set("teacher_margin_db=0.5") == ("teacher_margin_db", 0.5)
    assert module.parse_set("kd_views=pseudo") == ("kd_views", "pseudo")
    with pytest.raises(SystemExit):
        module.parse_set("no_such_field=1")


def test_rd_goal_picks_an_output_that_meets_it_over_a_sharper_slow_one():
    rd = _rd_module()

    def row(tool, output, nbytes, psnr, sec):
        return {"model": "m", "tool": tool, "output": output, "bytes": nbytes, "psnr": psnr, "seconds": sec}

    st = row("splat-transform", "compressed ply", 1000, 50.0, 1.0)
    fast = row("ours", "sdz high", 900, 60.0, 4.0)
    slow = row("ours", "sdz prune20", 950, 70.0, 6.0)
    big = row("ours", "sdz prune0", 1100, 80.0, 1.0)  # more bytes: never a candidate
    (g,) = rd.goal_check([st, fast, slow, big])
    assert g["ours"] == "sdz high" and g["met"] and g["time_ratio"] == 4.0
    (g,) = rd.goal_check([st, slow, big])  # nothing meets it: the best PSNR at no more bytes, not met
    assert g["ours"] == "sdz prune20" and not g["met"]
    (g,) = rd.goal_check([st, row("ours", "sdz small", 500, 50.5, 0.1)])  # under 1 dB better
    assert not g["met"] and abs(g["margin_db"] - 0.5) < 1e-9
