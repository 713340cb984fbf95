"""Fixtures shared by the trainer and plugin tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Two OpenMP threads on a busy 2-core machine turn a 1 ms step into 100 ms; use one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
