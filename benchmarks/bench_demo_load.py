"""A small load test of the search app: concurrent gradio_client clients against the text→code API.

What it measures: ``--clients`` threads (default 8), each with its own ``gradio_client.Client``,
send ``--queries`` searches in all (default 200) to ``/text_to_code`` as fast as answers come back;
per-query latency (request to answer, through Gradio's queue) p50 / p99 / max, throughput, and the
number of errors (target: zero). The queries are docstrings of indexed functions (first line), drawn
with a fixed seed. The app is launched in this process over ``--index`` directories with the
demo's own settings (queue size, concurrency), or ``--url`` points at one already running.

Command (from the repo root, after ``make demo`` has built its indexes):
    .venv/bin/python benchmarks/bench_demo_load.py --index runs/demo/minilm/code-index
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mmssl.runtime import cpu_name  # noqa: E402


def queries_from(index_dir: Path, n: int, seed: int = 0) -> list[str]:
    from indexing.store import MetadataStore

    with MetadataStore(index_dir / "meta.sqlite", readonly=True) as store:
        count = store.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        ids = random.Random(seed).sample(range(count), min(n, count))
        rows = store.get(ids)
    out = []
    for i in ids:
        doc = rows[i][1].get("docstring") if i in rows else None
        if isinstance(doc, str) and doc.strip():
            out.append(doc.strip().splitlines()[0][:200])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", action="append", default=[], help="index directory (text → code); repeatable")
    p.add_argument("--url", default=None, help="an app already running (default: launch one here)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--mode", default="dense", choices=["dense", "lexical", "hybrid"])
    p.add_argument("--out", default="runs/bench-demo-load/results.json")
    args = p.parse_args()
    if not args.index:
        raise SystemExit("--index DIR is required (the text → code index to query, e.g. runs/demo/minilm/code-index)")
    from gradio_client import Client

    index_dir = Path(args.index[0]).resolve()
    app = None
    url = args.url
    if url is None:
        from demo.app import CONCURRENCY, QUEUE_SIZE, build_app
        from demo.search import open_indexes

        app = build_app(open_indexes(args.index))
        app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
        app.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
        url = app.local_url
    queries = queries_from(index_dir, args.queries * 2)[: args.queries]
    if len(queries) < args.queries:
        raise SystemExit(f"{index_dir}: only {len(queries)} docstrings to query with")
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    todo = list(enumerate(queries))

    def client_loop() -> None:
        client = Client(url, verbose=False)
        while True:
            with lock:
                if not todo:
                    return
                _, q = todo.pop()
            t = time.perf_counter()
            try:
                hits = client.predict(q, index_dir.name, args.k, args.mode, api_name="/text_to_code")["hits"]
                ok = isinstance(hits, list) and len(hits) == args.k
                err = None if ok else f"{len(hits) if isinstance(hits, list) else hits!r} hits"
            except Exception as e:  # counted, not raised: the figure is how many fail
                err = f"{type(e).__name__}: {e}"
            dt = time.perf_counter() - t
            with lock:
                latencies.append(dt * 1000)
                if err:
                    errors.append(err)

    started = datetime.now(UTC)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if app is not None:
        app.close()
    lat = sorted(latencies)
    result = {
        "date": started.strftime("%Y-%m-%d"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "index": str(index_dir),
        "clients": args.clients,
        "queries": len(lat),
        "k": args.k,
        "mode": args.mode,
        "p50_ms": statistics.median(lat),
        "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "max_ms": lat[-1],
        "queries_per_s": len(lat) / wall,
        "errors": len(errors),
        "first_errors": errors[:5],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(
        f"\nDemo load test, {result['date']}, {result['cpu']}, {result['cores']} cores: {args.clients} clients, "
        f"{len(lat)} queries to /text_to_code (k={args.k}, {args.mode}) on {index_dir.name}"
    )
    print("| p50 ms | p99 ms | max ms | queries/s | errors |")
    print("|---|---|---|---|---|")
    print(
        f"| {result['p50_ms']:.0f} | {result['p99_ms']:.0f} | {result['max_ms']:.0f} | "
        f"{result['queries_per_s']:.1f} | {result['errors']} |"
    )
    for e in errors[:5]:
        print("error:", e)


if __name__ == "__main__":
    main()
