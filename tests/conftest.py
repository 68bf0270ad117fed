"""Shared fixtures: the oracle's values per declared problem, and one-thread runs for small tensors."""

import functools

import pytest
import torch

from problems import PROBLEMS


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
