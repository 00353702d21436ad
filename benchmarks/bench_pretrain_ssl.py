"""Does self-supervised pretraining on unlabeled code pay where labels are scarce? (issue #24)

Data: the text-code benchmark's corpus (standard library + installed packages, split by repo;
``bench_text_code.mine``) for the labeled pairs, and ``mmssl data mine-code --unlabeled`` on the
same trees with the same split for the unlabeled code: every function and module body of the train
repos, docstring or not, and nothing of the valid or test repos.

One tower size for every init (the ``mini`` preset: 2 layers, 128 wide; one 16k byte-level BPE
trained on the unlabeled code, shared by every init), pretrained for the same CPU minutes:
    random           ``pretrain mlm --max-steps 0``: the control (same tokenizer, same shape)
    mlm              masked LM, untied embeddings, the masking the sweep picks
    clm              causal LM (GPT-2 shape), untied embeddings
    contrastive      ``pretrain contrastive``: name <-> masked code, signature <-> body, halves
    mlm+contrastive  half the minutes MLM, then half contrastive from it
then fine-tuned (``mmssl train --text-init``, one shared tower, mean pooling, the same steps) on
1,000, 5,000 and all training pairs, over seeds; scored on the same 5,000 test pairs (the
CodeSearchNet protocol, chunks of 1,000) with paired differences to the random control.

Stages (``--stages``, in this order; each reuses what ``OUT/results.json`` already holds, so an
interrupted run resumes):
    corpus       mine both corpora, write the labeled budgets
    throughput   pretraining tokens/s: ``mmssl pretrain mlm`` against transformers' ``Trainer`` on the
                 same model, blocks and batch, in this process, taking turns (2 threads; needs
                 ``make bench-deps`` for accelerate)
    sweep        short pretraining of each MLM variant (tied/untied, token/identifier/span masking),
                 fine-tuned at 1,000 pairs: which recipe the main runs use
    main         the experiment above
    report       print the tables
With ``--jobs 2`` (the default on 2 cores) two runs go side by side, each on one thread: a run's
pretraining budget is then its minutes on one core (CPU minutes), its steps fixed by a probe.

    .venv/bin/python benchmarks/bench_pretrain_ssl.py                     # everything (hours)
    .venv/bin/python benchmarks/bench_pretrain_ssl.py --stages report      # the tables again
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from bench_text_code import (
    MMSSL,
    ROOT,
    budget_cut,
    evaluate,
    mine,
    mine_unlabeled,
    run,
    run_for_minutes,
    seeded_records,
)

BLOCK, TEXT_LEN, VOCAB = 128, 48, 16000
TOWER = ["--preset", "mini", "--block-size", str(BLOCK)]
SWEEP = {  # name -> pretrain mlm options
    "tied-token": ["--masking", "token"],
    "untied-token": ["--masking", "token", "--untie-embeddings"],
    "untied-identifier": ["--masking", "identifier", "--untie-embeddings"],
    "untied-span": ["--masking", "span", "--untie-embeddings"],
}
INITS = ("random", "mlm", "clm", "contrastive", "mlm+contrastive")
LM_RECORDS = 40_000  # unlabeled records the language models read (about 2x what 15 minutes consume)
LOCK = threading.Lock()


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


# ---- corpus ---------------------------------------------------------------------------------------


def corpus_stage(args, results) -> None:
    from mmssl.data.code_search import read_code_search, write_code_search

    data = ROOT / args.corpus_dir
    data.mkdir(parents=True, exist_ok=True)
    labeled = mine(data, None)
    unlabeled, seconds = mine_unlabeled(data)
    if seconds is not None:
        results["corpus"]["unlabeled_seconds"] = seconds
    corpus = read_code_search(labeled)
    train = [r for r in corpus.records if r["partition"] == "train"]
    for budget in args.budgets:
        path = data / f"labeled-{budget}.jsonl.gz"
        if not path.exists():
            write_code_search(budget_cut(corpus.records, budget), path)
    records = read_code_search(unlabeled, required=("code",)).records
    sample = Path(args.unlabeled_lm)
    if not sample.exists():  # what the LMs read: more than 15 minutes consume, a fifth of the tokenizing
        write_code_search(seeded_records(records, LM_RECORDS), sample)
    results["corpus"].update(
        labeled=str(labeled), unlabeled=str(unlabeled), train_pairs=len(train),
        unlabeled_records=len(records), unlabeled_functions=sum(r["kind"] == "function" for r in records),
        unlabeled_with_docstring=sum(bool(r["docstring"]) for r in records),
    )  # fmt: skip


# ---- pretraining ------------------------------------------------------------------------------------


def pretrain(args, out: Path, name: str, cmd: list[str], minutes: float, batch: int) -> dict:
    """One pretraining run of ``minutes``, its steps from a probe; the model it keeps."""
    model, rows = run_for_minutes(cmd, out, f"pre-{name}", batch, minutes, evals=5)
    valid = [r for r in rows if r.get("split") == "valid"]
    info = {"model": str(model), "minutes": minutes}
    info["steps"] = max((r["step"] for r in rows), default=0)
    info["samples_per_s"] = statistics.median(r["samples_per_s"] for r in rows if "samples_per_s" in r)
    if valid:
        key = "perplexity" if "perplexity" in valid[0] else "mrr"
        info[f"valid_{key}"] = (min if key == "perplexity" else max)(r[key] for r in valid)
    return info


def lm_command(args, kind: str, extra: list[str], tokenizer: str | None) -> list[str]:
    cmd = [*MMSSL, "pretrain", kind, "--data", args.unlabeled_lm, *TOWER, "--vocab-size", str(VOCAB),
           "--batch-size", "32", "--lr", "1e-3", "--valid-fraction", "0.01", *extra]  # fmt: skip
    return cmd + (["--tokenizer", tokenizer] if tokenizer else [])


def contrastive_command(args, init: str) -> list[str]:
    return [*MMSSL, "pretrain", "contrastive", "--train", args.unlabeled, "--text-init", init, "--batch-size",
            "64", "--lr", "1e-3", "--max-text-length", "64", "--max-code-length", str(BLOCK), "--dropout", "0",
            "--eval-max-pairs", "1000"]  # fmt: skip


def random_control(args, out: Path, results) -> str:
    with LOCK:
        if "random" not in results["pretrain"]:
            run([*lm_command(args, "mlm", ["--untie-embeddings"], None), "--out", str(out / "pre-random"),
                 "--max-steps", "0", "--overwrite"], out / "pre-random.log")  # fmt: skip
            results["pretrain"]["random"] = {"model": str(out / "pre-random" / "final"), "steps": 0, "minutes": 0}
            save(args, results)
    return results["pretrain"]["random"]["model"]


def pretrain_init(args, out: Path, results, name: str, mlm_options: list[str]) -> dict:
    tokenizer = random_control(args, out, results)
    minutes = args.pretrain_minutes
    if name == "mlm":
        return pretrain(args, out, name, lm_command(args, "mlm", mlm_options, tokenizer), minutes, 32)
    if name == "clm":
        return pretrain(args, out, name, lm_command(args, "clm", ["--untie-embeddings"], tokenizer), minutes, 32)
    if name == "contrastive":
        return pretrain(args, out, name, contrastive_command(args, tokenizer), minutes, 64)
    if name == "mlm+contrastive":
        first = pretrain(args, out, "mlm-half", lm_command(args, "mlm", mlm_options, tokenizer), minutes / 2, 32)
        second = pretrain(args, out, name, contrastive_command(args, first["model"]), minutes / 2, 64)
        return {**second, "minutes": minutes, "mlm_steps": first["steps"], "contrastive_steps": second["steps"]}
    raise ValueError(name)


# ---- fine-tuning ------------------------------------------------------------------------------------


def finetune(args, out: Path, key: str, init: str, budget: str, seed: int) -> dict:
    data = ROOT / args.corpus_dir / f"labeled-{budget}.jsonl.gz"
    run_dir = out / f"ft-{key.replace('/', '-')}"
    steps = args.all_steps if budget == "all" and args.all_steps else args.steps
    run([*MMSSL, "train", "--train", str(data), "--out", str(run_dir), "--text-init", init, "--shared", "--pooling",
         "mean", "--batch-size", str(args.batch), "--lr", "1e-3", "--max-code-length", str(BLOCK),
         "--max-text-length", str(TEXT_LEN), "--max-steps", str(steps), "--warmup-steps",
         str(max(10, steps // 20)), "--eval-every", str(max(25, steps // 3)), "--save-every", "0",
         "--eval-max-pairs", "1000", "--dropout", "0", "--seed", str(seed), "--overwrite"],
        out / f"ft-{key.replace('/', '-')}.log")  # fmt: skip
    best = run_dir / ("best" if (run_dir / "best").exists() else "final")
    result = evaluate(Path(args.labeled), out, key.replace("/", "-"), args, "--model", str(best))
    result.pop("baselines", None)
    return {k: result[k] for k in ("mrr", "recall@1", "recall@10", "n", "chunk_mrrs") if k in result}


def save(args, results) -> None:
    results["meta"] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"), "cores": os.cpu_count(), "jobs": args.jobs,
        "pretrain_minutes": args.pretrain_minutes, "steps": args.steps, "all_steps": args.all_steps,
        "batch": args.batch, "test_pairs": args.test_pairs, "seeds": args.seeds, "all_seeds": args.all_seeds,
        "budgets": args.budgets,
    }  # fmt: skip
    path = ROOT / args.out / "results.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(path)


def in_parallel(args, jobs: list) -> None:
    """Run (key, table, fn) jobs ``args.jobs`` at a time; each result lands in ``table[key]``, saved."""

    def one(job):
        key, table, fn = job
        result = fn()
        with LOCK:
            table[key] = result
            save(args, args.results)

    with ThreadPoolExecutor(args.jobs) as pool:
        for future in [pool.submit(one, j) for j in jobs]:
            future.result()


def sweep_stage(args, results) -> None:
    out = ROOT / args.out
    tokenizer = random_control(args, out, results)
    jobs = []
    for name, options in SWEEP.items():
        if name not in results["sweep"]:

            def job(name=name, options=options):
                pre = pretrain(args, out, f"sweep-{name}", lm_command(args, "mlm", options, tokenizer),
                               args.sweep_minutes, 32)  # fmt: skip
                return {**pre, **finetune(args, out, f"sweep-{name}/1000/s0", pre["model"], "1000", 0)}

            jobs.append((name, results["sweep"], job))
    if "random/1000/s0" not in results["finetune"]:
        control = "random/1000/s0"
        jobs.append((control, results["finetune"], lambda: finetune(args, out, control, tokenizer, "1000", 0)))
    in_parallel(args, jobs)


def chosen_mlm(results) -> tuple[str, list[str]]:
    done = {k: v for k, v in results["sweep"].items() if "mrr" in v}
    if not done:
        return "untied-identifier", SWEEP["untied-identifier"]
    best = max(done, key=lambda k: done[k]["mrr"])
    return best, SWEEP[best]


def main_stage(args, results) -> None:
    out = ROOT / args.out
    name, options = chosen_mlm(results)
    results["mlm_recipe"] = name
    random_control(args, out, results)
    pre = [(n, results["pretrain"], lambda n=n: pretrain_init(args, out, results, n, options))
           for n in args.inits if n != "random" and n not in results["pretrain"]]  # fmt: skip
    in_parallel(args, pre)
    jobs = []
    for budget in args.budgets:
        for seed in args.all_seeds if budget == "all" else args.seeds:
            for init in args.inits:
                key = f"{init}/{budget}/s{seed}"
                if key not in results["finetune"]:
                    model = results["pretrain"][init]["model"]
                    fn = lambda k=key, m=model, b=budget, s=seed: finetune(args, out, k, m, b, s)  # noqa: E731
                    jobs.append((key, results["finetune"], fn))
    in_parallel(args, jobs)
    if "bm25" not in results:  # BM25 over the same test pairs (any model: eval scores BM25 beside it)
        first = next(k for k in results["finetune"] if not k.startswith("sweep"))
        model = out / f"ft-{first.replace('/', '-')}" / "final"
        scored = evaluate(Path(args.labeled), out, "bm25", args, "--model", str(model), "--bm25")
        results["bm25"] = scored["baselines"]["bm25"]  # BM25's own figures, not the model's beside them
        save(args, results)


# ---- throughput -------------------------------------------------------------------------------------


def throughput_stage(args, results, steps: int = 40) -> None:
    """Pretraining tokens/s of mmssl's MLM task and of transformers' Trainer: same model config, the
    same packed blocks, batch 32 x 128, fp32, token masking; two rounds taking turns."""
    import torch
    from transformers import (
        AutoModelForMaskedLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from mmssl.engine import Trainer as Engine
    from mmssl.pretrain.commands import MLMConfig, build_pretraining

    out = ROOT / args.out
    control = random_control(args, out, results)  # the same model (config and weights) for both
    tok = AutoTokenizer.from_pretrained(control)
    base = MLMConfig(data=[args.unlabeled_lm], init=control, block_size=BLOCK, batch_size=32, lr=1e-3,
                     max_steps=steps, warmup_steps=2, eval_every=0, save_every=0, log_every=1, valid_fraction=0.0,
                     device="cpu", precision="fp32", overwrite=True)  # fmt: skip

    def ours(round_: int) -> float:
        torch.manual_seed(0)
        config = dataclasses.replace(base, out=str(out / f"tput-mmssl-{round_}"))
        task = build_pretraining(config, torch.device("cpu"))
        Engine(task, config, torch.device("cpu")).fit()
        rows = [r for r in lines(out / f"tput-mmssl-{round_}" / "metrics.jsonl") if "samples_per_s" in r]
        return statistics.median(r["samples_per_s"] for r in rows if r["step"] > 5) * BLOCK

    blocks = build_pretraining(base, torch.device("cpu")).data  # the same blocks

    class Clock(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter())

    def theirs(round_: int) -> float:
        torch.manual_seed(0)
        model = AutoModelForMaskedLM.from_pretrained(control)
        rows = [{"input_ids": ids} for ids in blocks.input_ids[: steps * 32 + 32].tolist()]
        clock = Clock()
        trainer = Trainer(
            model=model,
            args=TrainingArguments(
                output_dir=str(out / f"tput-hf-{round_}"),
                per_device_train_batch_size=32,
                max_steps=steps,
                learning_rate=1e-3,
                warmup_steps=2,
                weight_decay=0.01,
                logging_steps=steps,
                save_strategy="no",
                report_to=[],
                use_cpu=True,
                dataloader_num_workers=0,
                disable_tqdm=True,
            ),  # fmt: skip
            train_dataset=rows,
            data_collator=DataCollatorForLanguageModeling(tok, mlm_probability=0.15),
            callbacks=[clock],
        )
        trainer.train()
        gaps = [b - a for a, b in zip(clock.times[5:], clock.times[6:])]
        return 32 * BLOCK / statistics.median(gaps)

    rows = {"mmssl": [], "transformers Trainer": []}
    for round_ in range(2):
        rows["mmssl"].append(ours(round_))
        rows["transformers Trainer"].append(theirs(round_))
    results["throughput"] = {k: {"tokens_per_s": max(v), "rounds": v} for k, v in rows.items()}
    results["throughput"]["threads"] = torch.get_num_threads()


# ---- report -----------------------------------------------------------------------------------------


def report(args, results) -> None:
    tp = results.get("throughput")
    if tp:
        print("\npretraining throughput (MLM, mini, 32 x 128, fp32)")
        for name in ("mmssl", "transformers Trainer"):
            print(f"  {name:<22} {tp[name]['tokens_per_s']:>9,.0f} tokens/s  rounds {tp[name]['rounds']}")
    if results["sweep"]:
        base = results["finetune"].get("random/1000/s0", {}).get("mrr")
        print(f"\nsweep: {args.sweep_minutes} min MLM, fine-tuned at 1,000 pairs, seed 0 (random init: {base})")
        for name, row in results["sweep"].items():
            print(f"  {name:<18} steps {row['steps']:>5}  ppl {row.get('valid_perplexity', float('nan')):8.1f}  "
                  f"test MRR {row.get('mrr', float('nan')):.4f}")  # fmt: skip
    ft = results["finetune"]
    for budget in args.budgets:
        print(f"\nfine-tuned on {budget} labeled pairs: test MRR (mean ± sd over seeds) and paired diff vs random")
        seeds = args.all_seeds if budget == "all" else args.seeds
        control = [ft.get(f"random/{budget}/s{s}", {}).get("mrr") for s in seeds]
        for init in INITS:
            mrrs = [ft.get(f"{init}/{budget}/s{s}", {}).get("mrr") for s in seeds]
            if any(m is None for m in mrrs):
                print(f"  {init:<16} (not run: {sum(m is None for m in mrrs)} seed(s) missing)")
                continue
            sd = statistics.stdev(mrrs) if len(mrrs) > 1 else float("nan")  # nan: one seed
            line = f"  {init:<16} {statistics.mean(mrrs):.4f} ± {sd:.4f}  " + " ".join(f"{m:.4f}" for m in mrrs)
            if init != "random" and None not in control:
                d = [a - b for a, b in zip(mrrs, control)]
                dsd = statistics.stdev(d) if len(d) > 1 else float("nan")
                mean = statistics.mean(d)
                verdict = "beats 3x spread" if mean > 3 * dsd else "below by 3x spread" if mean < -3 * dsd else "within"
                verdict = verdict if len(d) > 1 else "one seed"
                line += f"   diff {mean:+.4f} ± {dsd:.4f} ({sum(x > 0 for x in d)}/{len(d)} up, {verdict})"
            print(line)
    bm25 = results.get("bm25", {})
    if "baselines" in bm25:  # a results file of before: BM25's figures beside a model's
        bm25 = bm25["baselines"]["bm25"]
    if bm25:
        print(f"\nBM25 on the same test pairs: MRR {bm25['mrr']:.4f}")
        for key, row in ft.items():  # paired over the 1,000-pair chunks of the same test pairs
            if key.split("/")[1:2] == ["all"] and "chunk_mrrs" in row and "chunk_mrrs" in bm25:
                d = [a - b for a, b in zip(row["chunk_mrrs"], bm25["chunk_mrrs"])]
                sd = statistics.stdev(d)
                t = statistics.mean(d) / (sd / len(d) ** 0.5)
                print(f"  {key:<22} vs BM25 {statistics.mean(d):+.4f} ± {sd:.4f} over {len(d)} chunks, t = {t:.1f}, "
                      f"{sum(x > 0 for x in d)}/{len(d)} up")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", default="corpus,throughput,sweep,main,report")
    p.add_argument("--pretrain-minutes", type=float, default=15.0, help="CPU minutes of each init's pretraining")
    p.add_argument("--sweep-minutes", type=float, default=3.0)
    p.add_argument("--budgets", default="1000,5000,all")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--all-seeds", default="0,1,2", help="seeds of the all-pairs budget")
    p.add_argument("--inits", default=",".join(INITS), help="inits pretrained and fine-tuned")
    p.add_argument("--steps", type=int, default=150, help="fine-tuning steps, every init and budget")
    p.add_argument("--all-steps", type=int, default=0, help="fine-tuning steps of the all-pairs budget (0: --steps)")
    p.add_argument("--batch", type=int, default=64, help="fine-tuning batch")
    p.add_argument("--test-pairs", type=int, default=5000)
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="runs side by side, 1 thread each")
    p.add_argument("--corpus-dir", default="runs/bench-text-code")
    p.add_argument("--out", default="runs/bench-pretrain-ssl")
    args = p.parse_args()
    args.budgets = args.budgets.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.all_seeds = [int(s) for s in args.all_seeds.split(",")]
    args.inits = [i for i in args.inits.split(",") if i]
    (ROOT / args.out).mkdir(parents=True, exist_ok=True)
    saved = ROOT / args.out / "results.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}
    for key in ("corpus", "pretrain", "sweep", "finetune"):
        results.setdefault(key, {})
    args.results = results
    args.labeled = str(ROOT / args.corpus_dir / "corpus.jsonl.gz")
    args.unlabeled = str(ROOT / args.corpus_dir / "unlabeled.jsonl.gz")
    args.unlabeled_lm = str(ROOT / args.corpus_dir / "unlabeled-lm.jsonl.gz")
    stages = args.stages.split(",")
    if "corpus" in stages:
        corpus_stage(args, results)
        save(args, results)
    if "throughput" in stages and "throughput" not in results:
        throughput_stage(args, results)  # two threads, alone on the machine
        save(args, results)
    if args.jobs > 1:  # from here on, runs side by side on one thread each
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = "1"
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if "sweep" in stages:
        sweep_stage(args, results)
    if "main" in stages:
        main_stage(args, results)
    report(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
