"""Every loss against a peer implementation nobody here wrote (open_clip, lightly,
pytorch-metric-learning), or, where no peer has it, against a float64 transcription of its formula
and against properties. Values and gradients, in float64 so that tolerances can be tight (1e-9
relative unless stated); the peers are plain torch and run in float64 too.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss

from mmssl import losses as L

TOL = dict(rtol=1e-9, atol=1e-11)


@pytest.fixture(autouse=True)
def _float64_by_default():
    """Float64 for the tight tolerances; restored afterwards so that other modules see float32."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _leaf(*shape, normalize=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    if normalize:
        x = F.normalize(x, dim=-1)
    return x.requires_grad_(True)


def _value_and_grads(fn, *inputs):
    inputs = [x.detach().clone().requires_grad_(True) for x in inputs]
    value = fn(*inputs)
    grads = torch.autograd.grad(value, inputs)
    return value.detach(), [g.detach() for g in grads]


def assert_same(fn_ours, fn_ref, *inputs, tol=TOL):
    v1, g1 = _value_and_grads(fn_ours, *inputs)
    v2, g2 = _value_and_grads(fn_ref, *inputs)
    torch.testing.assert_close(v1, v2, **tol)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, **tol)


# ------------------------------------------------------------------------------------------------
# InfoNCE
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 17, 128])
@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_infonce_matches_open_clip(batch, scale):
    a, b = _leaf(batch, 32, normalize=True, seed=1), _leaf(batch, 32, normalize=True, seed=2)
    s = torch.tensor(scale)
    assert_same(
        lambda a, b, s: L.InfoNCELoss()(a, b, logit_scale=s),
        lambda a, b, s: ClipLoss()(a, b, s),
        a,
        b,
        s,
    )


def _infonce_reference(a, b, scale, eps=0.0, ids=None):
    """Direct float64 transcription: soft targets over the valid (non-duplicate) classes."""
    n = a.shape[0]
    logits = scale * a @ b.T
    valid = torch.ones(n, n, dtype=torch.bool)
    if ids is not None:
        valid = (ids[:, None] != ids[None, :]) | torch.eye(n, dtype=torch.bool)

    def ce(lg, vd):
        total = 0.0
        for i in range(n):
            row, keep = lg[i], vd[i]
            logp = row[keep] - torch.logsumexp(row[keep], 0)
            target = torch.full_like(logp, eps / int(keep.sum()))
            target[int(keep[:i].sum())] += 1 - eps
            total = total - (target * logp).sum()
        return total / n

    return 0.5 * (ce(logits, valid) + ce(logits.T, valid.T))


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("with_ids", [False, True])
@pytest.mark.parametrize("chunk", [None, 1, 3, 8, 1000])
def test_infonce_smoothing_duplicates_and_chunks_match_formula(eps, with_ids, chunk):
    n = 11
    a, b = _leaf(n, 8, normalize=True, seed=3), _leaf(n, 8, normalize=True, seed=4)
    s = torch.tensor(7.5)
    ids = torch.tensor([0, 1, 2, 1, 3, 4, 0, 5, 6, 1, 7]) if with_ids else None
    loss = L.InfoNCELoss(label_smoothing=eps, chunk_size=chunk)
    assert_same(
        lambda a, b, s: loss(a, b, logit_scale=s, pair_ids=ids),
        lambda a, b, s: _infonce_reference(a, b, s, eps, ids),
        a,
        b,
        s,
    )


