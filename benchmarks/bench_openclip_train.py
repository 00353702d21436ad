"""Training throughput: `mmssl train --task image-text` next to open_clip's own trainer, same everything.

What it measures (issue #7): samples/s of `python -m open_clip_train.main` (the training entry point
in the open_clip wheel, what users would otherwise pick) and of this project's trainer, on
  - the same model: `mmssl-vit-tiny` (open_clip ViT image tower, 64 px, 4 layers of 192; open_clip text
    transformer, 4 layers of 256, 32 tokens), given to open_clip_train as a `local-dir:` config;
  - the same data: one TSV (`filepath`, `title`) of the shapes set's training images (64 px PNGs);
  - fp32, the same batch size, AdamW hyperparameters (lr, weight decay, and CLIP's betas (0.9, 0.98)
    and eps 1e-6 given to both), warmup, cosine schedule over the same number of steps
    (open_clip_train trains whole epochs: mmssl runs as many steps), data-loader workers and seed,
    and no gradient clipping (open_clip_train's default; mmssl clips at 1.0 unless told otherwise).
The runs take turns (open_clip, mmssl, open_clip, mmssl, ...) in one invocation. Each trainer
reports its own steady-state rate: open_clip_train's "Batch (t)" average per logging window, mmssl's
samples/s per window, the first window of each run (and each open_clip epoch) left out (start-up,
first-batch costs). The median window is the run's figure; the table gives each run, and the ratio
of the medians over all runs. Also the training loss at a few steps and its mean over the logged
steps of the last half (one batch's loss each: the curves agree within noise, not exactly, as their
data order, initial weights and augmentation draws differ), and each run's wall time with start-up.

Command (from the repo root):
    .venv/bin/python benchmarks/bench_openclip_train.py
    .venv/bin/python benchmarks/bench_openclip_train.py --epochs 2 --repeats 2 --workers 1 --mmssl-workers 0
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mmssl.runtime import cpu_name  # noqa: E402

MODEL = "mmssl-vit-tiny"
LOG_EVERY = 10
BETA2, EPS = 0.98, 1e-6  # CLIP's AdamW for ViTs (open_clip_train's default only when the model name says "vit")
OPEN_CLIP_LINE = re.compile(
    r"Train Epoch: (\d+) \[\s*(\d+)/(\d+).*?Batch \(t\): ([0-9.]+),.*?Contrastive_loss: ([0-9.]+)"
)


def make_data(out: Path, count: int) -> Path:
    folder = out / "shapes"
    if not (folder / "metadata.jsonl").is_file():
        argv = ["data", "make-images", "--kind", "shapes", "--out", str(folder), "--count", str(count)]
        subprocess.run([sys.executable, "-m", "mmssl.cli", *argv], check=True)
    tsv = out / "train.tsv"
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    with tsv.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["filepath", "title"])
        for r in rows:
            if r["split"] == "train":
                w.writerow([str((folder / r["file_name"]).resolve()), r["text"]])
    return tsv


def model_dir(out: Path, model: str = MODEL) -> Path:
    """An mmssl-shipped config as an open_clip `local-dir:` model (open_clip_config.json)."""
    from mmssl.io import read_json_object
    from mmssl.models.image import CONFIG_DIR

    folder = out / ("open_clip_model" if model == MODEL else f"open_clip_model-{model}")
    folder.mkdir(parents=True, exist_ok=True)
    cfg = read_json_object(CONFIG_DIR / f"{model}.json")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}, indent=2))
    return folder


@dataclass(frozen=True)
class Setup:
    """What differs between this CPU benchmark and the GPU one (``bench_gpu.py``)."""

    open_clip_model: str  # open_clip_train's --model: a shipped name or local-dir:DIR
    mmssl_model: str  # mmssl's --image-model
    open_clip_precision: str = "fp32"  # open_clip_train's name (amp_bf16, ...)
    mmssl_precision: str = "fp32"
    device: str = "cpu"
    mmssl_extra: tuple[str, ...] = ()


def cpu_setup(out: Path) -> Setup:
    return Setup(open_clip_model=f"local-dir:{model_dir(out)}", mmssl_model=MODEL)


def run_open_clip(out: Path, tsv: Path, steps_per_epoch: int, args, run: int, setup: Setup) -> dict:
    logs = out / "open_clip_logs"
    cmd = [sys.executable, "-m", "open_clip_train.main", "--model", setup.open_clip_model]
    cmd += ["--train-data", str(tsv), "--dataset-type", "csv", "--csv-img-key", "filepath"]
    cmd += ["--csv-caption-key", "title", "--batch-size", str(args.batch_size), "--epochs", str(args.epochs)]
    cmd += ["--beta1", "0.9", "--beta2", str(BETA2), "--eps", str(EPS)]
    cmd += ["--lr", str(args.lr), "--wd", "0.1", "--warmup", str(args.warmup), "--workers", str(args.workers)]
    cmd += ["--precision", setup.open_clip_precision, "--seed", "0", "--log-every-n-steps", str(LOG_EVERY)]
    cmd += ["--device", setup.device] if setup.device == "cpu" else []  # on a GPU: its own cuda:LOCAL_RANK
    cmd += ["--save-frequency", "0", "--zeroshot-frequency", "0", "--val-frequency", "0", "--report-to", ""]
    cmd += ["--logs", str(logs), "--name", f"run{run}-{time.time_ns()}"]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"open_clip_train failed:\n{proc.stderr[-3000:]}")
    windows, losses = [], {}
    for line in (proc.stdout + proc.stderr).splitlines():
        m = OPEN_CLIP_LINE.search(line)
        if m:
            epoch, seen, batch_time, loss = int(m[1]), int(m[2]), float(m[4]), float(m[5])
            step = epoch * steps_per_epoch + seen // args.batch_size
            if seen > args.batch_size:  # not each epoch's first (single-batch) window
                windows.append(args.batch_size / batch_time)
            losses[step] = loss
    return {"rates": windows[1:] or windows, "losses": losses, "wall_s": wall}


def run_mmssl(out: Path, tsv: Path, steps: int, args, run: int, setup: Setup, tag: str = "") -> dict:
    target = out / f"mmssl{tag}-run{run}"
    cmd = [sys.executable, "-m", "mmssl.cli", "train", "--task", "image-text", "--train", str(tsv)]
    cmd += ["--out", str(target), "--image-model", setup.mmssl_model, "--batch-size", str(args.batch_size)]
    cmd += ["--max-steps", str(steps), "--lr", str(args.lr), "--weight-decay", "0.1"]
    cmd += ["--beta1", "0.9", "--beta2", str(BETA2), "--eps", str(EPS)]
    workers = args.workers if args.mmssl_workers is None else args.mmssl_workers
    cmd += ["--warmup-steps", str(args.warmup), "--workers", str(workers), "--precision", setup.mmssl_precision]
    cmd += ["--device", setup.device, "--seed", "0", "--log-every", str(LOG_EVERY), "--save-every", "0"]
    cmd += ["--eval-every", "0", "--clip-grad", "0", *setup.mmssl_extra]  # open_clip_train: no clipping
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"mmssl train failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (target / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    rates = [r["samples_per_s"] for r in train if r["step"] > 1]
    return {
        "rates": rates[1:] or rates,
        "losses": {r["step"]: r["loss"] for r in train},
        "wall_s": wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench-openclip-train")
    p.add_argument("--count", type=int, default=12000, help="shapes images (4 in 5 train)")
    p.add_argument("--epochs", type=int, default=2, help="open_clip_train trains whole epochs; mmssl as many steps")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=1, help="data-loader workers of both trainers")
    p.add_argument(
        "--mmssl-workers",
        type=int,
        default=None,
        help="mmssl's own (default: --workers); 0 makes its batches in process, from the images it keeps decoded",
    )
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=20)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tsv = make_data(out, args.count)
    setup = cpu_setup(out)
    n_train = sum(1 for _ in tsv.open()) - 1
    steps_per_epoch = n_train // args.batch_size
    steps = args.epochs * steps_per_epoch
    runs = []
    for r in range(args.repeats):
        for name in ("open_clip_train", "mmssl"):
            res = (
                run_open_clip(out, tsv, steps_per_epoch, args, r, setup)
                if name == "open_clip_train"
                else run_mmssl(out, tsv, steps, args, r, setup)
            )
            res.update(trainer=name, run=r, median=statistics.median(res["rates"]))
            runs.append(res)
            print(
                f"{name} run {r}: {res['median']:.1f} samples/s (median of {len(res['rates'])} windows), "
                f"wall {res['wall_s']:.0f} s",
                flush=True,
            )
    med = {n: statistics.median(x["median"] for x in runs if x["trainer"] == n) for n in ("open_clip_train", "mmssl")}
    check = [s for s in (20, 50, 100, 150, 300) if s <= steps]
    stamp = {"date": f"{datetime.now(UTC):%Y-%m-%d}", "cpu": cpu_name(), "cores": os.cpu_count()}
    (out / "results.json").write_text(json.dumps({**stamp, "args": vars(args), "runs": runs}, indent=2, default=str))
    print(
        f"\n{stamp['date']}, {stamp['cpu']}, {stamp['cores']} cores; {n_train:,} training images, "
        f"batch {args.batch_size}, {steps} steps ({args.epochs} epochs), fp32, "
        f"data-loader workers: open_clip_train {args.workers}, "
        f"mmssl {args.workers if args.mmssl_workers is None else args.mmssl_workers}"
    )
    # Each trainer logs its own steps (open_clip_train 1, 11, 21, ...; mmssl 1, 10, 20, ...): the
    # loss at the logged step nearest to each checkpoint, one batch's loss each.
    head = " | ".join(f"loss ~{s}" for s in check)
    late_head = f"mean loss of the logged steps > {steps // 2} (± s.e.)"
    print(f"| trainer | run | samples/s (median window) | wall s | {head} | {late_head} |")
    print("|---|---|---|---|" + "---|" * (len(check) + 1))
    for x in runs:
        loss = " | ".join(f"{x['losses'][min(x['losses'], key=lambda t, s=s: abs(t - s))]:.3f}" for s in check)
        late = [v for k, v in x["losses"].items() if k > steps // 2]
        se = statistics.stdev(late) / len(late) ** 0.5 if len(late) > 1 else float("nan")
        print(
            f"| {x['trainer']} | {x['run']} | {x['median']:.1f} | {x['wall_s']:.0f} | {loss} "
            f"| {statistics.mean(late):.3f} ± {se:.3f} |"
        )
    print(f"\nmmssl / open_clip_train samples/s: {med['mmssl'] / med['open_clip_train']:.3f}")


if __name__ == "__main__":
    main()
