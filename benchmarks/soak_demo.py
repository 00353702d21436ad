"""A soak test of the search app: many clients, mixed and hostile queries, the server's memory.

What it does: builds (once, into ``--work``) a small index set the way tests/demo does (the
synthetic code corpus of tests/conftest.py, the ``tiny`` text-code model trained 30 steps, a
code index and a docstring index with BM25; 100 generated shapes, an untrained ``mmssl-vit-micro``
image-text model, an image index with BM25 and a caption index), or takes ``--index`` directories;
launches ``mmssl demo`` over them on 127.0.0.1 in a subprocess (its Gradio files under
``--work``/gradio-temp); then ``--clients`` threads, each with its own ``gradio_client.Client``,
send ``--queries`` queries each, drawn at random (fixed seed): text → code, code → text, text →
image and image → text with ordinary images (three in four: ``--hostile-share``), and hostile ones: the files of
tests/demo/hostile.py (a 600000 x 1 strip, 144 MP and 225 MP decompression bombs, a truncated PNG,
a truncated photo, garbage after a PNG signature, a text file, an empty file), an upload one byte
over the app's cap (plain HTTP: gradio_client refuses it itself), an empty and an over-long text
query.

What counts: an ordinary query must return 1..k hits; a hostile one must be answered with the app's
own refusal (the message tests/demo/hostile.py expects; for the oversized upload, Gradio's 413).
Anything else, a timeout, a 500 or a traceback, is an error. The server's RSS (``/proc``) is read
after a warm-up (every kind of query once: "before"), sampled every half second (peak) and read
at the end ("after"); growth = after / before - 1. Then the app is stopped with Ctrl-C (SIGINT)
and its Gradio folder must be gone. Target: 0 errors, RSS growth <= 10 %, no files left.

Commands (from the repo root):
    .venv/bin/python benchmarks/soak_demo.py                            # 8 clients x 500 queries
    .venv/bin/python benchmarks/soak_demo.py --clients 2 --queries 20   # a quick check
It prints a table and writes ``--work``/results.json; the exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from demo.search import EXAMPLE_FIELD, MAX_QUERY_CHARS, TABS  # noqa: E402  no torch, no gradio
from demo.uploads import MAX_UPLOAD_BYTES  # noqa: E402
from tests.demo.hostile import hostile_images, normal_images  # noqa: E402

K = 5


# ---- the index set -------------------------------------------------------------------------------


def build_indexes(work: Path) -> list[Path]:
    """The four indexes (text→code, code→text, text→image, image→text), each built once."""
    from mmssl import cli
    from tests.conftest import make_code_corpus

    def run(argv: list[str]) -> None:
        if cli.main(argv) != 0:
            raise SystemExit(f"mmssl {' '.join(argv[:2])} failed")

    work.mkdir(parents=True, exist_ok=True)
    paths = [work / name for name in ("code-index", "doc-index", "images", "captions")]
    if all((p / "manifest.json").is_file() for p in paths):
        print(f"reusing the indexes in {work}")
        return paths
    corpus = work / "corpus.jsonl.gz"
    if not corpus.is_file():
        make_code_corpus(corpus)
    model = work / "text-code" / "final"
    if not (model / "dual_encoder.json").is_file():
        import torch

        torch.manual_seed(0)  # the tiny_model fixture of tests/conftest.py
        argv = ["train", "--train", str(corpus), "--out", str(work / "text-code"), "--preset", "tiny"]
        argv += ["--vocab-size", "300", "--batch-size", "32", "--max-steps", "30", "--eval-every", "0"]
        run(argv + ["--embed-dim", "16", "--device", "cpu", "--lr", "2e-3", "--warmup-steps", "3", "--overwrite"])
    base = ["index", "build", "--model", str(model), "--data", str(corpus), "--lexical", "--overwrite"]
    run([*base, "--out", str(paths[0])])
    run([*base, "--out", str(paths[1]), "--modality", "text"])
    shapes = work / "shapes"
    if not (shapes / "metadata.jsonl").is_file():
        run(["data", "make-images", "--kind", "shapes", "--out", str(shapes), "--count", "100", "--size", "32"])
    image_model = work / "image-text"
    if not (image_model / "dual_encoder.json").is_file():
        import torch

        from mmssl.models import DualEncoder, DualEncoderConfig
        from mmssl.models.clip_text import ClipTextConfig
        from mmssl.models.image import ImageTowerConfig

        towers = {"text": ClipTextConfig("mmssl-vit-micro"), "image": ImageTowerConfig("mmssl-vit-micro")}
        torch.manual_seed(0)
        DualEncoder.build(DualEncoderConfig(("text", "image"), towers, embed_dim=32)).save_pretrained(image_model)
    base = ["index", "build", "--model", str(image_model), "--data", str(shapes), "--device", "cpu", "--overwrite"]
    run([*base, "--out", str(paths[2]), "--lexical"])
    run([*base, "--out", str(paths[3]), "--modality", "text"])
    return paths


@dataclass
class Target:
    """One index as the clients query it: its endpoint, modes and example queries."""

    name: str
    api_name: str
    query_kind: str  # text | code | image
    modes: list[str]
    queries: list  # strings, or image paths


def targets_of(paths: list[Path], extra_images: list[Path]) -> list[Target]:
    from indexing.store import MetadataStore

    out = []
    for path in paths:
        manifest = json.loads((path / "manifest.json").read_text())
        pair = (manifest.get("query_modality") or "text", manifest.get("modality") or "code")
        spec = TABS[pair]
        with MetadataStore(path / "meta.sqlite", readonly=True) as store:
            count = store.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            ids = random.Random(0).sample(range(count), min(50, count))
            rows = store.get(ids)
        values = [rows[i][1].get(EXAMPLE_FIELD[pair]) for i in ids if i in rows]
        queries: list = [v for v in values if isinstance(v, str) and v.strip()]
        if spec.query_kind == "text":
            queries = [q.strip().splitlines()[0][:200] for q in queries]
        elif spec.query_kind == "image":
            queries = [Path(q) for q in queries if Path(q).is_file()] + extra_images
        modes = ["dense", "lexical", "hybrid"] if manifest.get("lexical") and spec.query_kind != "image" else ["dense"]
        out.append(Target(path.name, "/" + spec.api_name, spec.query_kind, modes, queries))
    return out


# ---- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """The process's resident memory (psutil is not a dependency; on Linux it reads the same file)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def start_server(paths: list[Path], port: int, temp: Path, log: Path) -> subprocess.Popen:
    import httpx

    temp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GRADIO_TEMP_DIR": str(temp), "GRADIO_ANALYTICS_ENABLED": "False"}
    argv = [sys.executable, "-m", "mmssl.cli", "demo", "--host", "127.0.0.1", "--port", str(port)]
    for p in paths:
        argv += ["--index", str(p)]
    proc = subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the app did not answer within 300 s:\n{log.read_text()[-3000:]}")


