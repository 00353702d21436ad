"""Image towers from open_clip configs: shapes, preprocessing, augmentation, checkpoints, locking."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from mmssl.models.image import ImageTower, ImageTowerConfig

TINY = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "patch_size": 8, "head_width": 24},
    "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny-vit-test.json"
    path.write_text(json.dumps(TINY))
    return path


def picture() -> Image.Image:
    image = Image.new("RGB", (60, 40), (255, 255, 255))
    image.paste((200, 30, 30), (5, 5, 30, 35))
    return image


def test_tower_from_a_user_json_config_embeds_preprocessed_images(tiny_config):
    torch.manual_seed(0)
    tower = ImageTower.build(ImageTowerConfig(model=str(tiny_config)))
    assert tower.dim == 24 and tower.image_size == 32
    x = tower.preprocess_val(picture())
    assert x.shape == (3, 32, 32)
    assert torch.equal(x, tower.preprocess_val(picture()))  # evaluation preprocessing is deterministic
    emb = tower(torch.stack([x, x]))
    assert emb.shape == (2, 24) and torch.isfinite(emb).all()


def test_shipped_configs_build_without_weights():
    tower = ImageTower.build(ImageTowerConfig(model="RN50", image_size=64))
    assert tower.dim == 1024 and tower.image_size == 64
    with pytest.raises(ValueError, match="not an open_clip config"):
        ImageTower.build(ImageTowerConfig(model="ViT-Nope"))


def test_heavy_augmentation_and_flip_change_the_training_view(tiny_config):
    plain = ImageTower.build(ImageTowerConfig(model=str(tiny_config)))
    heavy = ImageTower.build(ImageTowerConfig(model=str(tiny_config), augment="heavy", flip=True))
    names = [type(t).__name__ for t in heavy.preprocess_train.transforms]
    assert {"RandomResizedCrop", "RandomApply", "RandomGrayscale", "Normalize"} <= set(names)
    assert "RandomHorizontalFlip" in names and "RandomHorizontalFlip" not in [
        type(t).__name__ for t in plain.preprocess_train.transforms
    ]
    torch.manual_seed(0)
    views = torch.stack([heavy.preprocess_train(picture()) for _ in range(8)])
    assert views.std(dim=0).mean() > 0.05  # the views differ


def test_local_checkpoint_loads_and_a_mismatch_is_refused(tiny_config, tmp_path):
    torch.manual_seed(1)
    source = ImageTower.build(ImageTowerConfig(model=str(tiny_config)))
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {f"module.visual.{k}": v for k, v in source.visual.state_dict().items()}}, ckpt)
    torch.manual_seed(2)
    loaded = ImageTower.build(ImageTowerConfig(model=str(tiny_config), weights=str(ckpt)))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), source.eval()(x))
    with pytest.raises(ValueError, match="does not fit"):
        ImageTower.build(ImageTowerConfig(model="ViT-B-32", weights=str(ckpt)))
    with pytest.raises(FileNotFoundError):
        ImageTower.build(ImageTowerConfig(model=str(tiny_config), weights=str(tmp_path / "missing.pt")))


def test_locking_freezes_all_or_all_but_the_norms(tiny_config):
    tower = ImageTower.build(ImageTowerConfig(model=str(tiny_config)))
    tower.lock()
    assert not any(p.requires_grad for p in tower.parameters())
    tower.train()
    assert not tower.visual.training  # a locked tower stays in eval mode
    tower = ImageTower.build(ImageTowerConfig(model=str(tiny_config)))
    tower.lock(unlock_norms=True)
    trainable = {n for n, p in tower.visual.named_parameters() if p.requires_grad}
    assert trainable and all(".ln" in n or n.startswith("ln_") or "norm" in n for n in trainable)


def test_torchvision_resnet_tower_loads_plain_state_dicts_and_saves_its_own_layout(tmp_path):
    from torchvision import models

    torch.manual_seed(3)
    ref = models.resnet18(weights=None).eval()
    ckpt = tmp_path / "resnet18.pth"  # a DDP run's file: module. prefix, the fc head kept
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, ckpt)
    release = tmp_path / "ssl-run.pth"  # an SSL run's whole model: backbone without head, and a projector
    state = {f"module.backbone.{k}": v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    torch.save({"model": {**state, "module.projector.0.weight": torch.zeros(8, 512)}}, release)
    ref.fc = torch.nn.Identity()

    torch.manual_seed(4)
    tower = ImageTower.build(ImageTowerConfig(model="torchvision:resnet18", weights=str(ckpt), image_size=32), 24)
    tower.eval()
    assert tower.image_size == 32 and tower.dim == 24
    x = tower.preprocess_val(picture())[None]
    assert x.shape == (1, 3, 32, 32)
    with torch.no_grad():
        features = ref(x)
        torch.testing.assert_close(tower.visual(x), features)  # the pooled features, 512 of them
        plain = ImageTower.build(ImageTowerConfig(model="torchvision:resnet18", weights=str(release), image_size=32))
        assert plain.dim == 512
        torch.testing.assert_close(plain.eval()(x), features)

        tower.save_pretrained(tmp_path / "saved")
        assert (tmp_path / "saved" / "torchvision_config.json").is_file()
        assert not (tmp_path / "saved" / "open_clip_config.json").exists()
        back = ImageTower.from_pretrained(tmp_path / "saved", tower.config, 24).eval()
        torch.testing.assert_close(back(x), tower(x))  # the projection too
        assert back.image_size == 32

    with pytest.raises(ValueError, match=r"resnet18\.pth.*does not fit"):
        ImageTower.build(ImageTowerConfig(model="torchvision:resnet34", weights=str(ckpt), image_size=32))
    with pytest.raises(ValueError, match="not a torchvision classification model"):
        ImageTower.build(ImageTowerConfig(model="torchvision:resnet7"))
    with pytest.raises(ValueError, match="not supported as an image tower"):
        ImageTower.build(ImageTowerConfig(model="torchvision:squeezenet1_0"))
