"""Self-supervised image pretraining: every method learns on a tiny set, BYOL's target is the EMA it
should be, collapse is detected, DeepCluster's labels are FAISS k-means', the pretext transforms do
what they say, and a pretrained tower starts an image-text model."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from mmssl import cli
from mmssl.engine.sampling import to_device
from mmssl.pretrain import image_ssl as S

CPU = torch.device("cpu")
MICRO = "mmssl-vit-micro"


def config_for(method: str, data, out, **overrides) -> S.ImageSSLConfig:
    cls = S.METHODS[method].config_class
    base = dict(
        data=str(data),
        out=str(out),
        image_model=MICRO,
        batch_size=16,
        max_steps=30,
        warmup_steps=0,
        lr=1e-3,
        eval_every=0,
        save_every=0,
        log_every=1,
        device="cpu",
        proj_dim=32,
        hidden_dim=64,
        clusters=6,
        pca_dim=16,
        eval_max_images=32,
        valid_partition="test",
    )
    names = {f.name for f in dataclasses.fields(cls)}  # method options (proj_dim, clusters) where they apply
    return cls(**{**{k: v for k, v in base.items() if k in names}, **overrides})


def build_model(config):
    """The image-text recipe's model for a ``TrainConfig``."""
    from mmssl.recipes.image_text import RECIPE as IMAGE_TEXT

    return IMAGE_TEXT.build_model(config.model, config.image_text)


@pytest.mark.parametrize("method", list(S.METHODS))
def test_each_method_lowers_its_loss_on_a_fixed_batch(method, shapes, tmp_path):
    torch.manual_seed(0)
    task = S.build_image_ssl(config_for(method, shapes, tmp_path), CPU)
    batch = to_device(task.batcher(torch.arange(16)), CPU)
    opt = torch.optim.AdamW(task.parameters(), lr=1e-3)
    task.model.train()
    losses = []
    for step in range(1, 31):
        torch.manual_seed(0)  # jigsaw draws its permutations: the same ones at every step
        out, report = task.training_forward(batch)
        loss = out[f"{method}_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        task.after_step(step)
        losses.append(float(loss.detach()))
        assert set(report) == {"emb_std", "eff_rank"} and 1.0 <= report["eff_rank"] <= 16
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05 * abs(np.mean(losses[:5])), losses
    scores = task.evaluate()
    assert np.isfinite(scores["valid_loss"]) and "valid_eff_rank" in scores


def test_byol_target_is_the_scheduled_moving_average_of_the_online_network(shapes, tmp_path):
    torch.manual_seed(0)
    config = config_for("byol", shapes, tmp_path, ema=0.9, max_steps=10)
    task = S.build_image_ssl(config, CPU)
    m = task.model
    target = m.target["tower"].visual.conv1.weight
    online = m.tower.visual.conv1.weight
    assert torch.equal(target, online)  # the target starts as a copy
    assert not target.requires_grad and all(not p.requires_grad for p in m.target.parameters())
    assert not any(p is target for p in task.parameters())  # the optimizer never touches the target
    with torch.no_grad():
        online.add_(torch.randn_like(online))
    before = target.detach().clone()
    task.after_step(3)
    tau = 1 - (1 - 0.9) * (math.cos(math.pi * 3 / 10) + 1) / 2
    assert torch.allclose(target, tau * before + (1 - tau) * online, atol=1e-6)
    task.after_step(10)  # the schedule's end: momentum 1, the target stays put
    same = target.detach().clone()
    with torch.no_grad():
        online.add_(1.0)
    task.after_step(10)
    assert torch.equal(target, same)


def test_collapse_metrics_tell_a_collapsed_representation_from_a_spread_one():
    g = torch.Generator().manual_seed(0)
    spread = S.collapse_metrics(torch.randn(256, 32, generator=g))
    point = S.collapse_metrics(torch.ones(256, 32) + 1e-7 * torch.randn(256, 32, generator=g))
    line = S.collapse_metrics(torch.randn(256, 1, generator=g) * torch.ones(1, 32) + 0.5)
    assert spread["emb_std"] == pytest.approx(1 / math.sqrt(32), rel=0.1) and spread["eff_rank"] > 25
    assert point["emb_std"] < 1e-3
    assert line["eff_rank"] < 1.5  # every embedding on one line through the mean
    # and during training: an untrained tower is not collapsed
    assert S.collapse_metrics(torch.randn(16, 8, generator=g))["eff_rank"] > 4


def test_deepcluster_labels_are_faiss_kmeans_of_the_towers_features(shapes, tmp_path, monkeypatch):
    from indexing import cluster

    torch.manual_seed(0)
    task = S.build_image_ssl(config_for("deepcluster", shapes, tmp_path), CPU)
    calls = []
    real = cluster.kmeans

    def spy(x, k, **kw):
        calls.append((np.array(x), k, kw))
        return real(x, k, **kw)

    monkeypatch.setattr(cluster, "kmeans", spy)
    classifier_before = task.model.classifier.weight.detach().clone()
    task.recluster()
    ((x, k, kw),) = calls
    assert x.shape == (len(task.data), task.model.tower.dim) and k == 6 and kw["pca_dim"] == 16
    expected = real(x, k, pca_dim=16, seed=0).labels
    assert np.array_equal(task.labels.numpy(), expected)  # FAISS's assignment, deterministic for a seed
    assert len(np.unique(expected)) == 6
    assert not torch.equal(task.model.classifier.weight, classifier_before)  # a fresh classifier
    task.batches_per_epoch = 4
    task.after_step(3)
    assert len(calls) == 1
    task.after_step(4)  # an epoch's end: clustered again
    assert len(calls) == 2


def test_faiss_kmeans_finds_separated_clusters_and_assigns_new_points():
    from indexing.cluster import kmeans

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 24)) * 6
    truth = np.repeat(np.arange(4), 50)
    x = centers[truth] + rng.normal(size=(200, 24))
    result = kmeans(x, 4, pca_dim=8)
    for c in range(4):  # every true cluster is one label, and the labels differ
        assert len(np.unique(result.labels[truth == c])) == 1
    assert len(np.unique(result.labels)) == 4
    assert np.array_equal(result.assign(x[::50]), result.labels[::50])
    with pytest.raises(ValueError, match="k=300 clusters for 200 vectors"):
        kmeans(x, 300)


