"""Training throughput: `mmssl train --task image-text` next to open_clip's own trainer, same everything.

What it measures (issue #7): samples/s of `python -m open_clip_train.main` (the training entry point
in the open_clip wheel, what users would otherwise pick) and of this project's trainer, on
  - the same model: `mmssl-vit-tiny` (open_clip ViT image tower, 64 px, 4 layers of 192; open_clip text
    transformer, 4 layers of 256, 32 tokens), given to open_clip_train as a `local-dir:` config;
  - the same data: one TSV (`filepath`, `title`) of the shapes set's training images (64 px PNGs);
  - fp32, the same batch size, learning rate, weight decay, warmup, data-loader workers and seed, and
    no gradient clipping (open_clip_train's default; mmssl clips at 1.0 unless told otherwise).
The runs take turns (open_clip, mmssl, open_clip, mmssl, ...) in one invocation. Each trainer
reports its own steady-state rate: open_clip_train's "Batch (t)" average per logging window, mmssl's
samples/s per window, the first window of each run left out (start-up, first-batch costs). The
median window is the run's figure; the table gives each run, and the ratio of the medians over all
runs. Also the training loss at the same steps, to show the two curves agree within noise (their
data order and augmentation draws differ), and each run's wall time including start-up.

Command (from the repo root):
    .venv/bin/python benchmarks/bench_openclip_train.py
    .venv/bin/python benchmarks/bench_openclip_train.py --steps 100 --repeats 2 --workers 1 --mmssl-workers 0
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
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mmssl.runtime import cpu_name  # noqa: E402

MODEL = "mmssl-vit-tiny"
LOG_EVERY = 10
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


def model_dir(out: Path) -> Path:
    """The mmssl config as an open_clip `local-dir:` model (open_clip_config.json)."""
    from mmssl.io import read_json_object
    from mmssl.models.image import CONFIG_DIR

    folder = out / "open_clip_model"
    folder.mkdir(parents=True, exist_ok=True)
    cfg = read_json_object(CONFIG_DIR / f"{MODEL}.json")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}, indent=2))
    return folder


def run_open_clip(out: Path, tsv: Path, n_train: int, args, run: int) -> dict:
    steps_per_epoch = n_train // args.batch_size
    epochs = -(-args.steps // steps_per_epoch)
    logs = out / "open_clip_logs"
    cmd = [sys.executable, "-m", "open_clip_train.main", "--model", f"local-dir:{model_dir(out)}"]
    cmd += ["--train-data", str(tsv), "--dataset-type", "csv", "--csv-img-key", "filepath"]
    cmd += ["--csv-caption-key", "title", "--batch-size", str(args.batch_size), "--epochs", str(epochs)]
    cmd += ["--lr", str(args.lr), "--wd", "0.1", "--warmup", str(args.warmup), "--workers", str(args.workers)]
    cmd += ["--precision", "fp32", "--device", "cpu", "--seed", "0", "--log-every-n-steps", str(LOG_EVERY)]
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
            if seen > args.batch_size and step <= args.steps:  # not each epoch's first (single-batch) window
                windows.append(args.batch_size / batch_time)
            losses[step] = loss
    # Steps past --steps (the last epoch's remainder) are not compared; its wall time includes them.
    extra = epochs * steps_per_epoch - args.steps
    return {"rates": windows[1:] or windows, "losses": losses, "wall_s": wall, "extra_steps": extra}


def run_mmssl(out: Path, tsv: Path, args, run: int) -> dict:
    target = out / f"mmssl-run{run}"
    cmd = [sys.executable, "-m", "mmssl.cli", "train", "--task", "image-text", "--train", str(tsv)]
    cmd += ["--out", str(target), "--image-model", MODEL, "--batch-size", str(args.batch_size)]
    cmd += ["--max-steps", str(args.steps), "--lr", str(args.lr), "--weight-decay", "0.1"]
    workers = args.workers if args.mmssl_workers is None else args.mmssl_workers
    cmd += ["--warmup-steps", str(args.warmup), "--workers", str(workers), "--precision", "fp32"]
    cmd += ["--device", "cpu", "--seed", "0", "--log-every", str(LOG_EVERY), "--save-every", "0"]
    cmd += ["--eval-every", "0", "--clip-grad", "0"]  # open_clip_train clips no gradient by default
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
        "extra_steps": 0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench-openclip-train")
    p.add_argument("--count", type=int, default=12000, help="shapes images (4 in 5 train)")
    p.add_argument("--steps", type=int, default=100)
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
    n_train = sum(1 for _ in tsv.open()) - 1
    runs = []
    for r in range(args.repeats):
        for name in ("open_clip_train", "mmssl"):
            res = (
                run_open_clip(out, tsv, n_train, args, r) if name == "open_clip_train" else run_mmssl(out, tsv, args, r)
            )
            res.update(trainer=name, run=r, median=statistics.median(res["rates"]))
            runs.append(res)
            print(
                f"{name} run {r}: {res['median']:.1f} samples/s (median of {len(res['rates'])} windows), "
                f"wall {res['wall_s']:.0f} s",
                flush=True,
            )
    med = {n: statistics.median(x["median"] for x in runs if x["trainer"] == n) for n in ("open_clip_train", "mmssl")}
    check = [s for s in (LOG_EVERY * k for k in (2, 5, 10)) if s <= args.steps]
    stamp = {"date": f"{datetime.now(UTC):%Y-%m-%d}", "cpu": cpu_name(), "cores": os.cpu_count()}
    (out / "results.json").write_text(json.dumps({**stamp, "args": vars(args), "runs": runs}, indent=2, default=str))
    print(
        f"\n{stamp['date']}, {stamp['cpu']}, {stamp['cores']} cores; {n_train:,} training images, "
        f"batch {args.batch_size}, {args.steps} steps, fp32, data-loader workers: open_clip_train {args.workers}, "
        f"mmssl {args.workers if args.mmssl_workers is None else args.mmssl_workers}"
    )
    # Each trainer logs its own steps (open_clip_train 1, 11, 21, ...; mmssl 1, 10, 20, ...): the
    # loss at the logged step nearest to each checkpoint, one batch's loss each.
    print("| trainer | run | samples/s (median window) | wall s | " + " | ".join(f"loss ~{s}" for s in check) + " |")
    print("|---|---|---|---|" + "---|" * len(check))
    for x in runs:
        loss = " | ".join(f"{x['losses'][min(x['losses'], key=lambda t, s=s: abs(t - s))]:.3f}" for s in check)
        print(f"| {x['trainer']} | {x['run']} | {x['median']:.1f} | {x['wall_s']:.0f} | {loss} |")
    print(f"\nmmssl / open_clip_train samples/s: {med['mmssl'] / med['open_clip_train']:.3f}")


if __name__ == "__main__":
    main()
