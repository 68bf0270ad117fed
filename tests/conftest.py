import functools
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from problems import PROBLEMS  # noqa: E402


@functools.lru_cache(maxsize=None)
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
