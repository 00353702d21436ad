"""InfoNCE, NT-Xent and SigLIP (``mmssl.losses.contrastive``) against open_clip, lightly and
pytorch-metric-learning, and against a float64 transcription of their formulas.

In float64 (the ``float64_by_default`` fixture) so that tolerances can be tight (1e-9 relative
unless stated); the peers are plain torch and run in float64 too.
"""

from __future__ import annotations

import pytest
import torch
from open_clip.loss import ClipLoss, SigLipLoss

from mmssl import losses as L
from tests.losses.helpers import (
    assert_same,
    float64_by_default,  # noqa: F401 (a fixture, used by pytestmark)
    leaf,
)

pytestmark = pytest.mark.usefixtures("float64_by_default")


# ------------------------------------------------------------------------------------------------
# InfoNCE
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 17, 128])
@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_infonce_matches_open_clip(batch, scale):
    a, b = leaf(batch, 32, normalize=True, seed=1), leaf(batch, 32, normalize=True, seed=2)
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
    a, b = leaf(n, 8, normalize=True, seed=3), leaf(n, 8, normalize=True, seed=4)
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
    a, b = leaf(n, 8, normalize=True, seed=3), leaf(n, 8, normalize=True, seed=4)
    neg = leaf(m, 8, normalize=True, seed=5)
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
    a, b = leaf(6, 8, normalize=True, seed=1), leaf(6, 8, normalize=True, seed=2)
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
    a, b = leaf(1000, 64, normalize=True, seed=5), leaf(1000, 64, normalize=True, seed=6)
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
    a, b = leaf(n, d, normalize=True, seed=9), leaf(n, d, normalize=True, seed=10)
    s = torch.tensor(20.0, requires_grad=True)
    ours = _saved_for_backward(lambda: L.InfoNCELoss(chunk_size=chunk)(a, b, logit_scale=s))
    peer = _saved_for_backward(lambda: ClipLoss()(a, b, s))
    assert max(peer) >= n * n  # open_clip keeps its (N, N) logits: the check can tell
    assert max(ours) <= n * d


def test_infonce_chunked_fp32_under_bf16_autocast_stays_close():
    a = leaf(256, 32, normalize=True, seed=7).float()
    b = leaf(256, 32, normalize=True, seed=8).float()
    ref = L.InfoNCELoss()(a.double(), b.double(), logit_scale=20.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = L.InfoNCELoss(chunk_size=64)(a, b, logit_scale=20.0)
    assert got.dtype == torch.float32
    assert abs(got.item() - ref.item()) < 1e-5


def test_infonce_learnable_temperature_and_clamp():
    loss = L.InfoNCELoss(temperature=0.07, learn_temperature=True)
    assert loss.temperature.log_logit_scale.requires_grad
    torch.testing.assert_close(loss.temperature.log_logit_scale.exp(), torch.tensor(1 / 0.07))
    a, b = leaf(16, 8, normalize=True, seed=9), leaf(16, 8, normalize=True, seed=10)
    loss(a, b).backward()
    assert loss.temperature.log_logit_scale.grad.abs() > 0
    # Above the clamp (1/T = 1000 > 100) the loss equals the loss at 100 and the scale gets no gradient.
    hot = L.InfoNCELoss(temperature=1e-3, learn_temperature=True)
    value = hot(a, b)
    torch.testing.assert_close(value, L.InfoNCELoss()(a, b, logit_scale=100.0))
    value.backward()
    assert hot.temperature.log_logit_scale.grad == 0


def test_infonce_output_dict_and_bad_shapes():
    a, b = leaf(4, 8), leaf(4, 8)
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

    a, b = leaf(24, 16, seed=11), leaf(24, 16, seed=12)
    assert_same(L.NTXentLoss(temperature), LightlyNTXent(temperature=temperature), a, b)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_ntxent_matches_pytorch_metric_learning(temperature):
    from pytorch_metric_learning.losses import NTXentLoss as PMLNTXent

    a, b = leaf(10, 16, seed=13), leaf(10, 16, seed=14)
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
    a, b = leaf(19, 16, normalize=True, seed=15), leaf(19, 16, normalize=True, seed=16)
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
    a, b = leaf(8, 4, normalize=True), leaf(8, 4, normalize=True, seed=1)
    torch.testing.assert_close(loss(a, b), L.SigLIPLoss()(a, b, logit_scale=10.0, logit_bias=-10.0))
