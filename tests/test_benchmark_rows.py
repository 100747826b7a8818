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
