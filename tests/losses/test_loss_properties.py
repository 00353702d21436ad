"""Properties every loss shares: batch-order invariance, aligned pairs scoring better than
misaligned ones, no NaN at extreme temperatures.

In float64 (the ``float64_by_default`` fixture) so that tolerances can be tight (1e-9 relative
unless stated); the peers are plain torch and run in float64 too.
"""

from __future__ import annotations

import pytest
import torch

from mmssl import losses as L
from tests.losses.helpers import (
    TOL,
    float64_by_default,  # noqa: F401 (a fixture, used by pytestmark)
    labelled,
    leaf,
)

pytestmark = pytest.mark.usefixtures("float64_by_default")


# ------------------------------------------------------------------------------------------------
# Properties shared by the losses
# ------------------------------------------------------------------------------------------------

PAIR_LOSSES = {
    "infonce": lambda: L.InfoNCELoss(),
    "infonce_chunked": lambda: L.InfoNCELoss(chunk_size=5),
    "ntxent": lambda: L.NTXentLoss(),
    "siglip": lambda: L.SigLIPLoss(),
    "npair": lambda: L.NPairLoss(),
    "byol": lambda: L.BYOLLoss(),
    "barlow": lambda: L.BarlowTwinsLoss(),
    "vicreg": lambda: L.VICRegLoss(),
}
LABEL_LOSSES = {
    "triplet": lambda: L.TripletLoss(miner="all"),
    "triplet_batch_hard": lambda: L.TripletLoss(miner="batch_hard"),
    "lifted": lambda: L.LiftedStructuredLoss(),
    "snn": lambda: L.SoftNearestNeighborLoss(),
}


@pytest.mark.parametrize("name", sorted(PAIR_LOSSES))
def test_pair_losses_are_invariant_to_batch_order(name):
    a, b = leaf(16, 8, normalize=True, seed=42), leaf(16, 8, normalize=True, seed=43)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    loss = PAIR_LOSSES[name]()
    torch.testing.assert_close(loss(a[perm], b[perm]), loss(a, b), **TOL)


@pytest.mark.parametrize("name", sorted(LABEL_LOSSES))
def test_label_losses_are_invariant_to_batch_order(name):
    x, labels = labelled(seed=44)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    loss = LABEL_LOSSES[name]()
    torch.testing.assert_close(loss(x[perm], labels[perm]), loss(x, labels), **TOL)


@pytest.mark.parametrize("name", ["infonce", "infonce_chunked", "ntxent", "siglip", "npair", "byol"])
def test_aligned_pairs_beat_misaligned_ones(name):
    """Aligned pairs (b_i = a_i, distinct directions) score lower than the same set mispaired."""
    a = torch.eye(8) * 3.0
    shifted = a.roll(1, dims=0)
    loss = PAIR_LOSSES[name]()
    assert loss(a, a) < loss(a, shifted)
    noisy = a + 0.3 * torch.randn(8, 8, generator=torch.Generator().manual_seed(1))
    assert loss(a, a) <= loss(a, noisy)


EXTREME = {
    "infonce": lambda t: L.InfoNCELoss(temperature=t, max_logit_scale=None),
    "infonce_chunked": lambda t: L.InfoNCELoss(temperature=t, max_logit_scale=None, chunk_size=3),
    "infonce_smooth": lambda t: L.InfoNCELoss(temperature=t, max_logit_scale=None, label_smoothing=0.1),
    "ntxent": lambda t: L.NTXentLoss(temperature=t),
    "siglip": lambda t: L.SigLIPLoss(init_scale=1 / t, init_bias=0.0),
    "snn": lambda t: L.SoftNearestNeighborLoss(temperature=t),
}


@pytest.mark.parametrize("name", sorted(EXTREME))
@pytest.mark.parametrize("temperature", [1e-4, 1e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_nan_at_temperature_extremes(name, temperature, dtype):
    a = leaf(10, 6, normalize=True, seed=45).detach().to(dtype).requires_grad_(True)
    b = leaf(10, 6, normalize=True, seed=46).detach().to(dtype).requires_grad_(True)
    loss = EXTREME[name](temperature)
    if name == "snn":
        value = loss(a, torch.arange(10) % 3)
    else:
        value = loss(a, b)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(a.grad).all()
    if name != "snn":
        assert torch.isfinite(b.grad).all()
