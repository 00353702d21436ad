"""Does self-supervised pretraining of the tower help text-code retrieval? (issue #4)

The pretraining experiment: the same dual encoder (one shared 2-layer, 128-wide tower,
mean-pooled, symmetric InfoNCE, same contrastive steps, same data, same tokenizer) started from
  - random init (``mmssl pretrain mlm --max-steps 0``: the control, same tokenizer; the GPT-2
    shape ``rand-gpt2`` on request),
  - a masked-LM pretrained RoBERTa (``mmssl pretrain mlm``),
  - a causal-LM pretrained GPT-2 (``mmssl pretrain clm``),
each pretraining run given the same wall-clock budget on the train split's docstrings and code
(the valid split gives the perplexity), each contrastive run repeated over seeds (data order and
projection init). Reported: test MRR by the CodeSearchNet protocol (mean ± sd over seeds, and the
per-seed paired difference to the random control of the same shape), pretraining steps and
validation perplexity.

The corpus is the text-code benchmark's (``benchmarks/bench_text_code.py`` mines it; this script
mines it too if missing). Everything runs in fp32 unless the CPU computes bf16 natively.

On 2 AVX2 cores the mini tower trains contrastively at about 70 pairs/s (300 steps of 128: about
10 minutes a run) and pretrains at 0.36 s (MLM) / 1.9 s (CLM: logits at every position) a step
of 32 x 128 tokens.

Command (from the repo root; about 2 * pretrain-minutes + 3 * seeds * 11 minutes, 2.5 hours;
finished rows in OUT/results.json are reused, so an interrupted run resumes):
    .venv/bin/python benchmarks/bench_pretrain.py
    .venv/bin/python benchmarks/bench_pretrain.py --quick        # a smoke run of a few minutes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench_text_code import MMSSL, ROOT, budget_steps, evaluate, mine, run

from mmssl.runtime import cpu_has_native_bf16

ARCH = {"rand-roberta": "mlm", "mlm": "mlm", "mlm-randemb": "mlm", "rand-gpt2": "clm", "clm": "clm"}
CONTROL = {"mlm": "rand-roberta", "mlm-randemb": "rand-roberta", "clm": "rand-gpt2"}
PRETRAIN_BATCH = 32


def pretrain(corpus: Path, out: Path, name: str, args) -> dict:
    """One pretraining run (or, for a control, the random init with the same tokenizer)."""
    run_dir = out / f"pre-{name}"
    base = [
        *MMSSL,
        "pretrain",
        ARCH[name],
        "--data",
        str(corpus),
        "--valid",
        str(corpus),
        "--preset",
        "mini",
        "--block-size",
        str(args.block_size),
        "--vocab-size",
        "16000",
        "--batch-size",
        str(PRETRAIN_BATCH),
        "--lr",
        "1e-3",
        "--precision",
        args.precision,
    ]
    if name.startswith("rand"):
        run([*base, "--out", str(run_dir), "--max-steps", "0"], out / f"pre-{name}.log")
        return {"model": str(run_dir / "final"), "steps": 0}
    steps = budget_steps(
        base, out / f"pre-{name}-probe", out / f"pre-{name}-probe.log", PRETRAIN_BATCH, args.pretrain_minutes, name
    )
    run(
        [*base, "--out", str(run_dir), "--max-steps", str(steps), "--max-minutes", str(args.pretrain_minutes),
         "--warmup-steps", str(max(10, steps // 20)), "--eval-every", str(max(50, steps // 5)), "--save-every",
         str(max(50, steps // 5))],
        out / f"pre-{name}.log",
    )  # fmt: skip
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if r.get("split") == "valid"]
    model = run_dir / ("best" if (run_dir / "best").exists() else "final")
    info = {"model": str(model), "steps": max((r["step"] for r in rows), default=0)}
    if valid:
        info["valid_perplexity"] = min(r["perplexity"] for r in valid)
        info["valid_accuracy"] = max(r["accuracy"] for r in valid)
        info["samples_per_s"] = statistics.mean(r["samples_per_s"] for r in rows if "samples_per_s" in r)
    return info


def graft(out: Path, name: str, layers: str, embeddings: str) -> dict:
    """``mlm-randemb``, a diagnostic init: the MLM-pretrained tower with the random control's token
    embeddings (the same tokenizer, so the same rows). Against ``mlm`` it isolates what the pretrained
    token embeddings (tied to the MLM output layer) do; against ``rand-roberta``, what the pretrained
    layers do."""
    import shutil

    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(layers)
    donor = AutoModelForMaskedLM.from_pretrained(embeddings).get_input_embeddings().weight
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(donor)
    final, tmp = out / f"pre-{name}" / "final", out / f"pre-{name}" / "final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(layers).save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return {"model": str(final), "steps": 0, "layers_from": layers, "embeddings_from": embeddings}


def contrastive(corpus: Path, out: Path, name: str, seed: int, model: str, args) -> dict:
    run_dir = out / f"dual-{name}-s{seed}"
    cmd = [
        *MMSSL,
        "train",
        "--train",
        str(corpus),
        "--out",
        str(run_dir),
        "--text-init",
        model,
        "--shared",
        "--pooling",
        "mean",
        "--batch-size",
        "128",
        "--lr",
        "1e-3",
        "--max-code-length",
        str(args.block_size),
        "--max-text-length",
        "48",
        "--max-steps",
        str(args.steps),
        "--warmup-steps",
        str(max(10, args.steps // 20)),
        "--eval-every",
        str(max(50, args.steps // 4)),
        "--save-every",
        "0",
        "--eval-max-pairs",
        "1000",
        "--seed",
        str(seed),
        "--precision",
        args.precision,
    ]
    run(cmd, out / f"dual-{name}-s{seed}.log")
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best = run_dir / ("best" if (run_dir / "best").exists() else "final")
    result = evaluate(corpus, out, f"dual-{name}-s{seed}", args, "--model", str(best))
    result.pop("baselines", None)
    result["samples_per_s"] = statistics.mean(r["samples_per_s"] for r in rows if "samples_per_s" in r)
    result["best_valid_mrr"] = max(r["mrr"] for r in rows if r.get("split") == "valid")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain-minutes", type=float, default=20.0, help="budget of each pretraining run")
    p.add_argument("--steps", type=int, default=300, help="contrastive steps of every dual encoder (batch 128)")
    p.add_argument("--seeds", default="0,1,2", help="contrastive seeds")
    p.add_argument("--block-size", type=int, default=128, help="pretraining block = code tokens of the towers")
    p.add_argument("--test-pairs", type=int, default=5000, help="test pairs used (chunks of 1,000)")
    p.add_argument("--corpus-dir", default="runs/bench-text-code", help="where the mined corpus is (or goes)")
    p.add_argument("--out", default="runs/bench-pretrain")
    p.add_argument(
        "--only",
        default="rand-roberta,mlm,clm",
        help="comma list of inits (rand-gpt2: the causal control; mlm-randemb: the MLM tower with the random "
        "control's token embeddings, a diagnostic)",
    )
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--quick", action="store_true", help="smoke run: small corpus, 1-minute pretraining, 20 steps")
    args = p.parse_args()
    args.max_files = None
    if args.quick:
        args.pretrain_minutes, args.steps, args.seeds, args.test_pairs = 1.0, 20, "0", 1000
        args.max_files, args.corpus_dir, args.out = 1500, args.corpus_dir + "-quick", args.out + "-quick"
    if args.precision == "auto":
        args.precision = "bf16" if cpu_has_native_bf16() else "fp32"
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    corpus_dir = ROOT / args.corpus_dir
    corpus_dir.mkdir(parents=True, exist_ok=True)
    corpus = mine(corpus_dir, args.max_files)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.only.split(",")
    started = datetime.now(UTC)
    saved = out / "results.json"
    results = json.loads(saved.read_text()) if saved.exists() else {"pretrain": {}, "dual": {}}

    def save():
        results["meta"] = {
            "date": started.strftime("%Y-%m-%d"),
            "cores": os.cpu_count(),
            "precision": args.precision,
            "pretrain_minutes": args.pretrain_minutes,
            "steps": args.steps,
            "block_size": args.block_size,
            "test_pairs": args.test_pairs,
        }
        saved.write_text(json.dumps(results, indent=2))

    for name in sorted(names, key=lambda n: n == "mlm-randemb"):  # the graft needs both donors first
        if name not in results["pretrain"]:
            if name == "mlm-randemb":
                for donor in ("mlm", "rand-roberta"):
                    if donor not in results["pretrain"]:
                        results["pretrain"][donor] = pretrain(corpus, out, donor, args)
                done = results["pretrain"]
                results["pretrain"][name] = graft(out, name, done["mlm"]["model"], done["rand-roberta"]["model"])
            else:
                results["pretrain"][name] = pretrain(corpus, out, name, args)
            save()
    for seed in seeds:
        for name in names:
            key = f"{name}/s{seed}"
            if key not in results["dual"]:
                results["dual"][key] = contrastive(corpus, out, name, seed, results["pretrain"][name]["model"], args)
                save()

    print()
    print(f"Pretraining -> text-code retrieval, {started:%Y-%m-%d}, {os.cpu_count()} CPU cores, {args.precision}")
    print(f"{'init':<14} {'pre steps':>9} {'valid ppl':>10} {'test MRR mean':>13} {'sd':>7}  per seed")
    mrrs = {}
    for name in names:
        pre = results["pretrain"][name]
        mrrs[name] = [results["dual"][f"{name}/s{s}"]["mrr"] for s in seeds]
        sd = statistics.stdev(mrrs[name]) if len(seeds) > 1 else float("nan")
        ppl = f"{pre['valid_perplexity']:.1f}" if "valid_perplexity" in pre else "-"
        print(
            f"{name:<14} {pre['steps']:>9} {ppl:>10} {statistics.mean(mrrs[name]):13.4f} {sd:7.4f}  "
            + " ".join(f"{m:.4f}" for m in mrrs[name])
        )
    for name, control in CONTROL.items():
        control = control if control in mrrs else "rand-roberta"  # same size, same tokenizer
        if name in mrrs and control in mrrs:
            d = [a - b for a, b in zip(mrrs[name], mrrs[control])]
            sd = statistics.stdev(d) if len(d) > 1 else float("nan")
            up = sum(x > 0 for x in d)
            print(f"{name} - {control}, paired by seed: {statistics.mean(d):+.4f} ± {sd:.4f} ({up}/{len(d)} up)")


if __name__ == "__main__":
    sys.exit(main())
