"""Indexing benchmark: each index type the layer picks, next to the same index built with raw FAISS.

What it measures
    Data: N vectors of dimension D (default 1,000,000 x 256) drawn from a Gaussian mixture of
    ``--centers`` clusters and L2-normalized (what embeddings look like, not uniform noise); Q
    held-out queries (default 10,000) from the same mixture, and 1,000 more held-out ones that the
    layer tunes its search parameters on. Reference: the exact top-10 of every query by inner
    product (FAISS ``knn``).

    Configurations (the types ``indexing.build.choose_index`` picks):
        flat      exact search (``--index-type flat``): the speed reference
        ivf_flat  what the layer picks for N with no memory budget
        ivf_pq    what it picks under ``--pq-budget`` (default: 1/4 of what exact vectors need)
        ondisk    what it picks when not even PQ codes fit ``--ondisk-budget`` (default 64 MiB):
                  inverted lists on disk, memory-mapped

    For each: layer build = ``indexing.build.build_in_memory`` (train on the plan's sample, add with
    ids, id lookup) vs raw = ``faiss.index_factory`` + ``train`` on the same rows + ``add_with_ids``;
    the layer's whole ``build_index_dir`` (with tuning, metadata and the atomic write) is reported
    apart. Search with the tuned nprobe: batch queries/s over all Q queries, and single-query p50 /
    p99 latency over ``--single`` queries one at a time, layer (``SearchIndex.search_vectors``) vs raw
    (``index.search`` with the same ``SearchParametersIVF``), interleaved, median of ``--repeats``.
    Memory: bytes of the serialized index (what ``read_index`` holds in RAM; for on-disk, the part
    in RAM and the lists on disk apart). Recall@10: |found ∩ exact| / 10 averaged over queries.

Targets (reported; the exit status does not depend on them)
    - the layer's overhead over raw FAISS <= 5 % in build and search time;
    - the auto-chosen index (ivf_flat) reaches recall@10 >= 0.95 at >= 20x the queries/s of exact search.

Command (from the repository root; about 25 minutes on 2 cores at the default size):

    .venv/bin/python benchmarks/bench_index.py [--n 1000000] [--dim 256] [--queries 10000] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import faiss  # noqa: E402

from indexing.build import (  # noqa: E402
    ArrayShards,
    build_in_memory,
    choose_index,
    memory_estimate,
    recall_at,
    search_parameters,
)
from indexing.index import SearchIndex, build_index_dir  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def mixture(n: int, d: int, centers: int, seed: int, mu: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if mu is None:
        mu = rng.normal(size=(centers, d)).astype(np.float32)
    x = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks: keeps the float64 temporaries small
        m = min(100_000, n - start)
        block = mu[rng.integers(0, len(mu), m)] + 0.6 * rng.normal(size=(m, d)).astype(np.float32)
        x[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x, mu


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def search_times(search, xq, k, singles, repeats):
    """(median batch seconds, p50 single ms, p99 single ms, ids of the batch search)."""
    batch, found = [], None
    for _ in range(repeats):
        (_, found), t = timed(lambda: search(xq, k))
        batch.append(t)
    lat = []
    for q in xq[:singles]:
        q = q[None]
        t = time.perf_counter()
        search(q, k)
        lat.append((time.perf_counter() - t) * 1000)
    return statistics.median(batch), float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), found


def raw_search_with(index, params, xq, k):
    return index.search(xq, k, params=params)


def raw_build(plan, xb, ids, sample_rows):
    index = faiss.index_factory(xb.shape[1], plan.factory, faiss.METRIC_INNER_PRODUCT)
    if faiss.try_extract_index_ivf(index) is None:
        index = faiss.IndexIDMap2(index)
    if not index.is_trained:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.cp.seed = 0
        index.train(xb[sample_rows])
    index.add_with_ids(xb, ids)
    return index


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--centers", type=int, default=1000)
    p.add_argument("--single", type=int, default=1000, help="queries timed one at a time")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pq-budget", default=None, help="memory budget for the PQ row (default: 1/4 of exact vectors)")
    p.add_argument("--ondisk-budget", default="64M")
    p.add_argument("--only", default="flat,ivf_flat,ivf_pq,ondisk")
    p.add_argument("--workdir", default=None, help="where the index directories go (default: a temp dir)")
    p.add_argument("--out", default="runs/bench-index/results.json")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()

    from indexing.build import parse_budget

    n, d, k = args.n, args.dim, 10
    started = dt.datetime.now(dt.UTC)
    print(f"data: {n:,} x {d} mixture of {args.centers} clusters, {args.queries:,} queries", flush=True)
    xb, mu = mixture(n, d, args.centers, seed=0)
    xq, _ = mixture(args.queries, d, args.centers, seed=1, mu=mu)
    xtune, _ = mixture(1000, d, args.centers, seed=2, mu=mu)
    ids = np.arange(n, dtype=np.int64)
    (_, gt), t_gt = timed(lambda: faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT))
    print(f"exact top-{k} of {len(xq):,} queries: {t_gt:.1f}s", flush=True)
    shards = ArrayShards(xb, ids)
    pq_budget = parse_budget(args.pq_budget) or memory_estimate("ivf_flat", n, d, choose_index(n, d).nlist) // 4
    configs = {
        "flat": dict(index_type="flat"),
        "ivf_flat": dict(),
        "ivf_pq": dict(memory_budget=pq_budget),
        "ondisk": dict(memory_budget=parse_budget(args.ondisk_budget)),
    }
    rows, exact_qps = [], None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-index-"))
    for name in args.only.split(","):
        kw = configs[name]
        plan = choose_index(n, d, kw.get("memory_budget"), index_type=kw.get("index_type", "auto"))
        print(f"\n[{name}] {plan.factory} ({plan.reason})", flush=True)
        row = {"config": name, "factory": plan.factory, "reason": plan.reason}
        if not plan.ondisk and plan.index_type != "flat":
            rng = np.random.default_rng(0)
            sample_rows = np.sort(rng.choice(n, min(plan.train_size, n), replace=False))
            # interleaved: raw, layer (the layer's ArrayShards.sample draws the same rows)
            raw, row["raw_build_s"] = timed(partial(raw_build, plan, xb, ids, sample_rows))
            _, row["layer_build_s"] = timed(partial(build_in_memory, plan, shards, use_gpu=False))
            del _
        out = work / name
        manifest, row["layer_build_dir_s"] = timed(
            partial(build_index_dir, out, shards, tune_queries=xtune, overwrite=True, **kw)
        )
        row["search_params"] = manifest.search_params
        row["tuned_recall"] = manifest.tuning.get("recall")
        index = SearchIndex.load(out, verify=False, use_gpu=False)
        if plan.ondisk:
            row["ram_bytes"] = (out / "index.faiss").stat().st_size
            row["disk_bytes"] = (out / "ivf.ondisk").stat().st_size
        else:
            row["ram_bytes"] = len(faiss.serialize_index(index.index))
        row["estimate_bytes"] = plan.memory_bytes
        if plan.index_type == "flat" or plan.ondisk:
            raw = index.index  # raw FAISS on the very same object: only the call path differs
        params = search_parameters(raw, manifest.search_params)
        raw_search = partial(raw_search_with, raw, params)
        layer_search = index.search_vectors
        t_raw, p50_raw, p99_raw, _ = search_times(raw_search, xq, k, args.single, args.repeats)
        t_lay, p50_lay, p99_lay, found = search_times(layer_search, xq, k, args.single, args.repeats)
        row.update(
            raw_qps=len(xq) / t_raw,
            layer_qps=len(xq) / t_lay,
            raw_p50_ms=p50_raw,
            raw_p99_ms=p99_raw,
            layer_p50_ms=p50_lay,
            layer_p99_ms=p99_lay,
            recall_at_10=recall_at(found, gt),
        )
        if name == "flat":
            exact_qps = row["layer_qps"]
        index.close()
        rows.append(row)
        print(json.dumps(row), flush=True)
    for row in rows:
        row["speedup_vs_exact"] = row["layer_qps"] / exact_qps if exact_qps else None
    meta = {
        "date": started.strftime("%Y-%m-%d"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "faiss": faiss.__version__,
        "n": n,
        "dim": d,
        "queries": len(xq),
        "centers": args.centers,
        "exact_gt_seconds": t_gt,
    }
    out_file = ROOT / args.out
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print_table(rows, meta, args.markdown)


def _pct(layer, raw):
    return f"{100 * (layer / raw - 1):+.1f}%" if layer and raw else "-"


def print_table(rows, meta, markdown: bool) -> None:
    head = [
        "config",
        "factory",
        "params",
        "build s (layer/raw, overhead)",
        "build dir s",
        "RAM MiB",
        "q/s layer (raw, overhead)",
        "p50 / p99 ms layer",
        "p50 / p99 ms raw",
        "recall@10",
        "x exact",
    ]
    lines = []
    for r in rows:
        build = (
            f"{r['layer_build_s']:.1f} / {r['raw_build_s']:.1f} ({_pct(r['layer_build_s'], r['raw_build_s'])})"
            if "raw_build_s" in r
            else "-"
        )
        ram = f"{r['ram_bytes'] / 2**20:,.0f}" + (
            f" (+{r['disk_bytes'] / 2**20:,.0f} disk)" if "disk_bytes" in r else ""
        )
        lines.append(
            [
                r["config"],
                r["factory"],
                ",".join(f"{k}={v}" for k, v in r["search_params"].items()) or "-",
                build,
                f"{r['layer_build_dir_s']:.1f}",
                ram,
                f"{r['layer_qps']:,.0f} ({r['raw_qps']:,.0f}, {_pct(1 / r['layer_qps'], 1 / r['raw_qps'])})",
                f"{r['layer_p50_ms']:.2f} / {r['layer_p99_ms']:.2f}",
                f"{r['raw_p50_ms']:.2f} / {r['raw_p99_ms']:.2f}",
                f"{r['recall_at_10']:.3f}",
                f"{r['speedup_vs_exact']:.1f}" if r.get("speedup_vs_exact") else "-",
            ]
        )
    print(
        f"\nIndexing, {meta['date']}, {meta['cpu']}, {meta['cores']} cores, faiss {meta['faiss']}: "
        f"{meta['n']:,} x {meta['dim']} ({meta['centers']} clusters), {meta['queries']:,} queries"
    )
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
        for line in [head, *lines]:
            print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))


if __name__ == "__main__":
    main()