def _hard_negative_reference(a, b, neg, scale, eps, ids, neg_ids, neg_mask):
    """Float64 loops: row i scores its own b, the other b's (not its duplicates) and the hard
    negatives that are valid and not of its own id; columns (b -> a) as without negatives."""
    n = a.shape[0]

    def ce(scores, keep, target_pos):
        logp = scores[keep] - torch.logsumexp(scores[keep], 0)
        target = torch.full_like(logp, eps / int(keep.sum()))
        target[int(keep[:target_pos].sum())] += 1 - eps
        return -(target * logp).sum()

    rows, cols = 0.0, 0.0
    for i in range(n):
        keep_b = torch.tensor([j == i or ids is None or ids[j] != ids[i] for j in range(n)])
        keep_n = torch.tensor([bool(neg_mask[m]) and (ids is None or neg_ids[m] != ids[i]) for m in range(len(neg))])
        scores = scale * torch.cat([a[i] @ b.T, a[i] @ neg.T])
        rows = rows + ce(scores, torch.cat([keep_b, keep_n]), i)
        cols = cols + ce(scale * (b[i] @ a.T), keep_b, i)
    return 0.5 * (rows + cols) / n


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("with_ids", [False, True])
@pytest.mark.parametrize("local", [False, True])
def test_infonce_hard_negatives_match_formula(eps, with_ids, local):
    n, m = 9, 14
    a, b = _leaf(n, 8, normalize=True, seed=3), _leaf(n, 8, normalize=True, seed=4)
    neg = _leaf(m, 8, normalize=True, seed=5)
    s = torch.tensor(6.0)
    ids = torch.tensor([0, 1, 2, 1, 3, 4, 0, 5, 6]) if with_ids else None
    neg_ids = torch.tensor([3, 0, 7, 8, 1, 9, 2, 4, 10, 11, 12, 5, 6, 13]) if with_ids else None
    neg_mask = torch.tensor([True] * 10 + [False, True, True, False])
    loss = L.InfoNCELoss(label_smoothing=eps, local_loss=local)
    assert_same(
        lambda a, b, s, neg: loss(
            a, b, logit_scale=s, pair_ids=ids, negatives=neg, negative_ids=neg_ids, negative_mask=neg_mask
        ),
        lambda a, b, s, neg: _hard_negative_reference(a, b, neg, s, eps, ids, neg_ids, neg_mask),
        a,
        b,
        s,
        neg,
    )


def test_infonce_hard_negatives_add_columns_that_count():
    """No negatives (M = 0), or only masked ones, give the plain loss; a real one raises it, the more
    the closer it is to the query; a negative carrying the row's own id is no negative for it."""
    a, b = _leaf(6, 8, normalize=True, seed=1), _leaf(6, 8, normalize=True, seed=2)
    ids = torch.arange(6)
    loss = L.InfoNCELoss()
    plain = loss(a, b, pair_ids=ids)
    empty = torch.zeros(0, 8)
    torch.testing.assert_close(loss(a, b, pair_ids=ids, negatives=empty, negative_ids=ids[:0]), plain)
    far, near = -a[:1].detach(), a[:1].detach()  # the opposite of query 0, and query 0 itself
    args = dict(pair_ids=ids, negative_ids=torch.tensor([5]))
    masked = loss(a, b, negatives=near, negative_mask=torch.tensor([False]), **args)
    torch.testing.assert_close(masked, plain)
    assert plain < loss(a, b, negatives=far, **args) < loss(a, b, negatives=near, **args)
    own = loss(a, b, pair_ids=ids, negatives=near, negative_ids=torch.tensor([0]))  # row 0's own pair
    others = loss(a, b, pair_ids=ids, negatives=near, negative_ids=torch.tensor([5]))
    assert plain < own < others
    with pytest.raises(ValueError, match="negatives must be"):
        loss(a, b, negatives=torch.zeros(3, 5))
    with pytest.raises(ValueError, match="together"):
        loss(a, b, pair_ids=ids, negatives=near)


def test_infonce_chunked_equals_full_at_scale():
    a, b = _leaf(1000, 64, normalize=True, seed=5), _leaf(1000, 64, normalize=True, seed=6)
    s = torch.tensor(30.0)
    assert_same(
        lambda a, b, s: L.InfoNCELoss(chunk_size=128)(a, b, logit_scale=s),
        lambda a, b, s: L.InfoNCELoss()(a, b, logit_scale=s),
        a,
        b,
        s,
    )


def _saved_for_backward(fn) -> list[int]:
    """Sizes (numel) of every tensor autograd keeps for backward while ``fn()`` runs forward."""
    sizes: list[int] = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sizes


@pytest.mark.parametrize("chunk", [None, 64])
def test_infonce_keeps_no_batch_squared_tensor_for_backward(chunk):
    # The memory claim behind the benchmark: backward recomputes the logits instead of keeping them.
    n, d = 512, 16
    a, b = _leaf(n, d, normalize=True, seed=9), _leaf(n, d, normalize=True, seed=10)
    s = torch.tensor(20.0, requires_grad=True)
    ours = _saved_for_backward(lambda: L.InfoNCELoss(chunk_size=chunk)(a, b, logit_scale=s))
    peer = _saved_for_backward(lambda: ClipLoss()(a, b, s))
    assert max(peer) >= n * n  # open_clip keeps its (N, N) logits: the check can tell
    assert max(ours) <= n * d


