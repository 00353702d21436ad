"""Image-caption pairs for the image-text recipe and its evaluation: ``load_image_pairs`` (read,
every image opened once), ``embed_pairs`` (images and distinct captions) and ``retrieval_scores``
(recall@1/5/10 both ways, every image of a repeated caption counting as right).

Shape legend: N images, U distinct captions, D embedding size.

Bad images are skipped and counted with their path (``on_bad="skip"``) or stop the run before any
step (``on_bad="raise"``); decoded images stay in memory up to ``cache_mb``.

``source`` may name several sources, comma-separated (``runs/emoji,runs/icons``): their pairs are
read in that order. A record's ``captions`` field (a list of strings, as ``mmssl data make-images``
writes) lists the captions training draws from, one per step (``Pairs.captions``); its caption
field stays what evaluation and indexes use.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from mmssl.console import get_logger
from mmssl.data.image_text import ImageDataError, ImageTextData, ImageTextRecord, read_image_text
from mmssl.data.pairs import Pairs
from mmssl.evaluate import recall_at_k_groups
from mmssl.models import DualEncoder
from mmssl.recipes.base import KS
from mmssl.runtime import seeded_subset

log = get_logger("image_text")
METRIC = "mean_recall"  # mean of recall@1/5/10 both ways: the validation metric that picks the best model


def load_image_pairs(
    source: str, split: str | None, on_bad: str = "skip", cache_mb: float = 2048.0, max_pairs: int | None = None
) -> Pairs:
    """Pairs (caption, image record) of ``source``'s ``split``, every image opened once.

    Bad images are skipped and counted (or raise, ``on_bad="raise"``); decoded images are kept in the
    records (``record.image`` becomes the RGB image) while their total stays under ``cache_mb``.
    """
    records = [r for one in split_sources(source) for r in read_image_text(one, split=split)]
    records = [records[i] for i in seeded_subset(len(records), max_pairs, seed=0).tolist()]
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
    lists = [further_captions(r) for r in kept]
    return Pairs.from_texts([r.text for r in kept], kept, lists if any(lists) else None)  # [] draws the caption


def split_sources(source: str) -> list[str]:
    """``A,B`` -> [A, B]; one source that exists (a path with a comma in its name) stays whole."""
    from pathlib import Path

    if "," not in source or Path(source).exists():
        return [source]
    return [s for s in (part.strip() for part in source.split(",")) if s]


def further_captions(record: ImageTextRecord) -> list[str]:
    """The record's ``captions`` field (a list of strings), or []; anything else is an error naming it."""
    captions = record.meta.get("captions")
    if captions is None:
        return []
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise ImageDataError(f"{record.where}: field 'captions' must be a list of strings")
    return captions


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