# ---- the clients ---------------------------------------------------------------------------------


@dataclass
class Query:
    kind: str  # the row of the table it is counted in
    target: Target
    value: object  # a string, or an image path
    mode: str
    refusal: str | None = None  # a hostile query: the regular expression its refusal matches


def query_mix(
    targets: list[Target], hostile: dict, oversized: Path, rng: random.Random, n: int, share: float = 0.25
) -> list[Query]:
    """``n`` queries: hostile ones with probability ``share``, else ordinary ones, over every target."""
    images = [t for t in targets if t.query_kind == "image"]
    texts = [t for t in targets if t.query_kind == "text"]
    bad: list[Query] = []
    for t in images:
        bad += [Query(f"hostile: {name}", t, path, "dense", refusal) for name, (path, refusal) in hostile.items()]
        bad.append(Query("hostile: over the upload cap", t, oversized, "dense", "413"))
    for t in texts:
        bad.append(Query("hostile: empty text", t, "", "dense", "type a query first"))
        too_long = "x" * (MAX_QUERY_CHARS["text"] + 1)
        bad.append(Query("hostile: text too long", t, too_long, "dense", f"limit is {MAX_QUERY_CHARS['text']:,}"))
    out = []
    for _ in range(n):
        if bad and rng.random() < share:
            out.append(rng.choice(bad))
        else:
            t = rng.choice(targets)
            kind = f"{t.api_name.strip('/').replace('_to_', ' → ')}"
            out.append(Query(kind, t, rng.choice(t.queries), rng.choice(t.modes)))
    return out