def test_infonce_chunked_fp32_under_bf16_autocast_stays_close():
    a = _leaf(256, 32, normalize=True, seed=7).float()
    b = _leaf(256, 32, normalize=True, seed=8).float()
    ref = L.InfoNCELoss()(a.double(), b.double(), logit_scale=20.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = L.InfoNCELoss(chunk_size=64)(a, b, logit_scale=20.0)
    assert got.dtype == torch.float32
    assert abs(got.item() - ref.item()) < 1e-5


def test_infonce_learnable_temperature_and_clamp():
    loss = L.InfoNCELoss(temperature=0.07, learn_temperature=True)
    assert loss.temperature.log_logit_scale.requires_grad
    torch.testing.assert_close(loss.temperature.log_logit_scale.exp(), torch.tensor(1 / 0.07))
    a, b = _leaf(16, 8, normalize=True, seed=9), _leaf(16, 8, normalize=True, seed=10)
    loss(a, b).backward()
    assert loss.temperature.log_logit_scale.grad.abs() > 0
    # Above the clamp (1/T = 1000 > 100) the loss equals the loss at 100 and the scale gets no gradient.
    hot = L.InfoNCELoss(temperature=1e-3, learn_temperature=True)
    value = hot(a, b)
    torch.testing.assert_close(value, L.InfoNCELoss()(a, b, logit_scale=100.0))
    value.backward()
    assert hot.temperature.log_logit_scale.grad == 0


def test_infonce_output_dict_and_bad_shapes():
    a, b = _leaf(4, 8), _leaf(4, 8)
    out = L.InfoNCELoss()(a, b, output_dict=True)
    assert set(out) == {"contrastive_loss"}
    with pytest.raises(ValueError, match=r"\(4, 8\).*\(3, 8\)"):
        L.InfoNCELoss()(a, b[:3])
    with pytest.raises(ValueError, match="pair_ids"):
        L.InfoNCELoss()(a, b, pair_ids=torch.arange(3))
    with pytest.raises(ValueError, match="chunk_size"):
        L.InfoNCELoss(chunk_size=0)


# ------------------------------------------------------------------------------------------------
# NT-Xent, SigLIP
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_ntxent_matches_lightly(temperature):
    from lightly.loss import NTXentLoss as LightlyNTXent

    a, b = _leaf(24, 16, seed=11), _leaf(24, 16, seed=12)
    assert_same(L.NTXentLoss(temperature), LightlyNTXent(temperature=temperature), a, b)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_ntxent_matches_pytorch_metric_learning(temperature):
    from pytorch_metric_learning.losses import NTXentLoss as PMLNTXent

    a, b = _leaf(10, 16, seed=13), _leaf(10, 16, seed=14)
    labels = torch.arange(10).repeat(2)
    # PML averages over the 2N positive pairs, exactly SimCLR's 1/(2N) sum.
    assert_same(
        L.NTXentLoss(temperature),
        lambda a, b: PMLNTXent(temperature=temperature)(torch.cat([a, b]), labels),
        a,
        b,
    )


@pytest.mark.parametrize("scale,bias", [(10.0, -10.0), (3.0, 0.5), (100.0, -20.0)])
def test_siglip_matches_open_clip(scale, bias):
    a, b = _leaf(19, 16, normalize=True, seed=15), _leaf(19, 16, normalize=True, seed=16)
    s, t = torch.tensor(scale), torch.tensor(bias)
    assert_same(
        lambda a, b, s, t: L.SigLIPLoss()(a, b, logit_scale=s, logit_bias=t),
        lambda a, b, s, t: SigLipLoss()(a, b, s, t),
        a,
        b,
        s,
        t,
    )


def test_siglip_owns_learnable_scale_and_bias():
    loss = L.SigLIPLoss()
    assert {n for n, p in loss.named_parameters()} == {"temperature.log_logit_scale", "logit_bias"}
    a, b = _leaf(8, 4, normalize=True), _leaf(8, 4, normalize=True, seed=1)
    torch.testing.assert_close(loss(a, b), L.SigLIPLoss()(a, b, logit_scale=10.0, logit_bias=-10.0))


# ------------------------------------------------------------------------------------------------
# Metric-learning losses against pytorch-metric-learning
# ------------------------------------------------------------------------------------------------


def _labelled(batch=24, dim=8, classes=5, seed=20):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, generator=g)
    labels = torch.randint(0, classes, (batch,), generator=g)
    return x.requires_grad_(True), labels


def _lp():
    from pytorch_metric_learning.distances import LpDistance

    return LpDistance(normalize_embeddings=False, p=2, power=1)


