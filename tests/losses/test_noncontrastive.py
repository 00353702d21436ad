"""BYOL, Barlow Twins and VICReg (``mmssl.losses.noncontrastive``) against lightly, and properties.

In float64 (the ``float64_by_default`` fixture) so that tolerances can be tight (1e-9 relative
unless stated); the peers are plain torch and run in float64 too.
"""

from __future__ import annotations

import math

import pytest
import torch

from mmssl import losses as L
from tests.losses.helpers import (
    TOL,
    assert_same,
    float64_by_default,  # noqa: F401 (a fixture, used by pytestmark)
    leaf,
    value_and_grads,
)

pytestmark = pytest.mark.usefixtures("float64_by_default")


def test_byol_matches_lightly_and_stops_target_gradient():
    from lightly.loss import NegativeCosineSimilarity

    p, z = leaf(12, 16, seed=36), leaf(12, 16, seed=37)
    v1, (gp1,) = value_and_grads(lambda p: L.BYOLLoss()(p, z), p)
    v2, (gp2,) = value_and_grads(lambda p: 2 + 2 * NegativeCosineSimilarity()(p, z), p)
    torch.testing.assert_close(v1, v2, **TOL)
    torch.testing.assert_close(gp1, gp2, **TOL)
    target = z.detach().clone().requires_grad_(True)
    L.BYOLLoss()(p, target).backward()
    assert target.grad is None
    assert L.BYOLLoss()(p, 3.0 * p).abs() < 1e-12  # aligned: the minimum, 0


@pytest.mark.parametrize("lam", [5e-3, 0.1])
def test_barlow_twins_matches_lightly(lam):
    from lightly.loss import BarlowTwinsLoss as LightlyBT

    a, b = leaf(32, 16, seed=38), leaf(32, 16, seed=39)
    assert_same(
        L.BarlowTwinsLoss(lambda_offdiag=lam), LightlyBT(lambda_param=lam), a, b, tol=dict(rtol=1e-7, atol=1e-9)
    )


def test_barlow_twins_zero_for_decorrelated_identical_views():
    z = torch.randn(64, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z, _ = torch.linalg.qr(z - z.mean(0))  # orthonormal columns, each still of zero mean
    z = z * math.sqrt(64)  # unit (biased) variance per column, zero correlation between columns
    assert L.BarlowTwinsLoss(eps=0.0)(z, z) < 1e-8


def test_vicreg_matches_lightly():
    from lightly.loss import VICRegLoss as LightlyVICReg

    a, b = leaf(32, 16, seed=40), leaf(32, 16, seed=41)
    assert_same(L.VICRegLoss(), LightlyVICReg(), a, b)
    terms = L.VICRegLoss()(a, b, output_dict=True)
    assert set(terms) == {"invariance_loss", "variance_loss", "covariance_loss"}
    torch.testing.assert_close(sum(terms.values()), L.VICRegLoss()(a, b), **TOL)