def ask(client, q: Query) -> tuple[bool, str]:
    """(counted as correct, what happened)."""
    import httpx
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    if q.refusal == "413":  # gradio_client refuses it itself (it reads max_file_size): straight to the server
        upload = client.src.rstrip("/") + "/gradio_api/upload"
        r = httpx.post(upload, files={"files": ("big.png", Path(q.value).read_bytes())}, timeout=120)
        return r.status_code == 413, f"HTTP {r.status_code}: {r.text[:200]}"
    value = handle_file(str(q.value)) if q.target.query_kind == "image" else q.value
    try:
        hits = client.predict(value, q.target.name, K, q.mode, api_name=q.target.api_name)["hits"]
    except AppError as e:
        message = str(e)
        if q.refusal is not None and re.search(q.refusal, message) and "Traceback" not in message:
            return True, "refused"
        return False, f"AppError: {message[:200]}"
    except httpx.HTTPStatusError as e:
        if q.refusal == "413" and e.response.status_code == 413:
            return True, "refused (413)"
        return False, f"HTTP {e.response.status_code}: {e.response.text[:200]}"
    except Exception as e:  # a timeout, a dropped connection, a client-side failure
        return False, f"{type(e).__name__}: {str(e)[:200]}"
    if q.refusal is not None:
        return False, f"answered a hostile query ({q.kind}) with {len(hits) if isinstance(hits, list) else hits!r}"
    ok = isinstance(hits, list) and 1 <= len(hits) <= K and all("rank" in h and "score" in h for h in hits)
    return ok, "hits" if ok else f"bad answer: {str(hits)[:200]}"


def client_loop(url: str, queries: list[Query], results: list, lock: threading.Lock) -> None:
    from gradio_client import Client

    try:
        client = Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 120})
    except Exception as e:
        with lock:
            results.append(("client", False, f"Client(): {type(e).__name__}: {e}", 0.0))
        return
    for q in queries:
        started = time.perf_counter()
        ok, what = ask(client, q)
        with lock:
            results.append((q.kind, ok, what, time.perf_counter() - started))


