"""The image-text task: image-caption pairs -> a CLIP-style text/image dual encoder, its task and its validation.

Shape legend: N images, U distinct captions, D embedding size.

Queries are captions (the "text" side, so that text->image search is query -> candidate as in
the text-code task), candidates are images. The text tower is open_clip's text transformer with its
BPE tokenizer (``--text-model``, default: the image model's own config), or a ``transformers``
tower from ``--text-init`` (``minilm``, an ``mmssl pretrain`` output, a hub name). ``--lock-text``
trains the image tower against a frozen text tower (LiT: the text embedding space stays the
pretrained one, so words no training caption used still land near the right images);
``--lock-image`` the other way round; ``--unlock-norms`` leaves the locked tower's norms trainable.

Images are opened once before training: bad ones (not an image, truncated, missing, past the pixel
limit) are skipped and counted with their path (``--on-bad skip``) or stop the run before any step
(``--on-bad raise``), so an epoch never meets a bad file; decoded images stay in memory up to
``--cache-images-mb`` and are read again from disk beyond it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from mmssl.console import get_logger
from mmssl.data.image_text import ImageTextData, ImageTextRecord, read_image_text
from mmssl.evaluate import recall_at_k_groups
from mmssl.losses import InfoNCELoss
from mmssl.models import DualEncoder, DualEncoderConfig, TowerConfig
from mmssl.models.clip_text import ClipTextConfig
from mmssl.models.image import TORCHVISION, ImageTowerConfig
from mmssl.models.text import hidden_size, resolve_init, sentence_pooling, set_dropout
from mmssl.negatives import negatives_for
from mmssl.tasks import ContrastiveTask, Pairs

log = get_logger("image_text")
KS = (1, 5, 10)
METRIC = "mean_recall"  # mean of recall@1/5/10 both ways: the validation metric that picks the best model


def load_image_pairs(
    source: str, split: str | None, on_bad: str = "skip", cache_mb: float = 2048.0, max_pairs: int | None = None
) -> Pairs:
    """Pairs (caption, image record) of ``source``'s ``split``, every image opened once.

    Bad images are skipped and counted (or raise, ``on_bad="raise"``); decoded images are kept in the
    records (``record.image`` becomes the RGB image) while their total stays under ``cache_mb``.
    """
    records = read_image_text(source, split=split)
    if max_pairs is not None and len(records) > max_pairs:
        keep = torch.randperm(len(records), generator=torch.Generator().manual_seed(0))[:max_pairs].sort().values
        records = [records[i] for i in keep.tolist()]
    data = ImageTextData(records, on_bad=on_bad)
    kept: list[ImageTextRecord] = []
    cached = 0.0
    for i, record in enumerate(records):
        got = data.get(i)
        if got is None:
            continue
        image, _ = got
        size_mb = image.width * image.height * 3 / 2**20
        if cached + size_mb <= cache_mb:
            cached += size_mb
            record = replace(record, image=image)
        kept.append(record)
    if data.skipped:
        counts = ", ".join(f"{n} {reason}" for reason, n in sorted(data.skipped.items()))
        log.warning(
            "%s: skipped %d bad images (%s); first: %s", source, sum(data.skipped.values()), counts, data.bad[0]
        )
    return Pairs.from_texts([r.text for r in kept], kept)


def embed_pairs(
    model: DualEncoder, pairs: Pairs, batch_size: int = 128, normalize_images: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) image embeddings and (U, D) embeddings of the distinct captions (by ``pairs.ids``)."""
    text_mod, image_mod = model.config.modalities
    images = model.embed(image_mod, pairs.candidates, batch_size, normalize=normalize_images)
    first = {}
    for i, g in enumerate(pairs.ids.tolist()):
        first.setdefault(g, i)
    captions = [pairs.queries[first[g]] for g in range(len(first))]
    return images, model.embed(text_mod, captions, batch_size)


def retrieval_scores(images: torch.Tensor, texts: torch.Tensor, ids: torch.Tensor) -> dict[str, float]:
    """recall@1/5/10 text->image and image->text; an image is right for every caption equal to its own.

    Shape: images (N, D), texts (U, D) one per distinct caption, ids (N,) the caption of each image."""
    ids_np = ids.numpy()
    t2i = recall_at_k_groups(texts, images, np.arange(len(texts)), ids_np, KS)
    i2t = recall_at_k_groups(images, texts, ids_np, np.arange(len(texts)), KS)
    out = {f"text_to_image_{k}": v for k, v in t2i.items()} | {f"image_to_text_{k}": v for k, v in i2t.items()}
    out[METRIC] = float(np.mean([*t2i.values(), *i2t.values()]))
    return out


