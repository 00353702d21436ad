"""Shared by the loss tests: the float64 fixture, float64 leaves, values and gradients, and the
comparison of two losses. (Not a conftest.py: tests import ``fit_or_crash`` from the top-level one
by the name ``conftest``, which a second one would shadow.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

TOL = dict(rtol=1e-9, atol=1e-11)


@pytest.fixture
def float64_by_default():
    """Float64 for the tight tolerances; restored afterwards so that other modules see float32."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def leaf(*shape, normalize=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    if normalize:
        x = F.normalize(x, dim=-1)
    return x.requires_grad_(True)


def value_and_grads(fn, *inputs):
    inputs = [x.detach().clone().requires_grad_(True) for x in inputs]
    value = fn(*inputs)
    grads = torch.autograd.grad(value, inputs)
    return value.detach(), [g.detach() for g in grads]


def assert_same(fn_ours, fn_ref, *inputs, tol=TOL):
    """The same value and the same gradients for every input, within ``tol``."""
    v1, g1 = value_and_grads(fn_ours, *inputs)
    v2, g2 = value_and_grads(fn_ref, *inputs)
    torch.testing.assert_close(v1, v2, **tol)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, **tol)


def labelled(batch=24, dim=8, classes=5, seed=20):
    """Embeddings (in the default dtype) with class labels, for the metric-learning losses."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, generator=g)
    labels = torch.randint(0, classes, (batch,), generator=g)
    return x.requires_grad_(True), labels
