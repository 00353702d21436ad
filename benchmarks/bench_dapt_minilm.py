"""MiniLM fine-tuned with and without domain-adaptive pretraining on unlabeled code, at equal compute.

What it measures (issue #24): does masked-LM pretraining of the pretrained all-MiniLM-L6-v2 on
unlabeled code of the train repos (``mmssl pretrain mlm --init minilm``: MiniLM ships no MLM head,
so a new one is trained) make a better code-search model once fine-tuned, when the minutes it takes
are instead spent fine-tuning? Rows, each scored on the same --test-pairs test pairs (the
CodeSearchNet protocol: chunks of 1,000, seed 0) with the chunks paired:
  minilm      zero-shot (the peer; no training)
  dapt        MiniLM after the masked-LM minutes alone, as a sentence encoder (mean pooling): what
              pretraining did to its embedding space before any labels
  ft          MiniLM fine-tuned for the whole budget (--minutes) on --budget labeled pairs
  dapt+ft     masked LM for --dapt-share of the budget, then fine-tuned for the rest, same pairs
Fine-tuning is bench_text_code's "minilm-ft" (one shared tower, InfoNCE, batch 32, lr 3e-5, no
dropout) with the code at 128 tokens (MiniLM's training length, as the demo embeds). Each run's
steps come from a 12-step probe so that its cosine schedule ends inside its minutes; the runs go one
after another on an otherwise idle machine.

Data: the corpus of bench_text_code (the standard library and installed packages, split by repo),
its train split sampled to --budget pairs; the unlabeled code of bench_pretrain_ssl's corpus stage
(``mmssl data mine-code --unlabeled``: every function and module body of the train repos).

Command (from the repo root; about 2 x --minutes + 15 minutes on 2 cores; finished rows in
OUT/results.json are reused):
    .venv/bin/python benchmarks/bench_dapt_minilm.py [--minutes 12] [--budget 1000] [--corpus-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench_text_code import (
    MMSSL,
    ROOT,
    budget_cut,
    evaluate,
    mine,
    mine_unlabeled,
    paired,
    run_for_minutes,
    seeded_records,
)

from mmssl.runtime import cpu_name

CODE_TOKENS, TEXT_TOKENS, BATCH = 128, 64, 32
DAPT = ["--init", "minilm", "--block-size", str(CODE_TOKENS), "--batch-size", str(BATCH), "--lr", "5e-5",
        "--valid-fraction", "0.01", "--eval-max-blocks", "200", "--precision", "fp32"]  # fmt: skip
UNLABELED_SAMPLE = 10_000  # records the masked LM reads: more blocks than its minutes consume, tokenized in seconds


def corpora(data: Path, budget: int) -> tuple[Path, Path, Path]:
    """The labeled corpus, its train split cut to ``budget`` pairs (valid and test kept), and a seeded
    sample of the unlabeled code of the train repos (as bench_pretrain_ssl's corpus stage makes them)."""
    from mmssl.data.code_search import read_code_search, write_code_search

    labeled = mine(data, None)
    unlabeled, _ = mine_unlabeled(data)
    sample = data / f"unlabeled-{UNLABELED_SAMPLE}.jsonl.gz"
    if not sample.exists():
        records = read_code_search(unlabeled, required=("code",)).records
        write_code_search(seeded_records(records, UNLABELED_SAMPLE), sample)
    cut = data / f"labeled-{budget}.jsonl.gz"
    if not cut.exists():
        write_code_search(budget_cut(read_code_search(labeled).records, str(budget)), cut)
    return labeled, cut, sample


def timed(cmd: list[str], out: Path, name: str, minutes: float) -> dict:
    """``cmd`` (a train or pretrain command without --out) run for ``minutes``, its steps from a probe."""
    start = time.monotonic()
    model, rows = run_for_minutes([*cmd, "--log-every", "10"], out, name, BATCH, minutes, evals=4)
    return {
        "model": str(model), "steps": max(r["step"] for r in rows), "minutes": (time.monotonic() - start) / 60,
        "samples_per_s": statistics.median(r["samples_per_s"] for r in rows if "samples_per_s" in r),
    }  # fmt: skip


def finetune(cut: Path, init: str) -> list[str]:
    """bench_text_code's MiniLM fine-tune from ``init`` on the labeled cut, the code at 128 tokens."""
    return [*MMSSL, "train", "--train", str(cut), "--text-init", init, "--shared", "--batch-size", str(BATCH),
            "--lr", "3e-5", "--max-code-length", str(CODE_TOKENS), "--max-text-length", str(TEXT_TOKENS),
            "--weight-decay", "0.01", "--dropout", "0", "--precision", "fp32", "--eval-max-pairs", "1000"]  # fmt: skip


def as_dual_encoder(init: str, target: Path) -> Path:
    """``init`` (MiniLM, or a masked-LM output) as a shared-tower sentence encoder, code at 128 tokens."""
    from mmssl.recipes.text_code_eval import sentence_encoder

    if not (target / "dual_encoder.json").is_file():
        sentence_encoder(init, "cpu", max_code_length=CODE_TOKENS).save_pretrained(target)
    return target


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=12.0, help="compute budget of each trained row")
    p.add_argument("--dapt-share", type=float, default=0.5, help="the share of the budget dapt+ft pretrains")
    p.add_argument("--budget", type=int, default=1000, help="labeled training pairs")
    p.add_argument("--test-pairs", type=int, default=5000)
    p.add_argument("--corpus-dir", default="runs/bench-pretrain-ssl/data")
    p.add_argument("--out", default="runs/bench-dapt-minilm")
    args = p.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    labeled, cut, unlabeled = corpora(ROOT / args.corpus_dir, args.budget)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {"rows": {}}

    def score(name: str, model: Path, train: dict | None = None) -> None:
        row = evaluate(labeled, out, name, args, "--model", str(model))
        row.pop("baselines", None)
        results["rows"][name] = {**row, **({"train": train} if train else {})}
        results["meta"] = {
            "date": f"{datetime.now(UTC):%Y-%m-%d}", "cpu": f"{cpu_name()}, {os.cpu_count()} cores",
            "minutes": args.minutes, "dapt_share": args.dapt_share, "budget": args.budget,
            "test_pairs": args.test_pairs,
        }  # fmt: skip
        path.with_suffix(".tmp").write_text(json.dumps(results, indent=1) + "\n")
        path.with_suffix(".tmp").replace(path)
        print(f"{name}: MRR {row['mrr']:.4f}", flush=True)

    rows = results["rows"]
    dapt_minutes = args.minutes * args.dapt_share
    if "minilm" not in rows:
        score("minilm", as_dual_encoder("minilm", out / "minilm-zero-shot"))
    if "dapt" not in rows or "dapt+ft" not in rows:
        mlm = timed([*MMSSL, "pretrain", "mlm", "--data", str(unlabeled), *DAPT], out, "pre-dapt", dapt_minutes)
        if "dapt" not in rows:
            score("dapt", as_dual_encoder(mlm["model"], out / "dapt-encoder"), mlm)
        ft = timed(finetune(cut, mlm["model"]), out, "ft-after-dapt", args.minutes - dapt_minutes)
        score("dapt+ft", Path(ft["model"]), {**ft, "pretrain": mlm})
    if "ft" not in rows:
        ft = timed(finetune(cut, "minilm"), out, "ft", args.minutes)
        score("ft", Path(ft["model"]), ft)

    meta = results["meta"]
    print(f"\n{meta['date']}, {meta['cpu']}; {args.budget} labeled pairs, {args.minutes:g} min a row")
    print("| row | test MRR | recall@1 | recall@10 | steps | vs minilm (paired over chunks) |")
    print("|---|---|---|---|---|---|")
    base = rows["minilm"]["chunk_mrrs"]
    for name in ("minilm", "dapt", "ft", "dapt+ft"):
        r = rows[name]
        steps = r.get("train", {}).get("steps", "-")
        vs = paired(r["chunk_mrrs"], base) if name != "minilm" else "-"
        print(f"| {name} | {r['mrr']:.4f} | {r['recall@1']:.3f} | {r['recall@10']:.3f} | {steps} | {vs} |")
    print(f"dapt+ft - ft: {paired(rows['dapt+ft']['chunk_mrrs'], rows['ft']['chunk_mrrs'])}")


if __name__ == "__main__":
    sys.exit(main())
