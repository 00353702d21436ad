"""``mmssl eval --task text-code``: MRR (CodeSearchNet protocol) and recall@k of a dual encoder, next
to BM25 over code tokens and a sentence-embedding baseline, on one seeded sample of pairs."""

from __future__ import annotations

import json
from dataclasses import replace

from mmssl.evaluate import MRRResult, codesearchnet_mrr, recall_at_k_from_scores_fn
from mmssl.recipes.base import KS, timed
from mmssl.runtime import resolve_device


def score_row(mrr: MRRResult, recalls: dict[str, float], n: int) -> dict:
    """One scorer's row: MRR, recall@k, the pair count and the per-chunk MRRs (independent test
    shards, for spreads and paired comparisons)."""
    chunks = {"mrr_chunk_std": mrr.chunk_mrr_std, "chunk_mrrs": [float(x) for x in mrr.chunk_mrrs]}
    return {"mrr": float(mrr.mrr), **recalls, "n": n, **chunks}


def score_bm25(pairs, chunk_size: int = 1000, seed: int = 0) -> dict:
    """BM25 over code tokens as a scorer, under the same protocol as the models."""
    from mmssl.bm25 import BM25Index, code_search_tokens

    index = BM25Index.from_documents([code_search_tokens(c) for c in pairs.candidates])
    scores_fn = index.scores_fn([code_search_tokens(q) for q in pairs.queries])
    mrr = codesearchnet_mrr(scores_fn, len(pairs), chunk_size=chunk_size, seed=seed)
    return score_row(mrr, recall_at_k_from_scores_fn(scores_fn, len(pairs), KS), len(pairs))


def sentence_encoder(path: str, device, max_code_length: int = 256):
    """A sentence-embedding model directory as a shared-tower dual encoder (identity projection);
    texts truncated at 256 tokens, codes at ``max_code_length``."""
    from mmssl.models import DualEncoder, DualEncoderConfig, TowerConfig
    from mmssl.models.text import hidden_size, resolve_init, sentence_pooling

    tower = TowerConfig(init=path, pooling=sentence_pooling(resolve_init(path)), max_length=256)
    towers = {"text": tower, "code": replace(tower, max_length=max_code_length)}
    config = DualEncoderConfig(towers=towers, shared=True, embed_dim=hidden_size(path))
    return DualEncoder.build(config).to(device)


def eval_command(recipe, config) -> int:
    """Score ``config.model`` and the baselines asked for on ``config.data``; print a table or JSON."""
    if not (config.model or config.bm25 or config.baseline_model):
        raise ValueError("nothing to score: give --model, --bm25 and/or --baseline-model")
    pairs = recipe.load_pairs(config.data, config.partition or None).sample(config.max_pairs, config.seed)
    if len(pairs) < 2:
        raise ValueError(f"{config.data}: {len(pairs)} pairs in partition {config.partition!r}; need at least 2")
    device = resolve_device(config.device)
    protocol = {"batch_size": config.batch_size, "chunk_size": config.chunk_size, "seed": config.seed}
    rows: dict[str, dict] = {}
    if config.model:
        from mmssl.export.onnx_encoder import load_encoder
        from mmssl.matryoshka import PrefixEncoder, parse_dims

        encoder = load_encoder(config.model, device)
        dims = parse_dims(config.dims, encoder.config.embed_dim, "--dims")
        cache: dict = {}  # the model embeds once; each size is a prefix of the same embeddings
        full = PrefixEncoder(encoder, encoder.config.embed_dim, cache) if dims else encoder
        rows["model"] = timed(lambda: recipe.evaluate(full, pairs, **protocol))
        for d in dims:
            if d != encoder.config.embed_dim:
                rows[f"model@{d}"] = timed(
                    lambda d=d: recipe.evaluate(PrefixEncoder(encoder, d, cache), pairs, **protocol)
                )
    if config.bm25:
        rows["bm25"] = timed(lambda: score_bm25(pairs, config.chunk_size, config.seed))
    if config.baseline_model:
        rows["baseline"] = timed(
            lambda: recipe.evaluate(sentence_encoder(config.baseline_model, device), pairs, **protocol)
        )
    if config.json:
        main_row = rows.get("model") or next(iter(rows.values()))
        baselines = {k: v for k, v in rows.items() if k != "model"}
        out = {**main_row, "data": config.data, "partition": config.partition, "baselines": baselines}
        print(json.dumps(out, indent=2))
        return 0
    chunk = min(config.chunk_size, len(pairs))
    print(f"{len(pairs)} pairs from {config.data} (partition {config.partition}); MRR over chunks of {chunk}")
    print(f"{'scorer':<11} {'MRR':>7} {'R@1':>7} {'R@5':>7} {'R@10':>7} {'seconds':>8}")
    for name, r in rows.items():
        print(
            f"{name:<11} {r['mrr']:7.4f} {r['recall@1']:7.4f} {r['recall@5']:7.4f} {r['recall@10']:7.4f}"
            f" {r['seconds']:8.1f}"
        )
    return 0
