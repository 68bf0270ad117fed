"""Shared fixtures: the oracle's values per declared problem, and one-thread runs for small tensors."""

import functools
import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from problems import PROBLEMS

# Property-based tests: "ci" (the default) is reproducible (fixed seed) and sized for a shared 2-core machine;
# "slow" explores ten times as many random examples. Select with HYPOTHESIS_PROFILE=slow.
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "ci",
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=_HEALTH,
    print_blob=True,
)
settings.register_profile("slow", max_examples=2000, deadline=None, suppress_health_check=_HEALTH, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@functools.cache
def _oracle(id_):
    import oracle

    problem = PROBLEMS[id_]()
    return problem, oracle.conditional(problem), oracle.dense_bounds(problem)


@pytest.fixture
def oracle_values():
    """Function id -> (problem, per-input oracle values, per-input dense bounds), cached per session."""
    return _oracle


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one thread is as fast, and does not degrade when other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
