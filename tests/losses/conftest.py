"""Fixtures of the loss tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def float64_by_default():
    """Float64 for the tight tolerances; restored afterwards so that other modules see float32."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
