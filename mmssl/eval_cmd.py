"""``mmssl eval``: retrieval quality of a dual encoder, next to BM25 and a sentence-embedding baseline.

``--task image-text`` scores an image-text model instead (``mmssl.image_text_eval``): recall@1/5/10
both ways, zero-shot classification and linear probes, optionally next to the same model untrained.

MRR follows the CodeSearchNet protocol (``mmssl.evaluate.codesearchnet_mrr``: pairs shuffled with
a fixed seed into chunks of 1,000, each query ranks its code among the chunk's, ties count against
the model); recall@k ranks each query against the whole file.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Literal

from mmssl.console import setup_logging
from mmssl.evaluate import codesearchnet_mrr, codesearchnet_mrr_embeddings, recall_at_k, recall_at_k_from_scores_fn
from mmssl.runtime import resolve_device
from mmssl.tasks import Pairs

KS = (1, 5, 10)


@dataclass(frozen=True)
class EvalConfig:
    """Score a model (and baselines): text-code: MRR (CodeSearchNet protocol), recall@1/5/10; image-text:
    recall@1/5/10 both ways, zero-shot accuracy, linear probes."""

    task: Literal["text-code", "image-text"] = field(default="text-code", metadata={"help": "what to evaluate"})
    model: str | None = field(default=None, metadata={"help": "a dual encoder directory (from mmssl train)"})
    data: str = field(
        default="", metadata={"help": "text-code: CodeSearchNet .jsonl[.gz] file or folder; image-text: image pairs"}
    )
    partition: str | None = field(default="test", metadata={"help": "records of this partition ('' for all)"})
    train_partition: str | None = field(
        default="train", metadata={"help": "image-text: the linear probes' training split ('' for no probe)"}
    )
    untrained: bool = field(
        default=False, metadata={"help": "image-text: also score the model's untrained initialization (seed 0)"}
    )
    bm25: bool = field(default=False, metadata={"help": "also score BM25 over code tokens"})
    baseline_model: str | None = field(
        default=None, metadata={"help": "also score a sentence-embedding model dir (e.g. minilm), zero-shot"}
    )
    max_pairs: int | None = field(default=None, metadata={"help": "use a seeded random sample of N pairs"})
    chunk_size: int = field(default=1000, metadata={"help": "candidates per query for MRR (CodeSearchNet: 1000)"})
    seed: int = field(default=0, metadata={"help": "shuffle seed of the MRR protocol"})
    batch_size: int = field(default=128, metadata={"help": "embedding batch size"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda[:N], mps"})
    json: bool = field(default=False, metadata={"help": "print one JSON object"})


def score_embeddings(model, pairs: Pairs, config: EvalConfig) -> dict:
    q = model.embed(model.config.modalities[0], pairs.queries, config.batch_size)
    c = model.embed(model.config.modalities[1], pairs.candidates, config.batch_size)
    mrr = codesearchnet_mrr_embeddings(q, c, chunk_size=config.chunk_size, seed=config.seed)
    return {"mrr": mrr.mrr, **recall_at_k(q, c, KS), "n": len(pairs), **_chunks(mrr)}


def score_bm25(pairs: Pairs, config: EvalConfig) -> dict:
    from mmssl.bm25 import BM25Index, code_search_tokens

    index = BM25Index.from_documents([code_search_tokens(c) for c in pairs.candidates])
    scores_fn = index.scores_fn([code_search_tokens(q) for q in pairs.queries])
    mrr = codesearchnet_mrr(scores_fn, len(pairs), chunk_size=config.chunk_size, seed=config.seed)
    return {
        "mrr": mrr.mrr,
        **recall_at_k_from_scores_fn(scores_fn, len(pairs), KS),
        "n": len(pairs),
        **_chunks(mrr),
    }


def sentence_encoder(path: str, device):
    """A sentence-embedding model directory as a shared-tower dual encoder (identity projection)."""
    from mmssl.models import DualEncoder, DualEncoderConfig, TowerConfig
    from mmssl.models.text import hidden_size, resolve_init, sentence_pooling

    tower = TowerConfig(init=path, pooling=sentence_pooling(resolve_init(path)), max_length=256)
    hidden = hidden_size(path)
    config = DualEncoderConfig(towers={"text": tower, "code": tower}, shared=True, embed_dim=hidden)
    return DualEncoder.build(config).to(device)


def image_text_main(config: EvalConfig) -> int:
    from mmssl.image_text_eval import evaluate_model, untrained_like
    from mmssl.models import DualEncoder

    if not config.model:
        raise ValueError("--model is required for --task image-text")
    device = resolve_device(config.device)
    rows = {"model": DualEncoder.from_pretrained(config.model, device)}
    if config.untrained:
        rows["untrained"] = untrained_like(config.model).to(device)
    scores = {
        name: _timed(
            lambda m=m: evaluate_model(
                m, config.data, config.partition or None, config.train_partition or None, config.batch_size
            )
        )
        for name, m in rows.items()
    }
    if config.json:
        out = {**scores["model"], "data": config.data, "partition": config.partition}
        if "untrained" in scores:
            out["baselines"] = {"untrained": scores["untrained"]}
        print(json.dumps(out, indent=2))
        return 0
    first = scores["model"]
    print(f"{first['n']} images, {first['captions']} distinct captions from {config.data} (split {config.partition})")
    print(f"{'model':<10} {'T>I R@1':>8} {'R@5':>7} {'R@10':>7} {'I>T R@1':>8} {'R@5':>7} {'R@10':>7}")
    for name, r in scores.items():
        t2i = [r[f"text_to_image_recall@{k}"] for k in KS]
        i2t = [r[f"image_to_text_recall@{k}"] for k in KS]
        print(f"{name:<10} {t2i[0]:8.4f} {t2i[1]:7.4f} {t2i[2]:7.4f} {i2t[0]:8.4f} {i2t[1]:7.4f} {i2t[2]:7.4f}")
    for name, r in scores.items():
        for task, z in r["zero_shot"].items():
            probe = r["linear_probe"].get(task)
            probe_text = f", linear probe {probe:.4f}" if probe is not None else ""
            print(
                f"{name:<10} {task}: zero-shot top-1 {z['top1']:.4f} over {z['classes']} classes "
                f"(majority class {z['majority']:.4f}){probe_text}"
            )
    return 0


def main(config: EvalConfig) -> int:
    from mmssl.text_code import load_pairs

    setup_logging("WARNING" if config.json else "INFO")
    if config.task == "image-text":
        if not config.data:
            raise ValueError("--data is required (image-caption pairs: CSV, JSONL, a folder, shards)")
        return image_text_main(config)
    if not config.data:
        raise ValueError("--data is required (a CodeSearchNet .jsonl[.gz] file or folder)")
    if not (config.model or config.bm25 or config.baseline_model):
        raise ValueError("nothing to score: give --model, --bm25 and/or --baseline-model")
    pairs = load_pairs(config.data, config.partition or None).sample(config.max_pairs, config.seed)
    if len(pairs) < 2:
        raise ValueError(f"{config.data}: {len(pairs)} pairs in partition {config.partition!r}; need at least 2")
    device = resolve_device(config.device)
    rows: dict[str, dict] = {}
    if config.model:
        from mmssl.models import DualEncoder

        rows["model"] = _timed(
            lambda: score_embeddings(DualEncoder.from_pretrained(config.model, device), pairs, config)
        )
    if config.bm25:
        rows["bm25"] = _timed(lambda: score_bm25(pairs, config))
    if config.baseline_model:
        rows["baseline"] = _timed(
            lambda: score_embeddings(sentence_encoder(config.baseline_model, device), pairs, config)
        )
    if config.json:
        main_row = rows.get("model") or next(iter(rows.values()))
        print(
            json.dumps(
                {
                    **main_row,
                    "data": config.data,
                    "partition": config.partition,
                    "baselines": {k: v for k, v in rows.items() if k != "model"},
                },
                indent=2,
            )
        )
        return 0
    chunk = min(config.chunk_size, len(pairs))
    print(f"{len(pairs)} pairs from {config.data} (partition {config.partition}); MRR over chunks of {chunk}")
    print(f"{'scorer':<10} {'MRR':>7} {'R@1':>7} {'R@5':>7} {'R@10':>7} {'seconds':>8}")
    for name, r in rows.items():
        print(
            f"{name:<10} {r['mrr']:7.4f} {r['recall@1']:7.4f} {r['recall@5']:7.4f} {r['recall@10']:7.4f}"
            f" {r['seconds']:8.1f}"
        )
    return 0


def _chunks(mrr) -> dict:
    """Per-chunk MRRs: independent test shards, for spreads and paired comparisons."""
    return {"mrr_chunk_std": mrr.chunk_mrr_std, "chunk_mrrs": [float(x) for x in mrr.chunk_mrrs]}


def _timed(fn) -> dict:
    start = time.monotonic()
    result = fn()
    return {**result, "seconds": time.monotonic() - start}
