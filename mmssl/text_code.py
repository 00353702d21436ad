"""The text-code task: CodeSearchNet pairs -> a text/code dual encoder, its task and its validation.

Queries are docstrings (the "text" side), candidates are code with the docstring removed.
Towers given with ``--text-init``/``--code-init`` bring their own tokenizer; towers built from
scratch get a byte-level BPE tokenizer trained on the training split (one shared tokenizer when
the towers are shared).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mmssl.console import get_logger
from mmssl.data.code_search import read_code_search
from mmssl.evaluate import codesearchnet_mrr_embeddings, recall_at_k
from mmssl.losses import InfoNCELoss
from mmssl.models import DualEncoder, DualEncoderConfig, TowerConfig
from mmssl.models.text import hidden_size, set_dropout
from mmssl.models.tokenizer import train_bpe_tokenizer
from mmssl.negatives import negatives_for
from mmssl.tasks import ContrastiveTask, Pairs

log = get_logger("text_code")
TOKENIZER_SAMPLE = 50_000  # texts the BPE tokenizer is trained on (enough for a stable vocabulary)


def load_pairs(source: str, partition: str | None) -> Pairs:
    corpus = read_code_search(source, partition=partition)
    return Pairs.from_texts(corpus.docstrings(), corpus.codes())


def evaluate_pairs(model: DualEncoder, pairs: Pairs, batch_size: int = 128) -> dict[str, float]:
    """MRR by the CodeSearchNet protocol and recall@k over the whole set, docstring -> code."""
    q = model.embed("text", pairs.queries, batch_size)  # (N, D)
    c = model.embed("code", pairs.candidates, batch_size)  # (N, D)
    result = codesearchnet_mrr_embeddings(q, c)
    return {"mrr": float(result.mrr), **recall_at_k(q, c, ks=(1, 5, 10)), "n": len(pairs)}


def build_model(config, train: Pairs) -> DualEncoder:
    """The dual encoder a ``TrainConfig`` describes; tokenizers trained on ``train`` where needed."""

    def tower(init: str | None, max_length: int) -> TowerConfig:
        return TowerConfig(
            init=init, arch=config.arch, preset=config.preset, pooling=config.pooling, max_length=max_length
        )

    # Shared towers: one backbone (DualEncoder.build sizes it for the longer side), but each side
    # keeps its own truncation length.
    towers = {
        "text": tower(config.text_init, config.max_text_length),
        "code": tower(config.text_init if config.shared else config.code_init, config.max_code_length),
    }
    embed_dim = config.embed_dim
    if embed_dim is None:
        init = config.text_init or config.code_init
        embed_dim = hidden_size(init) if init else 256
    tokenizers = {}
    sample = slice(0, TOKENIZER_SAMPLE)
    if config.shared and not config.text_init:
        texts = train.queries[sample] + train.candidates[sample]
        tok = train_bpe_tokenizer(texts, config.vocab_size, split_identifiers=config.split_identifiers)
        tokenizers = {"text": tok, "code": tok}
    else:
        for side, texts, max_length, init in (
            ("text", train.queries, config.max_text_length, config.text_init),
            ("code", train.candidates, config.max_code_length, config.code_init),
        ):
            if not init:
                tokenizers[side] = train_bpe_tokenizer(
                    texts[sample], config.vocab_size, max_length=max_length, split_identifiers=config.split_identifiers
                )
    dual = DualEncoderConfig(
        modalities=("text", "code"),
        towers=towers,
        shared=config.shared,
        embed_dim=embed_dim,
        init_temperature=config.temperature,
    )
    return DualEncoder.build(dual, tokenizers)


def build_text_code(config, device: torch.device) -> tuple[ContrastiveTask, Callable | None]:
    """(task, validation function) for ``mmssl train --task text-code``."""
    train = load_pairs(config.train, config.train_partition)
    if len(train) < config.batch_size:
        raise ValueError(
            f"{config.train}: {len(train)} training pairs (partition {config.train_partition!r}), "
            f"fewer than --batch-size {config.batch_size}"
        )
    # A seeded sample, not the first pairs: those would come from one or two repositories.
    valid = load_pairs(config.valid or config.train, config.valid_partition).sample(config.eval_max_pairs, seed=0)
    log.info("text-code: %d training pairs, %d validation pairs", len(train), len(valid))
    model = build_model(config, train).to(device)
    if config.dropout is not None:
        n = set_dropout(model, config.dropout)
        log.info("dropout %.2f in %d layers", config.dropout, n)
    loss = InfoNCELoss(label_smoothing=config.label_smoothing)
    task = ContrastiveTask(model, loss, train, grad_cache=config.grad_cache, **negatives_for(config, train))
    valid_fn = (lambda m: evaluate_pairs(m, valid)) if len(valid) else None
    if valid_fn is None:
        log.warning("no validation pairs: no best-model selection, only the final model is saved")
    return task, valid_fn