def table(header: list[str], rows: list[list]) -> None:
    """A plain-text table: text columns left-aligned, numbers right-aligned (no decimals, growth one)."""

    def cell(name: str, v) -> str:
        return f"{v:.1f}" if name == "growth %" else f"{v:.0f}" if isinstance(v, float) else str(v)

    cells = [[cell(h, v) for h, v in zip(header, r)] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    text = [all(isinstance(r[i], str) for r in rows) for i in range(len(header))]
    for r in [header, *cells]:
        print("  ".join(c.ljust(w) if t else c.rjust(w) for c, w, t in zip(r, widths, text)))


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# ---- the run -------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    p.add_argument("--queries", type=int, default=500, help="queries per client (default 500)")
    p.add_argument("--index", action="append", default=[], help="index directory (default: build a small set)")
    p.add_argument("--work", default="runs/soak-demo", help="where the built indexes, the log and results go")
    p.add_argument("--hostile-share", type=float, default=0.25, help="the share of hostile queries (default 0.25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-growth", type=float, default=10.0, help="RSS growth target, percent")
    args = p.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    paths = [Path(i).resolve() for i in args.index] or build_indexes(work)
    hostile = hostile_images(work / "queries" / "hostile")
    oversized = work / "queries" / "oversized.png"
    oversized.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES))
    targets = targets_of(paths, normal_images(work / "queries" / "normal"))
    if any(not t.queries for t in targets):
        raise SystemExit(f"no queries for {[t.name for t in targets if not t.queries]}")

    port, temp, log = free_port(), work / "gradio-temp", work / "server.log"
    print(f"launching mmssl demo over {', '.join(t.name for t in targets)} on 127.0.0.1:{port} (log: {log})")
    server = start_server(paths, port, temp, log)
    url = f"http://127.0.0.1:{port}/"
    results: list = []  # (kind, correct, what happened, seconds)
    warm_results: list = []
    lock = threading.Lock()
    peak = [0.0]
    samples: list[tuple[float, float]] = []  # (seconds into the soak, RSS MB)
    stop = threading.Event()
    try:
        rss_start = rss_mb(server.pid)
        # warm-up: every target, then every kind of hostile query, once; checked, not in the table
        warm = [Query("warm-up", t, t.queries[0], t.modes[0]) for t in targets]
        warm += list({q.kind: q for q in query_mix(targets, hostile, oversized, random.Random(1), 1000)}.values())
        client_loop(url, warm, warm_results, lock)
        rss_before = rss_mb(server.pid)

        def sample() -> None:
            while not stop.wait(0.5):
                samples.append((time.monotonic() - started, rss_mb(server.pid)))
                peak[0] = max(peak[0], samples[-1][1])

        mixes = [
            query_mix(targets, hostile, oversized, random.Random(args.seed + c), args.queries, args.hostile_share)
            for c in range(args.clients)
        ]
        threads = [threading.Thread(target=client_loop, args=(url, m, results, lock)) for m in mixes]
        started = time.monotonic()
        threading.Thread(target=sample, daemon=True).start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        stop.set()
        rss_after = rss_mb(server.pid)
        peak[0] = max(peak[0], rss_after)
        temp_bytes = sum(f.stat().st_size for f in temp.rglob("*") if f.is_file())
    finally:
        stop.set()
        server.send_signal(signal.SIGINT)  # Ctrl-C: the app closes and removes its folder
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    left = [str(f) for f in temp.rglob("*")]

    errors = [r for r in results if not r[1]]
    warm_errors = [r for r in warm_results if not r[1]]
    latencies = [r[3] for r in results]
    growth = (rss_after / rss_before - 1) * 100
    p50, p95 = percentile(latencies, 50) * 1000, percentile(latencies, 95) * 1000
    print()
    table(
        ["clients", "queries", "errors", "p50 ms", "p95 ms", "RSS start MB", "RSS before MB", "RSS after MB"]
        + ["RSS peak MB", "growth %"],
        [[args.clients, len(results), len(errors), p50, p95, rss_start, rss_before, rss_after, peak[0], growth]],
    )
    print()
    by_kind = []
    for kind in sorted({r[0] for r in results}):
        rows = [r for r in results if r[0] == kind]
        lat = [r[3] for r in rows]
        by_kind.append(
            [kind, len(rows), sum(not r[1] for r in rows), percentile(lat, 50) * 1000, percentile(lat, 95) * 1000]
        )
    table(["kind", "queries", "errors", "p50 ms", "p95 ms"], by_kind)
    print(
        f"\n{len(results) / wall:.1f} queries/s over {wall:.0f} s; warm-up (every kind once, not in the table): "
        f"{len(warm_results)} queries, {len(warm_errors)} errors; the app's Gradio folder held "
        f"{temp_bytes / 1e6:.1f} MB at the end; {len(left)} files or folders left after Ctrl-C "
        f"(the app's exit status {server.returncode})"
    )
    if samples:
        marks = [min(samples, key=lambda x: abs(x[0] - f * wall))[1] for f in (0.25, 0.5, 0.75)]
        print("RSS at a quarter, half and three quarters of the soak: " + ", ".join(f"{v:.0f} MB" for v in marks))
    for kind, _, what, _ in (warm_errors + errors)[:10]:
        print(f"  error ({kind}): {what}")
    passed = (
        not errors
        and not warm_errors
        and growth <= args.max_growth
        and not left
        and len(results) == args.clients * args.queries
    )
    print(f"target (0 errors, RSS growth <= {args.max_growth:g} %, no files left): {'met' if passed else 'MISSED'}")

    from mmssl.io import atomic_file

    summary = {
        "clients": args.clients,
        "queries": len(results),
        "errors": len(errors),
        "warm_up_errors": len(warm_errors),
        "error_samples": [what for _, _, what, _ in (warm_errors + errors)[:20]],
        "p50_ms": percentile(latencies, 50) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000,
        "rss_start_mb": rss_start,
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "rss_peak_mb": peak[0],
        "growth_pct": growth,
        "files_left": len(left),
        "rss_samples": [[round(t, 1), round(v, 1)] for t, v in samples],
        "wall_s": wall,
        "indexes": [str(p) for p in paths],
        "passed": passed,
    }
    with atomic_file(work / "results.json", "w") as f:
        json.dump(summary, f, indent=2)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
