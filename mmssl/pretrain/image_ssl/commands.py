"""``mmssl pretrain <method>``: the methods' registry, the task's construction and the entry point.

``METHODS``: method name -> task class (a new method: its module, and one entry here).
``build_image_ssl(config, device)``: the training and validation images (a held-out 1/20 of the
training images when the set has no ``--valid-partition`` split), the tower, and the method's task.
``main(config)``: the command, on the training engine.
"""

from __future__ import annotations

import torch

from mmssl.console import get_logger
from mmssl.engine import run_training
from mmssl.pretrain.image_ssl.barlow import Barlow
from mmssl.pretrain.image_ssl.base import ImageSSLConfig, ImageSSLTask
from mmssl.pretrain.image_ssl.byol import BYOL
from mmssl.pretrain.image_ssl.deepcluster import Deepcluster
from mmssl.pretrain.image_ssl.jigsaw import Jigsaw
from mmssl.pretrain.image_ssl.rotation import Rotation
from mmssl.pretrain.image_ssl.simclr import SimCLR
from mmssl.pretrain.image_ssl.vicreg import VICReg

log = get_logger("pretrain.image")
METHODS: dict[str, type[ImageSSLTask]] = {
    task.config_class.method: task for task in (SimCLR, BYOL, Barlow, VICReg, Rotation, Jigsaw, Deepcluster)
}


def build_tower(config: ImageSSLConfig):
    from mmssl.models.image import ImageTower, ImageTowerConfig

    return ImageTower.build(
        ImageTowerConfig(model=config.image_model, weights=config.image_weights, image_size=config.image_size)
    )


def build_image_ssl(config: ImageSSLConfig, device: torch.device) -> ImageSSLTask:
    """The task of ``mmssl pretrain <method>`` (its validation batches made: ``task.evaluate()``)."""
    from mmssl.recipes.image_pairs import load_image_pairs

    if not config.method:
        raise ValueError("choose a method: mmssl pretrain " + "|".join(METHODS))
    if not config.data:
        raise ValueError("--data is required (image folder with metadata.jsonl, CSV/TSV, JSONL, .tar shards, ...)")
    train = load_image_pairs(config.data, config.partition, config.on_bad, config.cache_images_mb)
    if len(train) < config.batch_size:
        raise ValueError(f"{config.data}: {len(train)} usable images, fewer than --batch-size {config.batch_size}")
    valid = load_image_pairs(
        config.data, config.valid_partition, config.on_bad, config.cache_images_mb, config.eval_max_images
    )
    if not len(valid) and len(train) >= 2 * config.batch_size:  # no such split: hold out 1/20 of the images
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed)).tolist()
        cut = max(2, len(train) // 20)
        valid = train.subset(sorted(order[:cut][: config.eval_max_images]))
        train = train.subset(sorted(order[cut:]))
        log.info("no %r images: %d training images held out for validation", config.valid_partition, len(valid))
    task = METHODS[config.method](config, build_tower(config), train, valid, device)
    log.info("pretrain %s: %d training images, %d validation images", config.method, len(train), len(valid))
    return task


def main(config: ImageSSLConfig) -> int:
    import dataclasses
    from pathlib import Path

    from mmssl.console import launched_as_rank_zero
    from mmssl.models.card import write_pretrained_cards
    from mmssl.pretrain.image_ssl.base import ImageSSLTask

    summary = run_training(config, lambda device: build_image_ssl(config, device))
    if launched_as_rank_zero():  # one process writes the cards
        run = {"method": config.method, **dataclasses.asdict(config)}
        write_pretrained_cards(Path(config.out), run, summary, "image", ImageSSLTask.metric)
    return 0
