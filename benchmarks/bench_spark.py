"""Spark's overhead over the plain path (issue #28): `mmssl index build` of one collection with the
single-process engine and with ``--engine spark`` on ``local[1]`` and ``local[2]``.

Data: ``--items`` functions of the mined corpus (``bench_text_code.mine``: the standard library and
the installed packages), a seeded sample, in ``--files`` JSONL.gz files (a Spark task each); and a
quarter of them, the same way, so that a line through the two sizes separates each engine's fixed
cost (process start, the JVM and its workers, model loads, the index build) from its cost per item.
Model: the demo's MiniLM (all-MiniLM-L6-v2 zero-shot, its int8 ONNX export, code at 128 tokens).

Configurations, at equal cores (a Spark task computes on ``spark.task.cpus`` = 1 thread):
    plain-1   ``mmssl index build`` with ``OMP_NUM_THREADS=1`` (one thread)   peer of local[1]
    local[1]  ``--engine spark --spark-master local[1]``: one task at a time
    plain-2   ``mmssl index build`` on both cores                               peer of local[2]
    local[2]  ``--engine spark --spark-master local[2]``: two tasks side by side
Each run is a fresh process and a fresh output (nothing resumed), the configurations taking turns
in ``--repeats`` rounds of alternating order; wall seconds are medians. Overhead = Spark's seconds /
its peer's - 1 at the full size; per-item costs from the two sizes, and from those lines the
overhead projected to ``--project`` items (a projection, said so). "in tasks": the seconds Spark's
tasks spent reading and embedding their parts (from each part's ``part.json``), the rest of a
Spark run being the JVM, the workers, model loads, the driver's reading back and the index build.

Target (reported): Spark's overhead at local[1] <= 15 %. Prints a table and an estimate for 1
billion items on N GPU nodes from the per-item costs (``--gpu-items-per-s``: one GPU's MiniLM rate,
an assumption stated in the output, since no GPU is measured here).

    .venv/bin/python benchmarks/bench_spark.py [--items 2400] [--files 8] [--repeats 2] [--configs plain-1,local[1]]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MMSSL = [sys.executable, "-m", "mmssl.cli"]
CONFIGS = {
    "plain-1": ([], {"OMP_NUM_THREADS": "1"}),
    "local[1]": (["--engine", "spark", "--spark-master", "local[1]"], {}),
    "plain-2": ([], {}),
    "local[2]": (["--engine", "spark", "--spark-master", "local[2]"], {}),
}


def write_collection(corpora: list[Path], n: int, files: int, out: Path) -> Path:
    """A seeded sample of ``n`` records of ``corpora`` (read together) in ``files`` JSONL.gz parts."""
    from mmssl.data.code_search import read_code_search
    from mmssl.runtime import seeded_subset

    records = read_code_search(corpora, required=("code",)).records
    if n > len(records):
        raise SystemExit(f"--items {n:,}: the corpora hold {len(records):,} records; add one with --corpus A,B")
    rows = [records[i] for i in seeded_subset(len(records), n, seed=0).tolist()]
    out.mkdir(parents=True, exist_ok=True)
    per = -(-n // files)
    for f in range(files):
        with gzip.open(out / f"part-{f:03d}.jsonl.gz", "wt") as z:
            z.writelines(json.dumps(r) + "\n" for r in rows[f * per : (f + 1) * per])
    return out


def minilm(work: Path) -> Path:
    from mmssl.export.onnx import export_onnx
    from mmssl.recipes.text_code_eval import sentence_encoder

    sentence_encoder("minilm", "cpu", max_code_length=128).save_pretrained(work / "minilm")
    export_onnx(work / "minilm", work / "onnx", quantize="int8")
    return work / "onnx"


def build(config: str, model: Path, data: Path, out: Path) -> tuple[float, float | None]:
    """(wall seconds, seconds the Spark tasks spent reading and embedding (their part.json), or None)."""
    extra, env = CONFIGS[config]
    for p in (out, Path(f"{out}.embeddings")):
        shutil.rmtree(p, ignore_errors=True)
    cmd = [*MMSSL, "index", "build", "--model", str(model), "--data", str(data), "--out", str(out), *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{config}: exit {done.returncode}\n{done.stderr[-3000:]}")
    parts = [json.loads(f.read_text()) for f in Path(f"{out}.embeddings").glob("*.part.json")]
    return seconds, sum(r["seconds"]["embed"] for r in parts) if parts else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="runs/bench-text-code/corpus.jsonl.gz",
                   help="comma list of mined corpora read as one (200,000 items: add the unlabeled one)")  # fmt: skip
    p.add_argument("--items", type=int, default=2400)
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--gpu-items-per-s", type=float, default=5000.0, help="assumed MiniLM items/s of one GPU")
    p.add_argument("--node-cores", type=int, default=16, help="CPU cores per node for Spark's per-item work")
    p.add_argument("--project", type=int, default=200_000, help="items to project the overhead to from the line")
    p.add_argument("--quarter", action=argparse.BooleanOptionalAction, default=True,
                   help="also build a quarter of the items, for the fixed cost and the cost per item")  # fmt: skip
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma list of the configurations to run")
    p.add_argument("--out", default="runs/bench-spark/results.json")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-spark-"))
    model = minilm(work)
    sizes = {"full": args.items, "quarter": args.items // 4} if args.quarter else {"full": args.items}
    corpora = [ROOT / c for c in args.corpus.split(",")]
    data = {k: write_collection(corpora, n, args.files, work / f"data-{k}") for k, n in sizes.items()}
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    configs = [c for c in CONFIGS if c in args.configs.split(",")]
    seconds: dict[str, dict[str, list[float]]] = {k: {c: [] for c in configs} for k in sizes}
    in_tasks: dict[str, list[float]] = {c: [] for c in configs}
    for r in range(args.repeats):
        for size in sizes:
            order = configs if r % 2 == 0 else configs[::-1]
            for config in order:
                t, tasks = build(config, model, data[size], work / "idx")
                seconds[size][config].append(t)
                if size == "full" and tasks is not None:
                    in_tasks[config].append(tasks)
                print(f"round {r} {size:<7} {config:<9} {t:6.1f} s" + (f" ({tasks:.1f} s in tasks)" if tasks else ""),
                      flush=True)  # fmt: skip
                partial = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "args": vars(args), "sizes": sizes,
                           "seconds": seconds, "in_tasks": in_tasks, "partial": True}  # fmt: skip
                out.write_text(json.dumps(partial, indent=2))  # an hour-long run keeps what it measured
    rows = {}
    for config in configs:
        full = statistics.median(seconds["full"][config])
        rows[config] = {"seconds": full, "items_per_s": sizes["full"] / full}
        if "quarter" in sizes:
            quarter = statistics.median(seconds["quarter"][config])
            per_item = (full - quarter) / (sizes["full"] - sizes["quarter"])
            rows[config].update(quarter_seconds=quarter, per_item_ms=1000 * per_item,
                                fixed_s=full - per_item * sizes["full"])  # fmt: skip
        else:  # one size: the whole run per item (fixed costs included)
            rows[config]["per_item_ms"] = 1000 * full / sizes["full"]
        if in_tasks[config]:
            rows[config]["in_tasks_s"] = statistics.median(in_tasks[config])
    pairs = [(s, p) for s, p in (("local[1]", "plain-1"), ("local[2]", "plain-2")) if s in rows and p in rows]
    for spark, plain in pairs:
        a, b = rows[spark], rows[plain]
        a["overhead"] = a["seconds"] / b["seconds"] - 1
        if "fixed_s" in a and "fixed_s" in b:  # two sizes: the per-item part and the fitted lines
            a["per_item_overhead"] = a["per_item_ms"] / b["per_item_ms"] - 1
            # the fitted lines at --project items (a projection: not measured at that size)
            a["projected_overhead"] = (a["fixed_s"] + a["per_item_ms"] * args.project / 1000) / (
                b["fixed_s"] + b["per_item_ms"] * args.project / 1000
            ) - 1
    fixed = f"{sizes['quarter']:,} for the fixed cost" if "quarter" in sizes else "one size"
    print(f"\n{args.items:,} items in {args.files} files ({fixed}), medians of {args.repeats}")
    print(f"{'config':<9} {'seconds':>8} {'in tasks':>8} {'items/s':>8} {'ms/item':>8} {'fixed s':>8} "
          f"{'overhead':>9} {'per item':>9} {'at ' + format(args.project, ','):>10}")  # fmt: skip
    for config, r in rows.items():
        over, per, projected = (f"{r[k]:+.1%}" if k in r else "-"
                                for k in ("overhead", "per_item_overhead", "projected_overhead"))  # fmt: skip
        tasks = f"{r['in_tasks_s']:.1f}" if "in_tasks_s" in r else "-"
        fixed_s = f"{r['fixed_s']:.1f}" if "fixed_s" in r else "-"
        print(f"{config:<9} {r['seconds']:8.1f} {tasks:>8} {r['items_per_s']:8.1f} {r['per_item_ms']:8.2f} "
              f"{fixed_s:>8} {over:>9} {per:>9} {projected:>10}")  # fmt: skip
    estimate = {}
    if "overhead" in rows.get("local[1]", {}):
        # 1 billion items: embedding at the GPU rate plus Spark's measured per-item overhead, per GPU node
        spark_ms = max(rows["local[1]"]["per_item_ms"] - rows["plain-1"]["per_item_ms"], 0.0)
        gpu_ms = 1000 / args.gpu_items_per_s
        print(f"\nestimate for 1e9 items (assumed {args.gpu_items_per_s:,.0f} items/s per GPU; Spark's measured "
              f"per-item overhead {spark_ms:.3f} ms of one core, spread over a node's cores):")  # fmt: skip
        for nodes in (1, 10, 100):
            hours = 1e9 * (gpu_ms + spark_ms / args.node_cores) / 1000 / nodes / 3600
            estimate[nodes] = hours
            print(f"  {nodes:>3} node(s) of 1 GPU and {args.node_cores} cores: {hours:8.1f} h")
    record = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "args": vars(args), "sizes": sizes,
              "seconds": seconds, "in_tasks": in_tasks, "rows": rows, "estimate_hours": estimate}  # fmt: skip
    out.write_text(json.dumps(record, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
