"""What the image-text tests share (besides the ``shapes`` fixture of tests/conftest.py): the micro
model that ships with mmssl, and a small image-text training config."""

from __future__ import annotations

import json

from PIL import Image

from mmssl.commands import TrainConfig
from mmssl.models import DualEncoder, DualEncoderConfig
from mmssl.models.clip_text import ClipTextConfig
from mmssl.models.image import ImageTowerConfig

MICRO = "mmssl-vit-micro"  # ships with mmssl: 32 px, 2 layers, 64 wide


def micro_model(embed_dim: int = 32) -> DualEncoder:
    config = DualEncoderConfig(
        modalities=("text", "image"),
        towers={"text": ClipTextConfig(MICRO), "image": ImageTowerConfig(MICRO, augment="heavy")},
        embed_dim=embed_dim,
    )
    return DualEncoder.build(config)


def pictures() -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), (230, 20, 20)), Image.new("RGB", (64, 64), (20, 20, 230))]


def train_config(data, out, **overrides) -> TrainConfig:
    base = dict(
        task="image-text",
        train=str(data),
        out=str(out),
        image_model=MICRO,
        batch_size=16,
        max_steps=6,
        warmup_steps=2,
        lr=1e-3,
        eval_every=0,
        save_every=3,
        log_every=1,
        device="cpu",
        augment="heavy",
        valid_partition="test",
        eval_max_pairs=40,
    )
    return TrainConfig.from_flat(**{**base, **overrides})


def losses(out) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
