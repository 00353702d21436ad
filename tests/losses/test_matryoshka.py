"""``MatryoshkaLoss`` against a hand-written sum over prefixes, and ``mmssl.matryoshka``'s helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmssl.losses import InfoNCELoss, MatryoshkaLoss
from mmssl.matryoshka import PrefixEncoder, parse_dims, parse_weights, truncate


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1).requires_grad_(True)


@pytest.mark.parametrize("weights", [None, (1.0, 0.5, 0.0, 2.0)])
def test_the_loss_is_the_weighted_sum_over_renormalized_prefixes_value_and_gradient(weights):
    dims = (32, 16, 8, 4)
    a, b = unit(12, 32, seed=1), unit(12, 32, seed=2)
    ids = torch.tensor([0, 1, 2, 3, 3, 5, 6, 7, 8, 9, 10, 11])  # a duplicate pair: masked as a false negative
    inner = InfoNCELoss()
    got = MatryoshkaLoss(inner, dims, weights)(a, b, logit_scale=torch.tensor(20.0), pair_ids=ids)
    got.backward()
    grads = a.grad.clone(), b.grad.clone()
    a.grad = b.grad = None
    want = sum(
        w * inner(F.normalize(a[:, :d], dim=-1), F.normalize(b[:, :d], dim=-1), logit_scale=20.0, pair_ids=ids)
        for d, w in zip(dims, weights or (1.0,) * 4)
    )
    want.backward()
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(grads[0], a.grad, atol=1e-6) and torch.allclose(grads[1], b.grad, atol=1e-6)


def test_hard_negatives_are_cut_and_renormalized_too_and_the_dict_keeps_the_inner_key():
    a, b, neg = unit(6, 16, seed=3), unit(6, 16, seed=4), unit(12, 16, seed=5)
    ids, neg_ids = torch.arange(6), torch.arange(6).repeat_interleave(2) + 100
    inner = InfoNCELoss()
    out = MatryoshkaLoss(inner, (16, 4))(
        a, b, logit_scale=10.0, pair_ids=ids, output_dict=True, negatives=neg, negative_ids=neg_ids
    )
    assert list(out) == ["contrastive_loss"]
    want = inner(a, b, logit_scale=10.0, pair_ids=ids, negatives=neg, negative_ids=neg_ids) + inner(
        truncate(a, 4), truncate(b, 4), logit_scale=10.0, pair_ids=ids, negatives=truncate(neg, 4), negative_ids=neg_ids
    )
    assert torch.allclose(out["contrastive_loss"], want, atol=1e-6)
    with pytest.raises(ValueError, match="exceeds the embeddings' 16"):
        MatryoshkaLoss(inner, (32,))(a, b)


def test_truncate_keeps_a_prefix_at_unit_length_in_numpy_and_torch():
    x = np.random.default_rng(0).normal(size=(5, 10)).astype(np.float32)
    t = truncate(x, 3)
    assert t.shape == (5, 3) and t.dtype == np.float32
    assert np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-6)
    assert np.allclose(t, x[:, :3] / np.linalg.norm(x[:, :3], axis=1, keepdims=True), atol=1e-6)
    assert torch.allclose(truncate(torch.from_numpy(x), 3), torch.from_numpy(t), atol=1e-6)
    with pytest.raises(ValueError, match="cannot keep 11 of 10"):
        truncate(x, 11)


def test_truncating_numpy_embeddings_never_imports_torch():
    """An ONNX export's query path (a prefix index searched without torch) stays torch-free."""
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "from mmssl.matryoshka import truncate\n"
        "assert truncate(np.ones((2, 4), dtype=np.float32), 2).shape == (2, 2)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_sizes_and_weights_are_checked_in_one_line():
    assert parse_dims("64, 512,128", 512) == (512, 128, 64) and parse_dims(None) == () and parse_dims("") == ()
    for spec, message in [("512,x", "'x' is not a whole number"), ("0", ">= 1"), ("8,8", "given twice"),
                          ("1024", "exceeds the embedding size 512")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            parse_dims(spec, 512)
    assert parse_weights("1,0.5", (64, 32)) == (1.0, 0.5) and parse_weights(None, (64,)) is None
    for spec in ("1", "1,-1", "0,0", "a,b"):
        with pytest.raises(ValueError, match="--matryoshka-weights"):
            parse_weights(spec, (64, 32))


def test_a_prefix_encoder_embeds_once_for_every_size():
    calls = []

    class Model:
        device = "cpu"
        config = type("C", (), {})()

        def is_image(self, modality):
            return False

        def embed(self, modality, items, *args, **kwargs):
            calls.append(len(items))
            return np.eye(8, dtype=np.float32)[: len(items)] + 0.1

    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Config:
        embed_dim: int = 8

    model = Model()
    model.config = Config()
    cache: dict = {}
    four, two = PrefixEncoder(model, 4, cache), PrefixEncoder(model, 2, cache)
    assert four.embed("text", ["a", "b"]).shape == (2, 4) and two.embed("text", ["a", "b"]).shape == (2, 2)
    assert calls == [2] and four.config.embed_dim == 4
