"""Hard negatives for text-code (issue #10): in-batch only vs + BM25 vs + model-mined vs refreshed.

What it measures, on one corpus mined offline (`mmssl data mine-code` over the standard library and
the venv's packages, split by package; reused when present), for each of ``--seeds``:
  inbatch    `mmssl train` with in-batch negatives only
  inbatch2x  the same at twice the batch (`--arms` adds it): the candidates embedded per step of
             the hard-negative arms, and twice the queries
  bm25       + one BM25 hard negative per pair per step, from `mmssl mine-negatives --source bm25`
             (mined once, before training: no model needed)
  static     + one model-mined hard negative per pair per step, mined once, at half the run, by the
             model of that step (`--refresh-negatives STEPS/2 --refresh-async false`)
  refreshed  the same, re-mined every STEPS/4 steps in a background thread (ANCE,
             `--refresh-negatives STEPS/4`)
Every arm trains the same model (a shared NBoW tower and its BPE vocabulary, the from-scratch model
of bench_text_code.py) for the same number of optimizer steps at the same batch; a hard negative
adds one candidate embedding per pair per step, and the wall time of each run is reported. Then
test MRR by the CodeSearchNet protocol (chunks of 1,000, seed 0, ties against the model) of the
final model; the table gives each arm's mean and standard deviation over seeds, and its paired
difference to in-batch (same seed, same chunks).

It also reports the false-negative filter: how many candidates each mining dropped and why, from
the BM25 file and from a mining with the seed-0 in-batch model, and a sample of the dropped false
negatives for a person to judge (written to OUT/false_negatives.md).

Command (from the repo root; about 12 minutes per seed on 2 cores at the defaults):
    .venv/bin/python benchmarks/bench_hard_negatives.py [--seeds 0,1,2] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MMSSL = [sys.executable, "-m", "mmssl.cli"]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mmssl.runtime import cpu_has_native_bf16, cpu_name  # noqa: E402


def run(cmd: list[str], log: Path) -> str:
    print("$", " ".join(cmd[2:]), flush=True)
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return proc.stdout


def corpus_for(out: Path, max_files: int | None) -> Path:
    corpus = out / "corpus.jsonl.gz"
    if not corpus.exists():
        roots = [sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]]
        cmd = [*MMSSL, "data", "mine-code", *roots, "--out", str(corpus), "--split-by", "repo"]
        run(cmd + (["--max-files", str(max_files)] if max_files else []), out / "mine-code.log")
    return corpus


def mine(corpus: Path, out: Path, name: str, *extra: str) -> dict:
    path = out / f"{name}.jsonl"
    if not path.exists():
        run(
            [*MMSSL, "mine-negatives", "--data", str(corpus), "--out", str(path), "--show", "0", *extra],
            out / f"{name}.log",
        )
    return json.loads(path.open().readline())


def train(corpus: Path, out: Path, name: str, seed: int, args, *extra: str) -> dict:
    run_dir = out / f"{name}-seed{seed}"
    result_file = run_dir / "bench.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    cmd = [*MMSSL, "train", "--train", str(corpus), "--out", str(run_dir), "--seed", str(seed)]
    cmd += ["--preset", "nbow", "--shared", "--vocab-size", "16000", "--batch-size", str(args.batch_size)]
    cmd += ["--max-steps", str(args.steps), "--warmup-steps", str(max(10, args.steps // 20)), "--lr", "2e-3"]
    cmd += ["--eval-every", "0", "--save-every", "0", "--log-every", "20", "--device", "cpu"]
    cmd += ["--precision", args.precision, "--eval-max-pairs", "1000", *extra]
    start = time.monotonic()
    run(cmd, out / f"{name}-seed{seed}.log")
    minutes = (time.monotonic() - start) / 60
    evaluate = [*MMSSL, "eval", "--data", str(corpus), "--partition", "test", "--json"]
    evaluate += ["--max-pairs", str(args.test_pairs), "--model", str(run_dir / "final")]
    scores = json.loads(run(evaluate, out / f"{name}-seed{seed}-eval.log"))
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "loss" in r][-1]
    result = {"arm": name, "seed": seed, "minutes": minutes, "scores": scores, "last": last}
    result_file.write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--refresh-every", type=int, default=None, help="refreshed arm: re-mine every N steps (steps/4)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--test-pairs", type=int, default=5000)
    p.add_argument("--arms", default="inbatch,bm25,static,refreshed")
    p.add_argument("--max-files", type=int, default=None, help="mine fewer files (a smoke run)")
    p.add_argument("--precision", default="bf16" if cpu_has_native_bf16() else "fp32")
    p.add_argument("--out", default="runs/bench-hard-negatives")
    args = p.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    corpus = corpus_for(out, args.max_files)
    t0 = time.monotonic()
    bm25 = mine(corpus, out, "bm25", "--source", "bm25")
    print(f"BM25 mining: {time.monotonic() - t0:.0f} s; {json.dumps(bm25['stats'])}", flush=True)
    arms = {
        "inbatch": [],
        # compute control: as many candidate embeddings per step as one hard negative per pair adds
        "inbatch2x": ["--batch-size", str(2 * args.batch_size)],
        "bm25": ["--negatives", str(out / "bm25.jsonl"), "--hard-negatives", "1"],
        "static": ["--refresh-negatives", str(args.steps // 2), "--refresh-async", "false", "--hard-negatives", "1"],
        "refreshed": ["--refresh-negatives", str(args.refresh_every or args.steps // 4), "--hard-negatives", "1"],
    }
    results = []
    for seed in map(int, args.seeds.split(",")):
        for arm in args.arms.split(","):
            r = train(corpus, out, arm, seed, args, *arms[arm])
            r["mrr"], r["chunks"] = r["scores"]["mrr"], r["scores"]["chunk_mrrs"]
            results.append(r)
            print(f"{arm} seed {seed}: MRR {r['mrr']:.4f} in {r['minutes']:.1f} min", flush=True)
    first = min(map(int, args.seeds.split(",")))
    model_mined = mine(corpus, out, "model-inbatch", "--model", str(out / f"inbatch-seed{first}" / "final"))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    report(results, bm25, model_mined, args, out)


def report(results: list[dict], bm25: dict, model_mined: dict, args, out: Path) -> None:
    stamp = f"{datetime.now(UTC):%Y-%m-%d}, {cpu_name()}, {os.cpu_count()} cores"
    print(f"\n{stamp}; NBoW shared tower, batch {args.batch_size}, {args.steps} steps, {args.precision}")
    print("| arm | test MRR mean ± sd over seeds | per seed | paired diff. vs in-batch (mean ± sd) | minutes/run |")
    print("|---|---|---|---|---|")
    base = {r["seed"]: r["mrr"] for r in results if r["arm"] == "inbatch"}
    for arm in dict.fromkeys(r["arm"] for r in results):
        rows = [r for r in results if r["arm"] == arm]
        mrrs = [r["mrr"] for r in rows]
        sd = statistics.stdev(mrrs) if len(mrrs) > 1 else float("nan")
        diffs = [r["mrr"] - base[r["seed"]] for r in rows if r["seed"] in base]
        dsd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
        print(
            f"| {arm} | {statistics.mean(mrrs):.4f} ± {sd:.4f} | {' / '.join(f'{m:.4f}' for m in mrrs)} | "
            f"{statistics.mean(diffs):+.4f} ± {dsd:.4f} | {statistics.mean(r['minutes'] for r in rows):.1f} |"
        )
    lines = ["# Dropped as likely false negatives (a sample per mining)\n"]
    for name, head in (("BM25", bm25), ("model (in-batch seed-0 final)", model_mined)):
        st = head["stats"]
        print(
            f"\n{name} mining: retrieved {st['retrieved']:,}, dropped {json.dumps(st['dropped'])}, kept {st['kept']:,}"
        )
        lines.append(f"\n## {name}: {json.dumps(st['dropped'])}\n")
        for e in head["false_negative_sample"]:
            lines.append(
                f"\n- pair {e['pair']} (score {e['score']} vs positive {e['positive_score']})\n"
                f"  - query: {e['query']!r}\n  - positive: {e['positive'][:200]!r}\n"
                f"  - dropped candidate: {e['candidate'][:200]!r}\n"
            )
    (out / "false_negatives.md").write_text("".join(lines))
    print(f"\nsample of dropped false negatives: {out / 'false_negatives.md'}")


if __name__ == "__main__":
    main()
