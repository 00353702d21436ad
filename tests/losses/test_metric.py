"""The metric-learning losses (``mmssl.losses.metric``) against pytorch-metric-learning, and NCE and
the soft nearest-neighbour loss, which no peer has, against a float64 transcription and properties.

In float64 (the ``float64_by_default`` fixture) so that tolerances can be tight (1e-9 relative
unless stated); the peers are plain torch and run in float64 too.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmssl import losses as L
from tests.losses.helpers import (
    TOL,
    assert_same,
    float64_by_default,  # noqa: F401 (a fixture, used by pytestmark)
    labelled,
    leaf,
)

pytestmark = pytest.mark.usefixtures("float64_by_default")


# ------------------------------------------------------------------------------------------------
# Metric-learning losses against pytorch-metric-learning
# ------------------------------------------------------------------------------------------------


def _lp():
    from pytorch_metric_learning.distances import LpDistance

    return LpDistance(normalize_embeddings=False, p=2, power=1)


@pytest.mark.parametrize("margin", [0.5, 2.0, 4.0])
def test_pair_contrastive_matches_pml_per_pair_type(margin):
    from pytorch_metric_learning.losses import ContrastiveLoss
    from pytorch_metric_learning.reducers import MeanReducer

    x1, x2 = leaf(30, 4, seed=21), leaf(30, 4, seed=22)
    peer = ContrastiveLoss(pos_margin=0.0, neg_margin=margin, distance=_lp(), reducer=MeanReducer())
    ours = L.PairContrastiveLoss(margin=margin, squared=False)
    labels = torch.arange(60) % 30  # row i of x1 pairs with row i of x2
    pairs = torch.arange(30)
    for same in (torch.ones(30), torch.zeros(30)):

        def ref(x1, x2, same=same):
            # PML takes explicit pair indices: (a1, p, a2, n); only one pair type is non-empty.
            emb = torch.cat([x1, x2])
            empty = torch.empty(0, dtype=torch.long)
            idx = (pairs, pairs + 30, empty, empty) if same[0] else (empty, empty, pairs, pairs + 30)
            return peer(emb, labels, indices_tuple=idx)

        assert_same(lambda x1, x2, same=same: ours(x1, x2, same), ref, x1, x2)


def test_pair_contrastive_squared_formula_and_zero_at_optimum():
    x1, x2 = leaf(12, 3, seed=23), leaf(12, 3, seed=24)
    same = torch.tensor([1, 0] * 6)
    d = (x1 - x2).norm(dim=1)
    ref = (same * d**2 + (1 - same) * torch.clamp(1.5 - d, min=0) ** 2).mean()
    torch.testing.assert_close(L.PairContrastiveLoss(margin=1.5)(x1, x2, same), ref, **TOL)
    # Identical positives and negatives beyond the margin: the minimum, 0, with a finite gradient.
    y = x1.detach().clone().requires_grad_(True)
    far = x1.detach() + 10.0
    value = L.PairContrastiveLoss(margin=1.5)(y, torch.where(same[:, None].bool(), y, far), same)
    value.backward()
    assert value == 0 and torch.isfinite(y.grad).all()


@pytest.mark.parametrize("miner", ["all", "hard", "semi_hard", "batch_hard"])
@pytest.mark.parametrize("margin", [0.1, 1.0])
def test_triplet_matches_pml(miner, margin):
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.miners import BatchHardMiner, TripletMarginMiner

    x, labels = labelled(seed=25)
    peer_loss = TripletMarginLoss(margin=margin, distance=_lp())
    if miner == "batch_hard":
        peer_miner = BatchHardMiner(distance=_lp())
    else:
        kind = {"all": "all", "hard": "hard", "semi_hard": "semihard"}[miner]
        peer_miner = TripletMarginMiner(margin=margin, type_of_triplets=kind, distance=_lp())

    def ref(x):
        return peer_loss(x, labels, peer_miner(x, labels))

    assert_same(lambda x: L.TripletLoss(margin=margin, miner=miner)(x, labels), ref, x)


def test_triplet_miners_select_what_they_say():
    x, labels = labelled(batch=16, seed=26)
    dist = L.pairwise_distance(x.detach())
    a, p, n = L.mine_triplets(dist, labels, "semi_hard", margin=0.5)
    assert len(a) > 0
    assert (labels[a] == labels[p]).all() and (labels[a] != labels[n]).all() and (a != p).all()
    gap = dist[a, n] - dist[a, p]
    assert ((gap > 0) & (gap <= 0.5)).all()
    a, p, n = L.mine_triplets(dist, labels, "batch_hard", margin=0.5)
    for ai, pi, ni in zip(a, p, n):
        same = labels == labels[ai]
        assert dist[ai, pi] == dist[ai][same & (torch.arange(16) != ai)].max()
        assert dist[ai, ni] == dist[ai][~same].min()


def test_triplet_without_triplets_is_zero_with_graph():
    x = leaf(4, 3)
    value = L.TripletLoss()(x, torch.zeros(4, dtype=torch.long))  # one class: no negatives
    value.backward()
    assert value == 0 and (x.grad == 0).all()


def test_npair_matches_pml():
    from pytorch_metric_learning.distances import DotProductSimilarity
    from pytorch_metric_learning.losses import NPairsLoss

    anchors, positives = leaf(9, 6, seed=27), leaf(9, 6, seed=28)
    labels = torch.arange(9).repeat_interleave(2)
    peer = NPairsLoss(distance=DotProductSimilarity(normalize_embeddings=False))  # Sohn: raw inner products

    def ref(a, p):
        return peer(torch.stack([a, p], dim=1).reshape(18, 6), labels)  # a0, p0, a1, p1, ...

    assert_same(L.NPairLoss(), ref, anchors, positives)


def test_npair_l2_regularizer():
    a, p = leaf(5, 4, seed=29), leaf(5, 4, seed=30)
    base = L.NPairLoss()(a, p)
    reg = L.NPairLoss(l2_reg=0.002)(a, p)
    torch.testing.assert_close(reg - base, 0.002 * (a.pow(2).sum(1) + p.pow(2).sum(1)).mean(), **TOL)


@pytest.mark.parametrize("margin", [0.5, 1.0, 3.0])
def test_lifted_structured_matches_pml(margin):
    from pytorch_metric_learning.losses import LiftedStructureLoss

    x, labels = labelled(batch=20, seed=31)
    assert_same(
        lambda x: L.LiftedStructuredLoss(margin=margin)(x, labels),
        lambda x: LiftedStructureLoss(neg_margin=margin, pos_margin=0.0, distance=_lp())(x, labels),
        x,
    )


# ------------------------------------------------------------------------------------------------
# No peer: float64 transcription and properties
# ------------------------------------------------------------------------------------------------


def test_nce_matches_formula():
    g = torch.Generator().manual_seed(32)
    s, sn = torch.randn(7, generator=g), torch.randn(7, 5, generator=g)
    lq, lqn = torch.randn(7, generator=g) - 2, torch.randn(7, 5, generator=g) - 2
    sig = torch.sigmoid
    ref = -(torch.log(sig(s - math.log(5) - lq)) + torch.log(1 - sig(sn - math.log(5) - lqn)).sum(1)).mean()
    torch.testing.assert_close(L.NCELoss()(s, sn, lq, lqn), ref, **TOL)


def test_nce_optimum_recovers_data_log_density():
    """NCE's defining property: the minimizer of the loss is s(x) = log p_data(x)."""
    g = torch.Generator().manual_seed(33)
    p_data = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03])
    q = torch.tensor([0.1, 0.2, 0.3, 0.2, 0.2])
    k, n = 4, 40_000
    x = torch.multinomial(p_data, n, replacement=True, generator=g)
    xn = torch.multinomial(q, n * k, replacement=True, generator=g).reshape(n, k)
    scores = torch.zeros(5, requires_grad=True)
    opt = torch.optim.LBFGS([scores], lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = L.NCELoss()(scores[x], scores[xn], q.log()[x], q.log()[xn])
        value.backward()
        return value

    opt.step(closure)
    torch.testing.assert_close(scores.detach(), p_data.log(), atol=0.06, rtol=0)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_soft_nearest_neighbor_matches_formula(metric):
    x, labels = labelled(batch=15, seed=34)
    t = 0.7
    if metric == "euclidean":
        d = torch.cdist(x, x) ** 2
    else:
        xn = F.normalize(x, dim=1)
        d = 1 - xn @ xn.T
    terms = []
    for i in range(15):
        others = [j for j in range(15) if j != i]
        pos = [j for j in others if labels[j] == labels[i]]
        if not pos:
            continue
        num = sum(torch.exp(-d[i, j] / t) for j in pos)
        den = sum(torch.exp(-d[i, k] / t) for k in others)
        terms.append(-torch.log(num / den))
    ref = torch.stack(terms).mean()
    torch.testing.assert_close(L.SoftNearestNeighborLoss(t, metric=metric)(x, labels), ref, **TOL)


def test_soft_nearest_neighbor_falls_as_clusters_separate():
    g = torch.Generator().manual_seed(35)
    labels = torch.arange(4).repeat_interleave(6)
    centers = torch.randn(4, 8, generator=g) * 5
    noise = torch.randn(24, 8, generator=g)
    loss = L.SoftNearestNeighborLoss(temperature=10.0)
    values = [loss(centers[labels] * spread + noise, labels).item() for spread in (0.0, 0.5, 2.0)]
    assert values[0] > values[1] > values[2]
    assert values[2] < 1e-3
