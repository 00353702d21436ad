"""Indexing benchmark: each index type the layer picks, next to the same index built with raw FAISS.

What it measures
    Data: N vectors of dimension D (default 1,000,000 x 256) drawn from a Gaussian mixture of
    ``--centers`` overlapping low-rank clusters, L2-normalized (``Mixture``: what embeddings look
    like, not uniform noise, and not the isotropic mixture that any IVF index finds trivially); Q
    held-out queries (default 10,000) from the same mixture, and 1,000 more held-out ones that the
    layer tunes its search parameters on. Reference: the exact top-10 of every query by inner
    product (FAISS ``knn``).

    Configurations (the types ``indexing.plan.choose_index`` picks):
        flat      exact search (``--index-type flat``): the speed reference
        auto      what the layer picks for N with no memory budget (IVF with fast-scan 4-bit PQ
                  codes, candidates re-ranked with the exact vectors: ``ivf_fastscan``)
        ivf_flat  IVF over the exact vectors (``--index-type ivf_flat``; its pick when the
                  fast-scan codes do not fit beside them)
        ivf_pq    what it picks under ``--pq-budget`` (default: 1/4 of what exact vectors need)
        ondisk    what it picks when not even PQ codes fit ``--ondisk-budget`` (default 16 MiB):
                  inverted lists on disk, memory-mapped

    For each: layer build = ``indexing.build.build_in_memory`` (train on the plan's sample, add with
    ids in shards of 100,000) vs raw = ``faiss.index_factory`` + ``train`` on the same rows +
    ``add_with_ids`` of all rows at once, ``--build-repeats`` each, alternating which goes first;
    the layer's whole ``build_index_dir`` (with tuning, metadata and the atomic write) is reported
    apart. Search with the tuned parameters: batch queries/s over all Q queries (median of
    ``--repeats``), and single-query p50 / p99 latency over ``--single`` queries one at a time;
    layer (``SearchIndex.search_vectors``) vs raw (``index.search`` on the same loaded FAISS
    object, with the same search-parameter object), taking turns batch by batch and query by query.
    Memory: bytes of the serialized index (what ``read_index`` holds in RAM; for on-disk, the part
    in RAM and the lists on disk apart). Recall@10: |found ∩ exact| / 10 averaged over queries.

Targets (reported; the exit status does not depend on them)
    - the layer's overhead over raw FAISS <= 5 % in build and search time;
    - the auto-chosen index reaches recall@10 >= 0.95 at >= 20x the queries/s of exact search,
      reported both for batch search (all Q queries in one call: exact search is then one matrix
      product, FAISS's most efficient path) and for single queries (p50 latency: the serving case).

Command (from the repository root; about 25 minutes on 2 cores at the default size):

    .venv/bin/python benchmarks/bench_index.py [--n 1000000] [--dim 256] [--queries 10000] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import faiss  # noqa: E402

from indexing.build import ArrayShards, build_in_memory  # noqa: E402
from indexing.create import build_index_dir  # noqa: E402
from indexing.index import SearchIndex  # noqa: E402
from indexing.plan import choose_index, memory_estimate  # noqa: E402
from indexing.tune import recall_at, search_parameters  # noqa: E402
from mmssl.runtime import cpu_name  # noqa: E402


@dataclass(frozen=True)
class Mixture:
    """A Gaussian mixture with low-rank clusters, L2-normalized: what embeddings look like.

    ``centers`` means in a ``latent``-dimensional space, each point its mean plus ``spread`` times
    standard normal noise there, mapped to D by one fixed random linear map, plus ``noise`` times
    isotropic noise in D. The clusters overlap (spread 1 is about the distance between neighbouring
    means), so a query's true neighbours straddle the IVF cells, and an index has to probe several:
    the plain isotropic mixture (mean + noise in D) is far easier, since noise in many dimensions
    adds about the same to every distance and the clusters stand apart.
    """

    d: int
    centers: int = 1000
    latent: int = 32
    spread: float = 1.0
    noise: float = 0.1
    seed: int = 0

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        mu = rng.normal(size=(self.centers, self.latent)).astype(np.float32)
        lift = (rng.normal(size=(self.latent, self.d)) / np.sqrt(self.latent)).astype(np.float32)
        rng = np.random.default_rng(seed)
        x = np.empty((n, self.d), dtype=np.float32)
        for start in range(0, n, 100_000):  # in blocks: keeps the temporaries small
            m = min(100_000, n - start)
            z = mu[rng.integers(0, self.centers, m)] + self.spread * rng.standard_normal((m, self.latent), np.float32)
            block = z @ lift + self.noise * rng.standard_normal((m, self.d), np.float32)
            x[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
        return x


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def search_times(searches: dict, xq, k, singles, repeats) -> dict:
    """name -> (median batch seconds, p50 single ms, p99 single ms, ids of the batch search).

    The searches take turns, in alternating order, batch by batch and query by query, so that
    the machine's drift (other tenants, clock, caches) falls on all of them alike.
    """
    names = list(searches)
    batch = {name: [] for name in names}
    lat = {name: [] for name in names}
    found = {}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            (_, found[name]), t = timed(partial(searches[name], xq, k))
            batch[name].append(t)
    for i, q in enumerate(xq[:singles]):
        q = q[None]
        for name in names if i % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            searches[name](q, k)
            lat[name].append((time.perf_counter() - t) * 1000)
    return {
        name: (
            statistics.median(batch[name]),
            float(np.percentile(lat[name], 50)),
            float(np.percentile(lat[name], 99)),
            found[name],
        )
        for name in names
    }


def raw_search_with(index, params, xq, k):
    return index.search(xq, k, params=params)


def raw_build(factory, train_size, xb, ids):
    """What a user of FAISS writes: sample (the same rows the layer draws), train, add with ids."""
    index = faiss.index_factory(xb.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if faiss.try_extract_index_ivf(index) is None or isinstance(index, faiss.IndexRefine):
        index = faiss.IndexIDMap2(index)  # IndexRefine cannot add_with_ids itself
    if not index.is_trained:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.cp.seed = 0
        n = len(xb)
        rows = np.sort(np.random.default_rng(0).choice(n, train_size, replace=False)) if train_size < n else None
        index.train(xb if rows is None else xb[rows])
    index.add_with_ids(xb, ids)
    return index


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--centers", type=int, default=1000)
    p.add_argument("--latent", type=int, default=32, help="dimension the clusters live in (see Mixture)")
    p.add_argument("--spread", type=float, default=1.0, help="cluster spread in the latent space")
    p.add_argument("--noise", type=float, default=0.1, help="isotropic noise added in D")
    p.add_argument("--single", type=int, default=1000, help="queries timed one at a time")
    p.add_argument("--repeats", type=int, default=3, help="batch searches timed (median)")
    p.add_argument("--build-repeats", type=int, default=3, help="builds timed, raw and layer interleaved")
    p.add_argument("--pq-budget", default=None, help="memory budget for the PQ row (default: 1/4 of exact vectors)")
    p.add_argument("--ondisk-budget", default="16M", help="below what even the smallest PQ needs: lists on disk")
    p.add_argument("--only", default="flat,auto,ivf_flat,ivf_pq,ondisk")
    p.add_argument("--workdir", default=None, help="where the index directories go (default: a temp dir)")
    p.add_argument("--out", default="runs/bench-index/results.json")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()

    from indexing.plan import parse_budget

    n, d, k = args.n, args.dim, 10
    started = dt.datetime.now(dt.UTC)
    print(f"data: {n:,} x {d}, {args.queries:,} queries: {Mixture.__name__}{vars(args)}", flush=True)
    mix = Mixture(d, args.centers, args.latent, args.spread, args.noise)
    xb = mix.sample(n, seed=1)
    xq = mix.sample(args.queries, seed=2)
    xtune = mix.sample(1000, seed=3)
    ids = np.arange(n, dtype=np.int64)
    (_, gt), t_gt = timed(lambda: faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT))
    print(f"exact top-{k} of {len(xq):,} queries: {t_gt:.1f}s", flush=True)
    shards = ArrayShards(xb, ids)
    pq_budget = parse_budget(args.pq_budget) or memory_estimate("ivf_flat", n, d, choose_index(n, d).nlist) // 4
    configs = {
        "flat": dict(index_type="flat"),
        "auto": dict(),
        "ivf_flat": dict(index_type="ivf_flat"),
        # float32 kept: under these budgets the layer's auto choice would quantize (bench_quantized.py)
        "ivf_pq": dict(memory_budget=pq_budget, embedding_dtype="float32"),
        "ondisk": dict(memory_budget=parse_budget(args.ondisk_budget), embedding_dtype="float32"),
    }
    rows, exact_qps, exact_p50 = [], None, None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-index-"))
    for name in args.only.split(","):
        kw = configs[name]
        plan = choose_index(
            n,
            d,
            kw.get("memory_budget"),
            index_type=kw.get("index_type", "auto"),
            embedding_dtype=kw.get("embedding_dtype", "auto"),
        )
        print(f"\n[{name}] {plan.factory} ({plan.reason})", flush=True)
        row = {"config": name, "factory": plan.factory, "reason": plan.reason}
        if not plan.ondisk and plan.index_type != "flat":
            # interleaved raw, layer, raw, layer, ...: medians (the machine's speed drifts)
            raw_s, layer_s = [], []
            for r in range(args.build_repeats):  # alternating which goes first
                builds = [
                    (raw_s, partial(raw_build, plan.factory, plan.train_size, xb, ids)),
                    (layer_s, partial(build_in_memory, plan, shards, use_gpu=False)),
                ]
                for times, build in builds if r % 2 == 0 else builds[::-1]:
                    built, t = timed(build)
                    times.append(t)
                    del built
            row["raw_build_s"], row["layer_build_s"] = statistics.median(raw_s), statistics.median(layer_s)
            row["raw_builds_s"], row["layer_builds_s"] = raw_s, layer_s
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
        raw = index.index  # raw FAISS calls on the very same object: only the call path differs
        params = search_parameters(raw, manifest.search_params)
        raw_search = partial(raw_search_with, raw, params)
        layer_search = index.search_vectors
        repeats = 1 if plan.index_type == "flat" else args.repeats  # exact search: minutes per pass
        timings = search_times({"raw": raw_search, "layer": layer_search}, xq, k, args.single, repeats)
        (t_raw, p50_raw, p99_raw, _), (t_lay, p50_lay, p99_lay, found) = timings["raw"], timings["layer"]
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
            exact_qps, exact_p50 = row["layer_qps"], row["layer_p50_ms"]
        index.close()
        rows.append(row)
        print(json.dumps(row), flush=True)
    for row in rows:
        qps, p50 = row.get("layer_qps", row["raw_qps"]), row.get("layer_p50_ms", row["raw_p50_ms"])
        row["speedup_vs_exact"] = qps / exact_qps if exact_qps else None
        row["single_speedup_vs_exact"] = exact_p50 / p50 if exact_p50 else None
    meta = {
        "date": started.strftime("%Y-%m-%d"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "faiss": faiss.__version__,
        "n": n,
        "dim": d,
        "queries": len(xq),
        "centers": args.centers,
        "latent": args.latent,
        "spread": args.spread,
        "noise": args.noise,
        "exact_gt_seconds": t_gt,
    }
    out_file = ROOT / args.out
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print_table(rows, meta, args.markdown)


def _pct(layer, raw):
    return f"{100 * (layer / raw - 1):+.1f}%" if layer and raw else "-"


def _speedups(r) -> str:
    if not r.get("speedup_vs_exact"):
        return "-"
    return f"{r['speedup_vs_exact']:.1f} / {r['single_speedup_vs_exact']:.1f}"


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
        "x exact (batch / single p50)",
    ]
    lines = []
    for r in rows:
        layer = "layer_qps" in r  # a row measured with raw FAISS only has no layer figures
        if "layer_build_s" in r:
            build = f"{r['layer_build_s']:.1f} / {r['raw_build_s']:.1f} ({_pct(r['layer_build_s'], r['raw_build_s'])})"
        else:
            build = f"- / {r['raw_build_s']:.1f}" if "raw_build_s" in r else "-"
        ram = f"{r['ram_bytes'] / 2**20:,.0f}" + (
            f" (+{r['disk_bytes'] / 2**20:,.0f} disk)" if "disk_bytes" in r else ""
        )
        qps = (
            f"{r['layer_qps']:,.0f} ({r['raw_qps']:,.0f}, {_pct(1 / r['layer_qps'], 1 / r['raw_qps'])})"
            if layer
            else f"- ({r['raw_qps']:,.0f})"
        )
        lines.append(
            [
                r["config"],
                r["factory"],
                ",".join(f"{k}={v}" for k, v in r["search_params"].items()) or "-",
                build,
                f"{r['layer_build_dir_s']:.1f}" if layer else "-",
                ram,
                qps,
                f"{r['layer_p50_ms']:.2f} / {r['layer_p99_ms']:.2f}" if layer else "-",
                f"{r['raw_p50_ms']:.2f} / {r['raw_p99_ms']:.2f}",
                f"{r['recall_at_10']:.3f}",
                _speedups(r),
            ]
        )
    print(
        f"\nIndexing, {meta['date']}, {meta['cpu']}, {meta['cores']} cores, faiss {meta['faiss']}: "
        f"{meta['n']:,} x {meta['dim']} ({meta['centers']} clusters in {meta['latent']} dims, spread "
        f"{meta['spread']}, noise {meta['noise']}), {meta['queries']:,} queries"
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
