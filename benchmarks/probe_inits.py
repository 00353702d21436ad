"""What each initialization of the text tower gives retrieval before and after contrastive training.

A diagnostic for ``bench_pretrain.py`` (issue #4): the benchmark says whether masked-LM or causal-LM
pretraining helps; this says why or why not. For every pretraining directory of a benchmark run
(``OUT/pre-*/best|final``) and every dual encoder trained from one (``OUT/dual-*/best|final``), it
embeds the same held-out pairs (the corpus's ``valid`` partition, default 1,000: one CodeSearchNet
chunk) and reports

- zero-shot MRR of the mean-pooled hidden states (pretraining dirs: no contrastive step yet),
- the same after centering (subtracting each side's mean embedding, then normalizing): how much of
  a low raw score is one common direction that every embedding shares,
- anisotropy: the mean cosine between the embeddings of two different code snippets (0: spread out,
  1: all the same direction),
- effective rank of the centered code embeddings (exp of the entropy of the normalized singular
  values; at most the embedding size);
- with ``--layers``, for the pretraining dirs, the zero-shot MRR (centered) of every layer's
  mean-pooled hidden states, from the token embeddings (layer 0) to the last layer: where in the
  network the lexical match that code search lives on survives pretraining.

With ``--unigram``, first the perplexity of a unigram model (token frequencies of the train
partition, add-one smoothed) on the valid partition, with the pretraining tokenizer: the floor a
language model must beat to have learned anything from context.

Runs in a few minutes on 2 cores, fp32:
    .venv/bin/python benchmarks/probe_inits.py --bench runs/bench-pretrain
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path, code_length: int, text_length: int):
    from mmssl.models import DualEncoder, DualEncoderConfig, TowerConfig

    if (path / "dual_encoder.json").exists():
        return DualEncoder.from_pretrained(path)
    from transformers import AutoConfig

    hidden = AutoConfig.from_pretrained(path).hidden_size
    towers = {
        "text": TowerConfig(init=str(path), pooling="mean", max_length=text_length),
        "code": TowerConfig(init=str(path), pooling="mean", max_length=code_length),
    }
    # embed_dim == hidden: the projection starts as the identity, as in the benchmark's dual encoders.
    return DualEncoder.build(DualEncoderConfig(towers=towers, shared=True, embed_dim=hidden))


def stats(q: torch.Tensor, c: torch.Tensor) -> dict:
    from mmssl.evaluate import codesearchnet_mrr_embeddings, embedding_geometry

    def unit(x):
        return torch.nn.functional.normalize(x, dim=-1)

    out = {"mrr": float(codesearchnet_mrr_embeddings(unit(q), unit(c)).mrr)}
    qc, cc = q - q.mean(0), c - c.mean(0)
    out["mrr_centered"] = float(codesearchnet_mrr_embeddings(unit(qc), unit(cc)).mrr)
    geometry = embedding_geometry(c)
    out["anisotropy"], out["effective_rank"] = geometry["anisotropy"], geometry["effective_rank"]
    return out


@torch.inference_mode()
def layer_mrrs(tower, queries: list[str], codes: list[str], text_length: int, code_length: int) -> list[float]:
    """Centered zero-shot MRR of the mean-pooled hidden states of each layer (0 = token embeddings)."""
    from mmssl.evaluate import codesearchnet_mrr_embeddings
    from mmssl.models.text import pool

    model, tok = tower.backbone.eval(), tower.tokenizer

    def embed(texts, length):
        layers = None
        for start in range(0, len(texts), 128):
            chunk = texts[start : start + 128]
            batch = tok(chunk, padding=True, truncation=True, max_length=length, return_tensors="pt")
            mask = batch["attention_mask"]
            hidden = model(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=True)
            pooled = [pool(h, mask, "mean") for h in hidden.hidden_states]
            layers = pooled if layers is None else [torch.cat([a, b]) for a, b in zip(layers, pooled)]
        return layers

    out = []
    for q, c in zip(embed(queries, text_length), embed(codes, code_length)):
        q, c = q - q.mean(0), c - c.mean(0)
        unit = torch.nn.functional.normalize
        out.append(float(codesearchnet_mrr_embeddings(unit(q, dim=-1), unit(c, dim=-1)).mrr))
    return out


def unigram_perplexity(tokenizer_dir: Path, corpus: str, docs: int = 10000) -> float:
    """Perplexity on valid documents of train token frequencies (add-one), docstrings and code."""
    import math
    from collections import Counter

    from transformers import AutoTokenizer

    from mmssl.data.code_search import read_code_search

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)

    def documents(partition):
        part = read_code_search(corpus, partition=partition)
        return part.docstrings()[:docs] + part.codes()[:docs]

    counts = Counter()
    for ids in tok(documents("train"), add_special_tokens=False)["input_ids"]:
        counts.update(ids)
    total, vocab = sum(counts.values()), len(tok)
    nll = n = 0
    for ids in tok(documents("valid"), add_special_tokens=False)["input_ids"]:
        nll -= sum(math.log((counts[i] + 1) / (total + vocab)) for i in ids)
        n += len(ids)
    return math.exp(nll / n)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", default="runs/bench-pretrain", help="a bench_pretrain.py output folder")
    p.add_argument("--corpus", default="runs/bench-text-code/corpus.jsonl.gz")
    p.add_argument("--pairs", type=int, default=1000, help="held-out pairs (the valid partition's first N)")
    p.add_argument("--code-length", type=int, default=128)
    p.add_argument("--text-length", type=int, default=48)
    p.add_argument("--dirs", default="pre-*,dual-*", help="comma list of glob patterns under --bench")
    p.add_argument("--layers", action="store_true", help="per-layer zero-shot MRR of the pretraining dirs")
    p.add_argument("--unigram", action="store_true", help="unigram perplexity floor of the corpus")
    p.add_argument("--json", action="store_true", help="also write BENCH/probe_inits.json")
    args = p.parse_args()

    from mmssl.recipes.text_code import RECIPE as TEXT_CODE

    bench = ROOT / args.bench
    pairs = TEXT_CODE.load_pairs(str(ROOT / args.corpus), "valid")
    queries, codes = pairs.queries[: args.pairs], pairs.candidates[: args.pairs]
    dirs = [d for pattern in args.dirs.split(",") for d in sorted(bench.glob(pattern))]
    rows = {}
    if args.unigram:
        tokenizer_dir = next(d / n for d in sorted(bench.glob("pre-*")) for n in ("best", "final") if (d / n).exists())
        rows["unigram_perplexity"] = unigram_perplexity(tokenizer_dir, str(ROOT / args.corpus))
        print(
            f"unigram perplexity of the valid partition (tokenizer {tokenizer_dir}): {rows['unigram_perplexity']:.1f}"
        )
    torch.manual_seed(0)
    for d in dirs:
        if not d.is_dir() or d.name.endswith("-probe"):
            continue
        model_dir = d / "best" if (d / "best").exists() else d / "final"
        if not model_dir.exists():
            continue
        model = load(model_dir, args.code_length, args.text_length)
        q = model.embed("text", queries, normalize=False)
        c = model.embed("code", codes, normalize=False)
        rows[d.name] = stats(q, c)
        r = rows[d.name]
        print(
            f"{d.name:<24} MRR {r['mrr']:.4f}  centered {r['mrr_centered']:.4f}  "
            f"anisotropy {r['anisotropy']:.3f}  eff. rank {r['effective_rank']:.1f}",
            flush=True,
        )
        if args.layers and d.name.startswith("pre-"):
            tower = model.towers["text"]
            r["layer_mrr_centered"] = layer_mrrs(tower, queries, codes, args.text_length, args.code_length)
            print(f"{'':<24} by layer (centered): " + " ".join(f"{m:.4f}" for m in r["layer_mrr_centered"]), flush=True)
    if args.json:
        (bench / "probe_inits.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
