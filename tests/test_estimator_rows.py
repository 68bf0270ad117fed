"""Smoke test of ``benchmarks/estimator_rows.py``: its references agree with fishertut, and every row is timed."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rows():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT))
        yield importlib.import_module("benchmarks.estimator_rows"), importlib.import_module("benchmarks.workload")


def test_references_agree_and_every_row_is_timed(rows) -> None:
    mod, workload = rows
    problem = workload.make_problem(24, "tanh", sizes=(784, 12, 10))
    errors = mod.check(problem, 8)
    assert set(errors) == {"GNB with given labels vs plain, B=8", "Î1 vs SumGradSquared"}
    assert max(errors.values()) <= mod.TOLERANCE
    med = mod.time_all(mod.methods(problem, [8, 24]), repeats=1)
    rows = mod.rows_of(med)
    for r in rows:
        assert r["reference_s"] == med[r["reference"]]
        assert abs(r["ratio"] - med[r["method"]] / med[r["reference"]]) <= 1e-12 * r["ratio"]
    lines = mod.table(rows).splitlines()
    assert len(lines) == 2 + 2 * 2 + 2
    methods = [line.split("|")[1].strip() for line in lines[2:]]
    assert methods == [
        "GNB, B=8",
        "Hutchinson, B=8",
        "GNB, B=24",
        "Hutchinson, B=24",
        "Î1 per input",
        "Hutchinson per input",
    ]
