"""Image-text quality on this CPU within 30 minutes of training per model, next to untrained models.

What it measures (issue #7): for each recipe below, `mmssl train --task image-text` on the train
split of an offline set made by `mmssl data make-images`, then `mmssl eval --task image-text` on its
test split (the same function, called in process): recall@1/5/10 text->image and image->text,
zero-shot accuracy with prompt templates, and a linear probe on frozen image features — and the same
numbers for the same model untrained (its initialization, same seed): the floor each row must beat.

Recipes (one row each; fp32, batch 128, the steps chosen so that each trains in about 12 minutes
on 2 cores, `--max-minutes 30` as a hard stop):
  emoji-scratch      mmssl-vit-tiny image tower + open_clip text tower, both from scratch, heavy aug
  emoji-lit-minilm   the same image tower against the locked pretrained MiniLM text tower (LiT)
  shapes-scratch     from scratch on the shapes set (test images hold colour-shape pairs never in training)
  digits-scratch     from scratch on scikit-learn's digits
Emoji test images are emoji never seen in training, captioned with keywords that no training caption
uses (`mmssl data make-images --kind emoji`).

Command (from the repo root; reuses the data and trained models of earlier runs in --out):
    .venv/bin/python benchmarks/bench_image_text.py
    .venv/bin/python benchmarks/bench_image_text.py --only train     # the training runs alone
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mmssl.runtime import cpu_name  # noqa: E402

COMMON = "--batch-size 128 --lr 5e-4 --warmup-steps 100 --log-every 20 --save-every 500 --max-minutes 30"
RECIPES = {
    "emoji-scratch": ("emoji", 700, "--augment heavy"),
    "emoji-lit-minilm": ("emoji", 1000, "--augment heavy --text-init minilm --lock-text"),
    "shapes-scratch": ("shapes", 500, ""),
    "digits-scratch": ("digits", 300, ""),
}


def make_data(out: Path, kind: str) -> Path:
    folder = out / "data" / kind
    if not (folder / "metadata.jsonl").is_file():
        subprocess.run(
            [sys.executable, "-m", "mmssl.cli", "data", "make-images", "--kind", kind, "--out", str(folder)], check=True
        )
    return folder


def train(out: Path, name: str) -> tuple[Path, float]:
    kind, steps, extra = RECIPES[name]
    data = make_data(out, kind)
    run = out / "runs" / name
    if (run / "final" / "dual_encoder.json").is_file():
        return run / "final", json.loads((run / "train_seconds.json").read_text())["seconds"]
    cmd = [sys.executable, "-m", "mmssl.cli", "train", "--task", "image-text", "--train", str(data)]
    cmd += ["--out", str(run), "--max-steps", str(steps), *COMMON.split(), *extra.split()]
    print("$", " ".join(cmd[2:]), flush=True)
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - start
    (run / "train_seconds.json").write_text(json.dumps({"seconds": seconds}))
    return run / "final", seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench-image-text")
    p.add_argument("--only", choices=("train", "all"), default="all")
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--print-only", action="store_true", help="print the table of the last run's results.json")
    args = p.parse_args()
    out = Path(args.out)
    if args.print_only:
        saved = json.loads((out / "results.json").read_text())
        print_table(saved["rows"], saved)
        return
    names = args.recipes.split(",")
    trained = {name: train(out, name) for name in names}
    if args.only == "train":
        return
    from mmssl.models import DualEncoder
    from mmssl.recipes.image_text_eval import evaluate_model, untrained_like

    rows = []
    for name, (model_dir, seconds) in trained.items():
        data = out / "data" / RECIPES[name][0]
        model = DualEncoder.from_pretrained(model_dir)
        for label, m in (("trained", model), ("untrained", untrained_like(model_dir))):
            r = evaluate_model(m, str(data), split="test", train_split="train")
            rows.append(
                {"recipe": name, "model": label, "train_minutes": seconds / 60 if label == "trained" else 0, **r}
            )
            print(json.dumps(rows[-1]), flush=True)
    stamp = {"date": f"{datetime.now(UTC):%Y-%m-%d}", "cpu": cpu_name()}
    (out / "results.json").write_text(json.dumps({**stamp, "rows": rows}, indent=2) + "\n")
    print_table(rows, stamp)


def print_table(rows: list[dict], stamp: dict) -> None:
    print(f"\n{stamp['date']}, {stamp['cpu']}")
    print("| recipe | model | train min | T->I R@1 / R@5 / R@10 | I->T R@1 / R@5 / R@10 ", end="")
    print("| zero-shot top-1 (majority) | probe |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        t2i = " / ".join(f"{r[f'text_to_image_recall@{k}']:.3f}" for k in (1, 5, 10))
        i2t = " / ".join(f"{r[f'image_to_text_recall@{k}']:.3f}" for k in (1, 5, 10))
        zs = ", ".join(f"{k} {v['top1']:.3f} ({v['majority']:.3f})" for k, v in r["zero_shot"].items())
        lp = ", ".join(f"{k} {v:.3f}" for k, v in r["linear_probe"].items())
        print(f"| {r['recipe']} | {r['model']} | {r['train_minutes']:.1f} | {t2i} | {i2t} | {zs} | {lp} |")


if __name__ == "__main__":
    main()
