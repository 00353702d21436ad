"""Quantized indexes against float32 (issue #27, part b): bytes an item, build time, queries/s and
recall@10 against exact float search, for float32 / float16 / int8 / binary + rescoring / PQ fast-scan.

Data
    synthetic  the 1,000,000 x 256 set of ``bench_index.py`` (``Mixture``: a low-rank Gaussian mixture,
               L2-normalized), ``--queries`` held-out queries and 1,000 more that tuning uses
    real       all-MiniLM-L6-v2 (the demo's model: zero-shot, its int8 ONNX export, code at 128 tokens)
               embeddings of ``--real-items`` functions of the mined corpus (a seeded sample); queries:
               the docstrings of the first ``--real-queries`` of them, so each query's own function is in
               the index (MRR of it is reported beside recall); tuning: the next 1,000 docstrings.
               Embeddings are cached under ``--out``'s folder.

Configurations, each built by ``indexing.build_index_dir`` (what ``mmssl index build`` runs) and
searched by ``SearchIndex.search_vectors`` with the parameters its tuning chose (target recall@10 0.95):
    exact           float32, exact scan (``--index-type flat``): recall 1 by definition, the speed peer
    float32-ivf     float32 IVF-Flat
    float16         ``--embedding-dtype float16`` (FAISS SQfp16), the layer's structure for N
    int8            ``--embedding-dtype int8`` (FAISS SQ8)
    binary          ``--embedding-dtype binary``: sign codes (in the lists of float centroids beyond 20,000
                    items, else exact Hamming), the best ``rescore`` x 10 rescored against float32
                    vectors memory-mapped from disk
    binary-exact    the same with exact Hamming search over every code (synthetic only: at 20,000 items
                    ``binary`` already is that)
    pq-fastscan     4-bit PQ fast-scan codes alone, D/4 bytes (``--factory IVF{nlist},PQ{D/2}x4fs``: custom)
    pq-fastscan+rf  the layer's ``auto`` beyond 20,000 items: the same codes re-ranked with float32 vectors
                    held in memory

Columns: bytes an item in memory (the index file, read whole by FAISS, plus a binary index's id
array) and on disk beside it (a binary index's float vectors: a query reads ``rescore`` x 10 rows of
them through the page cache), build seconds (train, fill, tune, write), batch queries/s (all queries
in one call, median of ``--repeats``, the configurations taking turns in alternating order) with its
ratio to exact search, single-query p50 ms, recall@10 against exact search (|found ∩ exact| / 10).

Targets (reported, not asserted): binary + rescore reaches recall@10 >= 0.95 with <= 1/16 of float32's
memory, at >= 10x exact search's queries/s.

    .venv/bin/python benchmarks/bench_quantized.py                    # both sets (about 30 min on 2 cores)
    .venv/bin/python benchmarks/bench_quantized.py --sets real --markdown
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import faiss  # noqa: E402
from bench_index import Mixture, search_times  # noqa: E402

from indexing import ArrayShards, SearchIndex, build_index_dir  # noqa: E402
from indexing.plan import default_nlist  # noqa: E402
from indexing.tune import recall_at  # noqa: E402
from mmssl.runtime import cpu_name  # noqa: E402

K = 10


def configs(n: int, d: int, real: bool) -> dict[str, dict]:
    nlist = default_nlist(n)
    out = {
        "exact": dict(index_type="flat", embedding_dtype="float32"),
        "float32-ivf": dict(index_type="ivf_flat", embedding_dtype="float32"),
        "float16": dict(embedding_dtype="float16"),
        "int8": dict(embedding_dtype="int8"),
        "binary": dict(embedding_dtype="binary"),
        "binary-exact": dict(embedding_dtype="binary", index_type="flat"),
        "pq-fastscan": dict(factory=f"IVF{nlist},PQ{d // 2}x4fs"),
        "pq-fastscan+rf": dict(index_type="ivf_fastscan"),
    }
    if real:
        del out["binary-exact"]
    return out


def synthetic(args) -> tuple[np.ndarray, np.ndarray, np.ndarray, None]:
    mix = Mixture(args.dim)
    return mix.sample(args.n, seed=1), mix.sample(args.queries, seed=2), mix.sample(1000, seed=3), None


def real(args) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(items, queries, tuning queries, each query's own item row) of MiniLM on the mined corpus."""
    cache = ROOT / Path(args.out).parent / f"real-{args.real_items}.npz"
    if cache.exists():
        z = np.load(cache)
        return z["xb"], z["xq"], z["xt"], z["own"]
    from mmssl.data.code_search import read_code_search
    from mmssl.export.onnx import export_onnx
    from mmssl.export.onnx_encoder import load_encoder
    from mmssl.recipes.text_code_eval import sentence_encoder
    from mmssl.runtime import seeded_subset

    records = [r for r in read_code_search(args.corpus, required=("code", "docstring")).records if r["docstring"]]
    pick = seeded_subset(len(records), args.real_items, seed=0).tolist()
    chosen = [records[i] for i in pick]
    n_q = args.real_queries
    work = Path(tempfile.mkdtemp(prefix="bench-quantized-"))
    sentence_encoder("minilm", "cpu", max_code_length=128).save_pretrained(work / "minilm")
    export_onnx(work / "minilm", work / "onnx", quantize="int8")
    model = load_encoder(work / "onnx")
    start = time.perf_counter()
    xb = np.asarray(model.embed("code", [r["code"] for r in chosen], 64), dtype=np.float32)
    texts = [r["docstring"] for r in chosen[: n_q + 1000]]
    xqt = np.asarray(model.embed("text", texts, 64), dtype=np.float32)
    print(f"embedded {len(xb):,} functions and {len(texts):,} docstrings in {time.perf_counter() - start:.0f}s")
    shutil.rmtree(work)
    own = np.arange(n_q)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, xb=xb, xq=xqt[:n_q], xt=xqt[n_q:], own=own)
    return xb, xqt[:n_q], xqt[n_q:], own


