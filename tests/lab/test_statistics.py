"""Tests of fishertut.lab.statistics: Student's t against table values and closed forms, t intervals, AUROC.

Expected numbers come from printed t tables, the closed-form t distributions with 1 and 2 degrees of
freedom, mpmath's incomplete beta function (an independent implementation) and brute-force pair counts.
"""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fishertut.lab import statistics as stats

# Two-sided 95% (p = 0.975) and one-sided 95% quantiles from a printed table (7 significant figures).
TABLE = [
    (0.975, 1, 12.70620),
    (0.975, 2, 4.302653),
    (0.975, 4, 2.776445),
    (0.975, 9, 2.262157),
    (0.975, 10, 2.228139),
    (0.975, 29, 2.045230),
    (0.95, 9, 1.833113),
    (0.995, 9, 3.249836),
    (0.975, 1_000_000, 1.959966),
]


@pytest.mark.parametrize("p, dof, expected", TABLE)
def test_t_quantile_matches_table_values(p: float, dof: int, expected: float) -> None:
    assert stats.t_quantile(p, dof) == pytest.approx(expected, rel=2e-6)
    assert stats.t_quantile(1 - p, dof) == pytest.approx(-expected, rel=2e-6)


@given(st.floats(-50, 50))
def test_t_cdf_matches_the_closed_forms_for_one_and_two_dof(t: float) -> None:
    assert stats.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    assert stats.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)


@given(st.floats(-30, 30), st.floats(0.3, 200))
def test_t_cdf_matches_mpmath(t: float, dof: float) -> None:
    with mpmath.workdps(40):  # 40 digits: 1 - tail near t = 0 keeps float precision
        nu, tt = mpmath.mpf(dof), mpmath.mpf(t) ** 2
        tail = mpmath.betainc(nu / 2, 0.5, 0, nu / (nu + tt), regularized=True) / 2
        expected = float(1 - tail) if t >= 0 else float(tail)
    assert stats.t_cdf(t, dof) == pytest.approx(expected, abs=1e-12)


@given(st.floats(0.001, 0.999), st.integers(1, 100))
def test_t_quantile_inverts_the_cdf(p: float, dof: int) -> None:
    assert stats.t_cdf(stats.t_quantile(p, dof), dof) == pytest.approx(p, abs=1e-11)


def test_t_interval_hand_computed() -> None:
    # values 1, 2, 3, 4: mean 2.5, s = sqrt(5/3), t_{0.975,3} = 3.182446; half = 3.182446 * s / 2 = 2.054275
    interval = stats.t_interval([1.0, 2.0, 3.0, 4.0])
    assert interval.mean == 2.5 and interval.n == 4 and interval.level == 0.95
    assert interval.half_width == pytest.approx(3.182446 * math.sqrt(5 / 3) / 2, rel=1e-6)
    assert interval.low == pytest.approx(2.5 - interval.half_width) and interval.excludes_zero
    assert not stats.t_interval(torch.tensor([-1.0, 2.0, 0.5])).excludes_zero


def test_t_interval_covers_the_mean_at_its_level() -> None:
    # 4000 normal samples of 10 values: coverage 0.95 +- 2 * sqrt(0.95 * 0.05 / 4000) = 0.0069.
    gen = torch.Generator().manual_seed(0)
    samples = 3.0 + 2.0 * torch.randn(4000, 10, generator=gen, dtype=torch.float64)
    covered = [stats.t_interval(row).low <= 3.0 <= stats.t_interval(row).high for row in samples]
    assert abs(sum(covered) / len(covered) - 0.95) < 2 * math.sqrt(0.95 * 0.05 / 4000)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: stats.t_quantile(1.0, 3), "p must be a probability"),
        (lambda: stats.t_quantile(0.5, 0), "dof must be a finite number > 0"),
        (lambda: stats.t_interval([1.0]), "at least 2 finite numbers"),
        (lambda: stats.t_interval([1.0, float("nan")]), "at least 2 finite numbers"),
        (lambda: stats.t_interval([1.0, 2.0], level=95), "level must be in"),
        (lambda: stats.auroc(torch.tensor([]), torch.tensor([1.0])), "negative must be a non-empty"),
        (lambda: stats.auroc(torch.tensor([1.0]), torch.ones(2, 2)), "positive must be a non-empty 1-D"),
    ],
)
def test_bad_arguments_are_named(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_auroc_hand_computed() -> None:
    # pairs (pos, neg): 3>1, 3>2, 3=3 (1/2); 5 > all three; 2>1, 2=2 (1/2), 2<3: (2.5 + 3 + 1.5) / 9 = 7/9
    neg, pos = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 5.0, 2.0])
    assert stats.auroc(neg, pos) == pytest.approx(7 / 9, abs=1e-15)
    assert stats.auroc(pos, neg) == pytest.approx(2 / 9, abs=1e-15)
    assert stats.auroc(torch.zeros(4), torch.ones(3)) == 1.0
    assert stats.auroc(torch.ones(4), torch.ones(3)) == 0.5


@given(
    st.lists(st.integers(0, 6), min_size=1, max_size=30),
    st.lists(st.integers(0, 6), min_size=1, max_size=30),
)
def test_auroc_equals_the_pair_count(neg: list[int], pos: list[int]) -> None:
    n, p = torch.tensor(neg, dtype=torch.float64), torch.tensor(pos, dtype=torch.float64)
    wins = (p[:, None] > n[None, :]).double() + 0.5 * (p[:, None] == n[None, :]).double()
    assert stats.auroc(n, p) == pytest.approx(float(wins.mean()), abs=1e-12)