def test_jigsaw_and_rotation_transforms():
    perms = S.permutation_set(2, 100)
    assert perms.shape == (24, 4) and len({tuple(p.tolist()) for p in perms}) == 24
    big = S.permutation_set(3, 30, seed=1)
    assert big.shape == (30, 9) and len({tuple(p.tolist()) for p in big}) == 30
    assert torch.equal(big[0], torch.arange(9))
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    ident = torch.arange(4).repeat(2, 1)
    assert torch.equal(S.shuffle_tiles(x, ident, 2), x)
    swap = torch.tensor([[1, 0, 2, 3], [3, 2, 1, 0]])  # image 0: its two top tiles swap
    out = S.shuffle_tiles(x, swap, 2)
    assert torch.equal(out[0, :, :2, :2], x[0, :, :2, 2:]) and torch.equal(out[0, :, :2, 2:], x[0, :, :2, :2])
    assert torch.equal(out[0, :, 2:], x[0, :, 2:])
    assert torch.equal(out[1, :, :2, :2], x[1, :, 2:, 2:])  # tile 3 (bottom right) went to place 0


def test_pretrained_tower_resumes_and_starts_an_image_text_model(shapes, tmp_path):
    from mmssl.recipes.config import TrainConfig

    out = tmp_path / "byol"
    argv = ["pretrain", "byol", "--data", str(shapes), "--out", str(out), "--image-model", MICRO]
    argv += ["--batch-size", "16", "--max-steps", "4", "--save-every", "2", "--eval-every", "0"]
    argv += ["--valid-partition", "test", "--eval-max-images", "32", "--device", "cpu", "--proj-dim", "16"]
    assert cli.main(argv) == 0
    meta = json.loads((out / "final" / "ssl.json").read_text())
    assert meta["method"] == "byol"
    card = (out / "final" / "README.md").read_text()  # its model card
    assert "# byol pretraining with mmssl" in card and "--image-init DIR" in card
    assert f"`{shapes}`:" in card and "files," in card and "valid_loss" in card and "4 of 4 steps" in card
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"emb_std", "eff_rank"} <= set(rows[0]) and any(r.get("split") == "valid" for r in rows)

    # the task state (tower, projector, predictor, target) survives save/load
    config = config_for("byol", shapes, tmp_path / "x", proj_dim=16, hidden_dim=512)
    task = S.build_image_ssl(dataclasses.replace(config), CPU)
    task.load_pretrained_state(out / "final")
    saved = S.build_image_ssl(config, CPU)
    saved.load_pretrained_state(out / "final")
    for (name, a), (_, b) in zip(task.model.state_dict().items(), saved.model.state_dict().items()):
        assert torch.equal(a, b), name

    # --image-init: the image-text model's image tower starts from the pretrained weights
    tc = TrainConfig.from_flat(task="image-text", train=str(shapes), image_init=str(out / "final"), embed_dim=24)
    model = build_model(tc)
    pretrained = task.model.tower.visual.state_dict()
    for name, value in model.towers["image"].visual.state_dict().items():
        assert torch.equal(value, pretrained[name]), name
    assert model.towers["image"].dim == 24  # its own projection to the dual encoder's size
    with pytest.raises(ValueError, match="pick one"):
        build_model(tc.replace(image_weights="x.pt"))