def mrr_of(found: np.ndarray, own: np.ndarray) -> float:
    """Mean reciprocal rank of each query's own item within the K found (0 beyond K)."""
    ranks = [np.flatnonzero(row == o) for row, o in zip(found, own)]
    return float(np.mean([1.0 / (r[0] + 1) if len(r) else 0.0 for r in ranks]))


def run_set(name: str, xb, xq, xt, own, args, work: Path) -> list[dict]:
    n, d = xb.shape
    print(f"\n== {name}: {n:,} x {d}, {len(xq):,} queries", flush=True)
    exact = faiss.knn(xq, xb, K, metric=faiss.METRIC_INNER_PRODUCT)[1]
    shards = ArrayShards(xb)
    rows, searches, loaded = [], {}, []
    for config, kw in configs(n, d, own is not None).items():
        if args.only and config not in args.only:
            continue
        out = work / f"{name}-{config}"
        start = time.perf_counter()
        manifest = build_index_dir(out, shards, tune_queries=xt, overwrite=True, **kw)
        build_s = time.perf_counter() - start
        index = SearchIndex.load(out, use_gpu=False)
        loaded.append(index)
        info = index.info()
        searches[config] = index.search_vectors
        rows.append(
            {
                "set": name, "config": config, "factory": manifest.factory, "dtype": manifest.embedding_dtype,
                "index_type": manifest.index_type, "params": manifest.search_params, "build_s": round(build_s, 1),
                "tuned_recall": manifest.tuning.get("recall"), "memory_per_item": info["bytes_per_item"]["memory"],
                "disk_per_item": info["bytes_per_item"]["disk"],
            }
        )  # fmt: skip
        print(f"[{config}] {manifest.factory} {manifest.search_params} built in {build_s:.0f}s", flush=True)
    times = search_times(searches, xq, K, args.single, args.repeats)
    base = next(r for r in rows if r["config"] == "exact")
    exact_qps = len(xq) / times["exact"][0]
    for row in rows:
        batch_s, p50, p99, found = times[row["config"]]
        row.update(
            qps=round(len(xq) / batch_s, 1), qps_vs_exact=round(len(xq) / batch_s / exact_qps, 2),
            p50_ms=round(p50, 3), p99_ms=round(p99, 3), recall_at_10=round(recall_at(found, exact), 4),
            memory_vs_float32=round(row["memory_per_item"] / base["memory_per_item"], 4),
        )  # fmt: skip
        if own is not None:
            row["mrr_at_10"] = round(mrr_of(found, own), 4)
    for index in loaded:
        index.close()
    for config in searches:
        shutil.rmtree(work / f"{name}-{config}", ignore_errors=True)
    return rows


def table(rows: list[dict], markdown: bool) -> str:
    real = any("mrr_at_10" in r for r in rows)
    head = ["config", "factory", "params", "bytes/item RAM", "on disk", "RAM vs f32", "build s", "queries/s",
            "vs exact", "p50 ms", "recall@10"] + (["MRR@10 own code"] if real else [])  # fmt: skip
    lines = []
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        cells = [r["config"], f"`{r['factory']}`", params, f"{r['memory_per_item']:,.1f}",
                 f"{r['disk_per_item']:,.0f}", f"{r['memory_vs_float32']:.3f}", f"{r['build_s']:.0f}",
                 f"{r['qps']:,.0f}", f"{r['qps_vs_exact']:.1f}x", f"{r['p50_ms']:.2f}",
                 f"{r['recall_at_10']:.4f}"] + ([f"{r['mrr_at_10']:.4f}"] if real else [])  # fmt: skip
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(out + ["| " + " | ".join(c) + " |" for c in lines])
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*c) for c in lines])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default="synthetic,real")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=2_000)
    p.add_argument("--corpus", default="runs/bench-text-code/corpus.jsonl.gz", help="mined corpus (bench_text_code)")
    p.add_argument("--real-items", type=int, default=20_000)
    p.add_argument("--real-queries", type=int, default=2_000)
    p.add_argument("--only", default="", help="configurations to run (default: all; exact is always needed)")
    p.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default="runs/bench-quantized/results.json")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    args.only = set(args.only.split(",")) | {"exact"} if args.only else None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-quantized-"))
    started = dt.datetime.now(dt.UTC)
    rows = []
    for name in args.sets.split(","):
        data = synthetic(args) if name == "synthetic" else real(args)
        rows += run_set(name, *data, args, work)
        print("\n" + table([r for r in rows if r["set"] == name], args.markdown), flush=True)
    meta = {"date": started.strftime("%Y-%m-%d"), "cpu": cpu_name(), "faiss": faiss.__version__, "args": vars(args)}
    meta["args"]["only"] = sorted(args.only) if args.only else None
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    for name in args.sets.split(","):
        print(f"\n{name}\n" + table([r for r in rows if r["set"] == name], args.markdown))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