def evaluate_image_pairs(model: DualEncoder, pairs: Pairs, batch_size: int = 128) -> dict[str, float]:
    images, texts = embed_pairs(model, pairs, batch_size)
    return {**retrieval_scores(images, texts, pairs.ids), "n": len(pairs), "captions": len(texts)}


def text_tower_config(config) -> TowerConfig | ClipTextConfig:
    if config.text_init:
        pooling = sentence_pooling(resolve_init(config.text_init))
        return TowerConfig(init=config.text_init, pooling=pooling, max_length=config.max_text_length)
    model = config.text_model or config.image_model
    if model.startswith(TORCHVISION):
        raise ValueError(
            f"--image-model {config.image_model} has no text tower: give --text-model (an open_clip config, "
            "e.g. mmssl-vit-tiny or ViT-B-32) or --text-init (a transformers encoder)"
        )
    return ClipTextConfig(model=model, context_length=config.context_length)


def build_model(config) -> DualEncoder:
    """The text/image dual encoder a ``TrainConfig`` with ``task="image-text"`` describes."""
    text = text_tower_config(config)
    init = getattr(config, "image_init", None)
    if init and config.image_weights:
        raise ValueError("--image-init and --image-weights both give the image tower's weights: pick one")
    image = ImageTowerConfig(
        model=f"local-dir:{init}" if init else config.image_model,  # the saved tower's own architecture
        weights=init or config.image_weights,
        augment=config.augment,
        flip=config.flip,
        image_size=config.image_size,
    )
    embed_dim = config.embed_dim
    if embed_dim is None and config.text_init:  # the pretrained text tower's own size (LiT keeps its space)
        embed_dim = hidden_size(config.text_init)
    if embed_dim is None:
        import open_clip

        from mmssl.models.image import _register

        # the open_clip config's own size: the image model's, or the text model's beside a torchvision tower
        model = config.text_model if config.image_model.startswith(TORCHVISION) else config.image_model
        embed_dim = int(open_clip.get_model_config(_register(model))["embed_dim"])
    dual = DualEncoderConfig(
        modalities=("text", "image"),
        towers={"text": text, "image": image},
        embed_dim=embed_dim,
        init_temperature=config.temperature,
    )
    model = DualEncoder.build(dual)
    if config.lock_text:
        model.lock("text", unlock_norms=config.unlock_norms)
    if config.lock_image:
        model.lock("image", unlock_norms=config.unlock_norms)
    return model


def build_image_text(config, device: torch.device) -> tuple[ContrastiveTask, Callable | None]:
    """(task, validation function) for ``mmssl train --task image-text``."""
    if config.lock_text and config.lock_image:
        raise ValueError("--lock-text and --lock-image together leave nothing to train")
    train = load_image_pairs(config.train, config.train_partition, config.on_bad, config.cache_images_mb)
    if len(train) < config.batch_size:
        raise ValueError(
            f"{config.train}: {len(train)} usable image-caption pairs (split {config.train_partition!r}), "
            f"fewer than --batch-size {config.batch_size}"
        )
    valid_source = config.valid or config.train
    valid = load_image_pairs(
        valid_source, config.valid_partition, config.on_bad, config.cache_images_mb, config.eval_max_pairs
    )
    log.info("image-text: %d training pairs, %d validation pairs", len(train), len(valid))
    model = build_model(config).to(device)
    if config.dropout is not None:
        n = set_dropout(model, config.dropout)
        log.info("dropout %.2f in %d layers", config.dropout, n)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("%s parameters, %s trainable", f"{sum(p.numel() for p in model.parameters()):,}", f"{trainable:,}")
    loss = InfoNCELoss(label_smoothing=config.label_smoothing)
    negs = negatives_for(config, train)
    task = ContrastiveTask(model, loss, train, metric=METRIC, grad_cache=config.grad_cache, **negs)
    valid_fn = (lambda m: evaluate_image_pairs(m, valid)) if len(valid) else None
    if valid_fn is None:
        log.warning(
            "no validation pairs in %s (split %r): no best-model selection, only the final model is saved",
            valid_source,
            config.valid_partition,
        )
    return task, valid_fn
