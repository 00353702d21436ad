"""``Recipe``: what one modality pair (text-code, image-text, ...) brings to the dual-encoder
commands: how to read its pairs, build its model, score it, and read a collection to index.

Every recipe trains the same ``ContrastiveTask``; ``build_task`` is the one sequence of steps from a
``TrainConfig`` to it (data, model, dropout, loss, hard negatives, validation). A recipe reads only
its own group of the config (``group``: ``config.text_code``, ``config.image_text``) beside the
shared data and model groups. A new recipe subclasses this (or a built-in one) and is registered
with ``mmssl.recipes.register``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from mmssl.console import get_logger
from mmssl.data.pairs import Pairs
from mmssl.models import DualEncoder
from mmssl.models.text import set_dropout
from mmssl.recipes.config import DualModelConfig, PairDataConfig, TrainConfig

log = get_logger("recipes")
KS = (1, 5, 10)  # the recall@k every recipe reports


def timed(fn) -> dict:
    """``fn()``'s scores with the seconds it took."""
    start = time.monotonic()
    result = fn()
    return {**result, "seconds": time.monotonic() - start}


@dataclass(frozen=True)
class IndexItems:
    """A collection read for an index: what to embed, the text and payload each item shows, the
    queries that tune it (or None), and how many items the collection had before ``max_items``."""

    items: Sequence[Any]
    texts: list[str]
    payloads: list[dict]
    queries: Sequence[Any] | None
    available: int

    def __post_init__(self) -> None:
        if not len(self.items) == len(self.texts) == len(self.payloads):
            raise ValueError(f"{len(self.items)} items, {len(self.texts)} texts, {len(self.payloads)} payloads")


class Recipe(ABC):
    """One modality pair's data, model and evaluation (see the module docstring)."""

    name: str  # the --task value
    modalities: tuple[str, str]  # (query side, candidate side)
    group: str  # the TrainConfig group of this recipe's own options
    metric: str  # the validation metric that picks the best model (higher is better)

    @abstractmethod
    def load_pairs(
        self, source: str, partition: str | None, data: PairDataConfig | None = None, max_pairs: int | None = None
    ) -> Pairs:
        """The (query, candidate) pairs of ``source``'s ``partition`` (a seeded ``max_pairs`` of them)."""

    @abstractmethod
    def build_model(self, model: DualModelConfig, options, train: Pairs) -> DualEncoder:
        """The untrained dual encoder (``options``: this recipe's group; ``train``: for tokenizers)."""

    @abstractmethod
    def evaluate(self, model: DualEncoder, pairs: Pairs, batch_size: int = 128) -> dict:
        """Retrieval scores of ``model`` on ``pairs``, ``self.metric`` among them."""

    @abstractmethod
    def index_items(self, model: DualEncoder, data: str, modality: str, text_field: str | None,
                    partition: str | None, max_items: int | None) -> IndexItems:  # fmt: skip
        """The first ``max_items`` (all when None) items of a collection, ready to embed and store."""

    @abstractmethod
    def eval_command(self, config) -> int:
        """``mmssl eval --task NAME``: score a model (``mmssl.commands.EvalConfig``) and print it."""

    def loss(self, model: DualModelConfig) -> nn.Module:
        """The contrastive loss (InfoNCE; the model's learnable temperature is passed to it)."""
        from mmssl.losses import InfoNCELoss

        return InfoNCELoss(label_smoothing=model.label_smoothing)

    def check(self, config: TrainConfig) -> None:
        """Refuse options that contradict each other, before any data is read."""
        return None

    def build_task(self, config: TrainConfig, device: torch.device):
        """The ``ContrastiveTask`` a ``TrainConfig`` describes, on ``device``."""
        from mmssl.matryoshka import PCA_SAMPLE, parse_dims, parse_weights, pca_init, wants_pca
        from mmssl.negatives.refresh import negatives_for
        from mmssl.recipes.contrastive import ContrastiveTask

        self.check(config)
        parse_weights(config.model.matryoshka_weights, parse_dims(config.model.matryoshka))  # before any data
        if config.model.matryoshka_init == "pca" and not config.model.matryoshka:
            raise ValueError("--matryoshka-init pca needs --matryoshka (the prefix sizes)")
        data = config.data
        train = self.load_pairs(data.train, data.train_partition or None, data)  # '': every record
        if len(train) < config.engine.batch_size:
            raise ValueError(
                f"{data.train}: {len(train)} usable training pairs (partition {data.train_partition!r}), "
                f"fewer than --batch-size {config.engine.batch_size}"
            )
        # A seeded sample, not the first pairs: those would come from one or two repositories.
        valid = self.load_pairs(data.valid or data.train, data.valid_partition, data, max_pairs=data.eval_max_pairs)
        log.info("%s: %d training pairs, %d validation pairs", self.name, len(train), len(valid))
        model = self.build_model(config.model, getattr(config, self.group), train).to(device)
        if config.model.dropout is not None:
            n = set_dropout(model, config.model.dropout)
            log.info("dropout %.2f in %d layers", config.model.dropout, n)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("%s parameters, %s trainable", f"{sum(p.numel() for p in model.parameters()):,}", f"{trainable:,}")
        negatives = negatives_for(config.negatives, train, config.engine.max_steps)
        validation = (lambda m: self.evaluate(m, valid)) if len(valid) else None
        if validation is None:
            log.warning(
                "no validation pairs in %s (partition %r): no best-model selection, only the final model is saved",
                data.valid or data.train, data.valid_partition,
            )  # fmt: skip
        if train.captions is not None and data.first_caption_p is not None:
            train = replace(train, captions=replace(train.captions, first_p=data.first_caption_p))
        loss = self.loss(config.model)
        dims = parse_dims(config.model.matryoshka, model.config.embed_dim)
        if dims:  # the sizes it is trained for, recorded in its config (dual_encoder.json)
            from mmssl.losses import MatryoshkaLoss

            loss = MatryoshkaLoss(loss, dims, parse_weights(config.model.matryoshka_weights, dims))
            model.config = replace(model.config, matryoshka_dims=dims)
            log.info("Matryoshka: the loss summed over the prefixes %s of %d dims", list(dims), model.config.embed_dim)
            if wants_pca(config.model.matryoshka_init, model):
                if config.engine.resume:  # the checkpoint it loads holds the turned weights
                    log.info("Matryoshka: no turn to the principal axes on --resume (the checkpoint's weights have it)")
                else:
                    sample = train.sample(PCA_SAMPLE, config.engine.seed)
                    pca_init(model, sample, config.engine.batch_size)
                    log.info("Matryoshka: the output turned to the principal axes of %d pairs' embeddings", len(sample))
        return ContrastiveTask(
            model, loss, train, validation, self.metric, grad_cache=config.model.grad_cache,
            embedding_lr_scale=config.model.embedding_lr_scale, cluster_batches=config.negatives.cluster_batches,
            **negatives,
        )  # fmt: skip