def test_a_torchvision_resnet_pretrains_and_starts_an_image_text_model(shapes, tmp_path):
    from safetensors.torch import load_file

    from mmssl.models import DualEncoder
    from mmssl.recipes.config import TrainConfig
    from mmssl.recipes.image_pairs import load_image_pairs

    out = tmp_path / "simclr-rn18"
    argv = ["pretrain", "simclr", "--data", str(shapes), "--out", str(out), "--image-model", "torchvision:resnet18"]
    argv += ["--image-size", "32", "--batch-size", "16", "--max-steps", "2", "--save-every", "0", "--eval-every", "0"]
    argv += ["--valid-partition", "test", "--eval-max-images", "32", "--device", "cpu", "--proj-dim", "16"]
    assert cli.main(argv) == 0
    assert (out / "final" / "torchvision_config.json").is_file()
    pretrained = {k.removeprefix("visual."): v for k, v in load_file(str(out / "final" / "model.safetensors")).items()}
    tc = TrainConfig.from_flat(task="image-text", train=str(shapes), image_init=str(out / "final"), text_model=MICRO)
    model = build_model(tc)
    image = model.towers["image"]
    for name, value in image.visual.state_dict().items():
        assert torch.equal(value, pretrained[name]), name
    assert image.image_size == 32 and image.dim == model.config.embed_dim  # the text config's size, projected to
    # the dual encoder saves the torchvision tower in its own layout and loads it back
    model.save_pretrained(tmp_path / "dual")
    assert len(list((tmp_path / "dual").rglob("torchvision_config.json"))) == 1
    back = DualEncoder.from_pretrained(tmp_path / "dual")
    pixels = model.prepare("image", load_image_pairs(str(shapes), "test").candidates[:4])
    with torch.no_grad():
        torch.testing.assert_close(back.eval().encode_image(pixels), model.eval().encode_image(pixels))
    with pytest.raises(ValueError, match="--text-model"):  # a torchvision tower brings no text tower
        build_model(TrainConfig.from_flat(task="image-text", train=str(shapes), image_model="torchvision:resnet18"))