@pytest.mark.parametrize("margin", [0.5, 2.0, 4.0])
def test_pair_contrastive_matches_pml_per_pair_type(margin):
    from pytorch_metric_learning.losses import ContrastiveLoss
    from pytorch_metric_learning.reducers import MeanReducer

    x1, x2 = _leaf(30, 4, seed=21), _leaf(30, 4, seed=22)
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
    x1, x2 = _leaf(12, 3, seed=23), _leaf(12, 3, seed=24)
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

    x, labels = _labelled(seed=25)
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
    x, labels = _labelled(batch=16, seed=26)
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
    x = _leaf(4, 3)
    value = L.TripletLoss()(x, torch.zeros(4, dtype=torch.long))  # one class: no negatives
    value.backward()
    assert value == 0 and (x.grad == 0).all()


def test_npair_matches_pml():
    from pytorch_metric_learning.distances import DotProductSimilarity
    from pytorch_metric_learning.losses import NPairsLoss

    anchors, positives = _leaf(9, 6, seed=27), _leaf(9, 6, seed=28)
    labels = torch.arange(9).repeat_interleave(2)
    peer = NPairsLoss(distance=DotProductSimilarity(normalize_embeddings=False))  # Sohn: raw inner products

    def ref(a, p):
        return peer(torch.stack([a, p], dim=1).reshape(18, 6), labels)  # a0, p0, a1, p1, ...

    assert_same(L.NPairLoss(), ref, anchors, positives)


def test_npair_l2_regularizer():
    a, p = _leaf(5, 4, seed=29), _leaf(5, 4, seed=30)
    base = L.NPairLoss()(a, p)
    reg = L.NPairLoss(l2_reg=0.002)(a, p)
    torch.testing.assert_close(reg - base, 0.002 * (a.pow(2).sum(1) + p.pow(2).sum(1)).mean(), **TOL)


@pytest.mark.parametrize("margin", [0.5, 1.0, 3.0])
def test_lifted_structured_matches_pml(margin):
    from pytorch_metric_learning.losses import LiftedStructureLoss

    x, labels = _labelled(batch=20, seed=31)
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
    x, labels = _labelled(batch=15, seed=34)
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


def test_byol_matches_lightly_and_stops_target_gradient():
    from lightly.loss import NegativeCosineSimilarity

    p, z = _leaf(12, 16, seed=36), _leaf(12, 16, seed=37)
    v1, (gp1,) = _value_and_grads(lambda p: L.BYOLLoss()(p, z), p)
    v2, (gp2,) = _value_and_grads(lambda p: 2 + 2 * NegativeCosineSimilarity()(p, z), p)
    torch.testing.assert_close(v1, v2, **TOL)
    torch.testing.assert_close(gp1, gp2, **TOL)
    target = z.detach().clone().requires_grad_(True)
    L.BYOLLoss()(p, target).backward()
    assert target.grad is None
    assert L.BYOLLoss()(p, 3.0 * p).abs() < 1e-12  # aligned: the minimum, 0


@pytest.mark.parametrize("lam", [5e-3, 0.1])
def test_barlow_twins_matches_lightly(lam):
    from lightly.loss import BarlowTwinsLoss as LightlyBT

    a, b = _leaf(32, 16, seed=38), _leaf(32, 16, seed=39)
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

    a, b = _leaf(32, 16, seed=40), _leaf(32, 16, seed=41)
    assert_same(L.VICRegLoss(), LightlyVICReg(), a, b)
    terms = L.VICRegLoss()(a, b, output_dict=True)
    assert set(terms) == {"invariance_loss", "variance_loss", "covariance_loss"}
    torch.testing.assert_close(sum(terms.values()), L.VICRegLoss()(a, b), **TOL)


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
    a, b = _leaf(16, 8, normalize=True, seed=42), _leaf(16, 8, normalize=True, seed=43)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    loss = PAIR_LOSSES[name]()
    torch.testing.assert_close(loss(a[perm], b[perm]), loss(a, b), **TOL)


@pytest.mark.parametrize("name", sorted(LABEL_LOSSES))
def test_label_losses_are_invariant_to_batch_order(name):
    x, labels = _labelled(seed=44)
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
    a = _leaf(10, 6, normalize=True, seed=45).detach().to(dtype).requires_grad_(True)
    b = _leaf(10, 6, normalize=True, seed=46).detach().to(dtype).requires_grad_(True)
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
