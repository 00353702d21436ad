"""The principal-axes start of Matryoshka training (``mmssl.matryoshka``): the rotation against
numpy's SVD, folded into the towers' projections (a shared tower once), and ``--matryoshka-init
pca`` (and ``auto``, the default, on a pretrained tower) turning it before the first step without
changing a full-size cosine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mmssl.matryoshka import principal_rotation, rotate_outputs, truncate, wants_pca


def anisotropic(n: int = 400, d: int = 12, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    scales = np.geomspace(0.05, 3.0, d)[rng.permutation(d)]  # the big axes scattered, not leading
    mixing = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return torch.tensor((rng.normal(size=(n, d)) * scales) @ mixing + 0.7, dtype=torch.float32)


def test_rotation_is_orthogonal_keeps_cosines_and_orders_variance_as_numpy_svd_does():
    x = anisotropic()
    r = principal_rotation(x)
    torch.testing.assert_close(r @ r.T, torch.eye(12), atol=1e-5, rtol=0)
    turned = x @ r.T
    cos = nn.functional.normalize(x, dim=-1) @ nn.functional.normalize(x, dim=-1).T
    torch.testing.assert_close(nn.functional.normalize(turned, dim=-1) @ nn.functional.normalize(turned, dim=-1).T, cos,
                               atol=1e-5, rtol=0)  # fmt: skip
    variances = turned.var(0)
    assert torch.all(variances[:-1] >= variances[1:])
    # the slow reference: right singular vectors of the centred data, largest first (signs free)
    centred = x.double().numpy() - x.double().numpy().mean(0)
    reference = np.linalg.svd(centred, full_matrices=False)[2]
    assert np.allclose(np.abs((r.double().numpy() * reference).sum(1)), 1.0, atol=1e-4)
    # each prefix is the best subspace of its size: it keeps more variance than the same
    # number of the original coordinates, chosen at their best
    for k in (1, 3, 6):
        assert variances[:k].sum() >= torch.sort(x.var(0), descending=True).values[:k].sum() - 1e-5
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        principal_rotation(x[:1])


class Tower(nn.Module):
    def __init__(self, d_in: int, d_out: int, proj: nn.Module | None = None) -> None:
        super().__init__()
        self.body = nn.Linear(d_in, d_in)
        self.proj = proj if proj is not None else nn.Linear(d_in, d_out, bias=False)

    def forward(self, x):
        return self.proj(self.body(x))


class Pair(nn.Module):
    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.towers = nn.ModuleDict({"text": first, "code": second})


def test_rotation_folds_into_each_projection_and_a_shared_tower_turns_once():
    torch.manual_seed(0)
    x = torch.randn(7, 10)
    r = principal_rotation(anisotropic(d=6))
    two = Pair(Tower(10, 6), Tower(10, 6))
    before = {m: t(x) for m, t in two.towers.items()}
    rotate_outputs(two, r)
    for m, t in two.towers.items():
        torch.testing.assert_close(t(x), before[m] @ r.T, atol=1e-5, rtol=0)
    tower = Tower(10, 6)
    shared = Pair(tower, tower)
    before = tower(x)
    rotate_outputs(shared, r)
    torch.testing.assert_close(tower(x), before @ r.T, atol=1e-5, rtol=0)  # R, not R @ R
    with pytest.raises(ValueError, match="the code tower's output is not a bias-free linear projection"):
        rotate_outputs(Pair(Tower(6, 6), Tower(6, 6, nn.Identity())), r)
    assert not wants_pca("auto", two)  # no pretrained transformers tower: auto leaves it as it is
    assert wants_pca("pca", two) and not wants_pca("none", two)


@pytest.mark.parametrize("init", ["none", "pca", "auto"])
def test_pca_init_turns_a_pretrained_tower_before_the_first_step(init, tiny_model, code_corpus):
    from mmssl.matryoshka import PCA_SAMPLE
    from mmssl.recipes.config import TrainConfig
    from mmssl.recipes.text_code import RECIPE

    flags = dict(train=code_corpus, text_init=str(tiny_model / "towers" / "text"), shared=True, batch_size=32,
                 max_code_length=64, max_text_length=32, matryoshka="32,8", device="cpu", out="unused",
                 train_partition="")  # fmt: skip
    plain = RECIPE.build_task(TrainConfig.from_flat(**flags, matryoshka_init="none"), torch.device("cpu")).model
    task = RECIPE.build_task(TrainConfig.from_flat(**flags, matryoshka_init=init), torch.device("cpu"))
    train = RECIPE.load_pairs(code_corpus, None).sample(PCA_SAMPLE, 0)  # the seeded sample it reads
    a, b = plain.embed("text", train.queries[:50]), task.model.embed("text", train.queries[:50])
    if init == "none":
        torch.testing.assert_close(a, b)
        return
    # the slow reference: the plain model's embeddings of the seeded sample, both sides, then PCA
    both = torch.cat([plain.embed("text", train.queries), plain.embed("code", train.candidates)])
    r = principal_rotation(both)
    torch.testing.assert_close(b, a @ r.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(b @ b.T, a @ a.T, atol=1e-5, rtol=0)  # full-size cosines unchanged
    # the 8-dim prefix keeps more of the full-size neighbours than the plain model's first 8 dims
    turned = both @ r.T
    full = (both @ both.T).argsort(dim=1, descending=True)[:, 1:11]

    def overlap(e):
        cut = truncate(e, 8)
        top = (cut @ cut.T).argsort(dim=1, descending=True)[:, 1:11]
        return np.mean([len(set(f.tolist()) & set(t.tolist())) for f, t in zip(full, top)])

    assert overlap(turned) > overlap(both)


def test_a_resumed_run_is_not_turned_again_its_checkpoint_holds_the_turned_weights(tiny_model, code_corpus):
    from mmssl.recipes.config import TrainConfig
    from mmssl.recipes.text_code import RECIPE

    flags = dict(train=code_corpus, text_init=str(tiny_model / "towers" / "text"), shared=True, batch_size=32,
                 max_code_length=64, max_text_length=32, matryoshka="32,8", device="cpu", out="unused",
                 train_partition="", matryoshka_init="pca")  # fmt: skip
    turned = RECIPE.build_task(TrainConfig.from_flat(**flags), torch.device("cpu")).model
    resumed = RECIPE.build_task(TrainConfig.from_flat(**flags, resume=True), torch.device("cpu")).model
    plain = RECIPE.build_task(TrainConfig.from_flat(**{**flags, "matryoshka_init": "none"}), torch.device("cpu")).model
    for name, weight in resumed.state_dict().items():  # as built from --text-init: the checkpoint loads over it
        torch.testing.assert_close(weight, plain.state_dict()[name])
    assert any(not torch.equal(w, turned.state_dict()[n]) for n, w in resumed.state_dict().items())


def test_pca_init_without_prefix_sizes_is_refused_before_any_data(tmp_path):
    from mmssl.recipes.config import TrainConfig
    from mmssl.recipes.text_code import RECIPE

    config = TrainConfig.from_flat(train=str(tmp_path / "missing.jsonl"), matryoshka_init="pca", out="unused")
    with pytest.raises(ValueError, match="--matryoshka-init pca needs --matryoshka"):
        RECIPE.build_task(config, torch.device("cpu"))
