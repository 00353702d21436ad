"""Image recipes per CPU minute on emoji never seen, queried by words no training caption uses.

What it measures (issue #23): for each recipe below, `mmssl train --task image-text` against the
locked MiniLM text tower (LiT) on the emoji train split (and the icon set where the row says so),
then recall@1/5/10 text -> image and image -> text on the emoji test split: emoji whose images are
not in training (`mmssl data make-images --kind emoji`), each queried by its keywords that are no
caption of any training set (no emoji's name or keyword, no icon's or stamp's caption); and the
same images queried by today's rule (their keywords that are no training *name*: words a training
keyword may share). Every row is measured
in the same run, one after another on an otherwise idle machine, next to "today": the recipe the
demo used before this issue (ViT-tiny, names as the only captions, emoji alone), at the same budget.

Rows (``ROWS``; the steps are chosen so that each trains in about 4 minutes on 2 cores, except the
"long" row):
  today            mmssl-vit-tiny, heavy augmentation, captions = the names alone
  captions         ... + every keyword as a caption (one drawn per image per step)
  icons            ... + the icon set as more training images
  shufflenet       torchvision ShuffleNetV2 x1.0 at 64 px in place of the ViT (2.5x the samples/s)
  shufflenet-crop  ... with open_clip's own crop only, no heavy augmentation
  regnet           torchvision RegNetX-400MF at 64 px
  simclr+lit       `mmssl pretrain simclr` of the ShuffleNet on every training image (emoji and
                   icons, without captions) for half the budget, then LiT from it for the other half
  shufflenet-long  the ShuffleNet row at 2.5x the steps
  stamps           the ShuffleNet row with Tux Paint's clip art as more training images
  stamps-long      ... at 2.5x the steps
  demo-recipe      what the demo trains: the ShuffleNet on the emoji alone, open_clip's crop only,
                   lr 2e-3, the name drawn half the time, 600 steps (and -300: half the steps)
  demo-groups      ... in batches of groups of about 8 similar names (--cluster-batches 8)
  demo-groups-p90  ... with the name drawn 9 times in 10 (what the demo trains since 2026-12-06)

Needs the Debian packages of the three sets (`make-images` names a missing one): apt-get install
fonts-noto-color-emoji unicode-cldr-core unicode-data adwaita-icon-theme gnome-icon-theme
oxygen-icon-theme tango-icon-theme tuxpaint-stamps-default.

Command (from the repo root; data and finished runs in --out are reused; --print-only reprints):
    .venv/bin/python benchmarks/bench_image_recipes.py [--rows today,shufflenet] [--out runs/bench-image-recipes]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mmssl.runtime import cpu_name  # noqa: E402

# recall is over the same test emoji for every row; the data sets a row trains on are its "data"
LIT = "--text-init minilm --lock-text --batch-size 128 --lr 5e-4 --warmup-steps 30 --log-every 10 --save-every 0"
VIT = "--image-model mmssl-vit-tiny"
SHUFFLE = "--image-model torchvision:shufflenet_v2_x1_0 --image-size 64"
REGNET = "--image-model torchvision:regnet_x_400mf --image-size 64"
DEMO = f"{SHUFFLE} --augment none --lr 2e-3"
# name -> (data sets, steps, arguments, SSL pretraining minutes)
ROWS: dict[str, tuple[str, int, str, float]] = {
    "today": ("emoji-names", 160, f"{VIT} --augment heavy", 0),
    "captions": ("emoji", 160, f"{VIT} --augment heavy", 0),
    "icons": ("emoji,icons", 160, f"{VIT} --augment heavy", 0),
    "shufflenet": ("emoji,icons", 400, f"{SHUFFLE} --augment heavy", 0),
    "shufflenet-crop": ("emoji,icons", 400, f"{SHUFFLE} --augment none", 0),
    "regnet": ("emoji,icons", 200, f"{REGNET} --augment heavy", 0),
    "simclr+lit": ("emoji,icons", 200, f"{SHUFFLE} --augment heavy", 2.0),
    "shufflenet-long": ("emoji,icons", 1000, f"{SHUFFLE} --augment heavy", 0),
    "stamps": ("emoji,icons,stamps", 400, f"{SHUFFLE} --augment heavy", 0),
    "stamps-long": ("emoji,icons,stamps", 1000, f"{SHUFFLE} --augment heavy", 0),
    # the demo's recipe (demo.default.IMAGE_TRAIN), here on the train split alone
    "demo-recipe": ("emoji", 600, f"{DEMO} --first-caption-p 0.5", 0),
    "demo-recipe-300": ("emoji", 300, f"{DEMO} --first-caption-p 0.5", 0),
    # ... with batches of similar names (--cluster-batches 8), and the name drawn 9 times in 10
    "demo-groups": ("emoji", 600, f"{DEMO} --first-caption-p 0.5 --cluster-batches 8", 0),
    "demo-groups-p90": ("emoji", 600, f"{DEMO} --first-caption-p 0.9 --cluster-batches 8", 0),
}


def cli(argv: list[str], log: Path) -> float:
    """Run ``mmssl ARGV`` in a subprocess (its log to ``log``); returns its wall seconds."""
    start = time.monotonic()
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, "-m", "mmssl.cli", *argv], stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    if proc.returncode:
        raise RuntimeError(f"mmssl {' '.join(argv[:3])} failed: see {log}")
    return time.monotonic() - start


def make_data(out: Path) -> Path:
    data = out / "data"
    for kind in ("emoji", "icons", "stamps"):
        if not (data / kind / "metadata.jsonl").is_file():
            cli(["data", "make-images", "--kind", kind, "--out", str(data / kind), "--overwrite"], out / f"{kind}.log")
    rows = [json.loads(line) for line in (data / "emoji" / "metadata.jsonl").read_text().splitlines()]
    for r in rows:
        r["file_name"] = str((data / "emoji" / r["file_name"]).resolve())
    names = {r["name"].lower() for r in rows if r["split"] == "train"}
    # every caption any row may train on: the emoji's, the icons', the stamps'
    seen = {c.lower() for r in rows if r["split"] == "train" for c in r["captions"]}
    for kind in ("icons", "stamps"):
        for line in (data / kind / "metadata.jsonl").read_text().splitlines():
            seen.update(c.lower() for c in json.loads(line)["captions"])
    variants = {
        # the test emoji queried by their keywords that are no caption of any training set
        "emoji-unseen": [
            {**r, "text": " ".join(k for k in r["keywords"] if k.lower() not in seen | {r["name"].lower()})}
            for r in rows
            if r["split"] == "test"
        ],
        # today's captions: the names alone (the same images and split)
        "emoji-names": [{k: v for k, v in r.items() if k != "captions"} for r in rows],
        # the same test images queried by today's rule: their keywords that are no training *name*
        # (so words that are training keywords may be in them: unseen images, seen words)
        "emoji-seen-words": [
            {
                **r,
                "text": " ".join(k for k in r["keywords"] if k.lower() not in names and k.lower() != r["name"].lower()),
            }
            for r in rows
            if r["split"] == "test"
        ],
    }
    for name, variant in variants.items():
        if not (data / name / "metadata.jsonl").is_file():
            (data / name).mkdir(parents=True, exist_ok=True)
            with (data / name / "metadata.jsonl").open("w") as f:
                for r in variant:
                    if r["text"]:
                        f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return data


def samples_per_s(log: Path) -> float | None:
    rates = [float(x) for x in re.findall(r"([0-9.]+) samples/s", log.read_text())][1:]  # the first window warms up
    return sorted(rates)[len(rates) // 2] if rates else None


def train(out: Path, data: Path, name: str) -> dict:
    sets, steps, extra, ssl_minutes = ROWS[name]
    run = out / "runs" / name
    done = run / "row.json"
    if done.is_file():
        return evaluated(run, data)
    sources = ",".join(str(data / s) for s in sets.split(","))
    seconds, init = 0.0, []
    if ssl_minutes:
        ssl = run.parent / f"{name}.simclr"  # beside the LiT run: its --out holds only a training run
        argv = ["pretrain", "simclr", "--data", sources, "--out", str(ssl), *SHUFFLE.split(), "--batch-size", "128"]
        argv += ["--max-steps", "100000", "--max-minutes", str(ssl_minutes), "--warmup-steps", "20"]
        argv += ["--eval-every", "0", "--save-every", "0", "--log-every", "10", "--overwrite"]
        seconds += cli(argv, run.with_suffix(".ssl.log"))
        init = ["--image-init", str(ssl / "final")]
        extra = extra.replace(SHUFFLE, "")  # the saved tower brings its architecture and size
    argv = ["train", "--task", "image-text", "--train", sources, "--out", str(run), "--max-steps", str(steps)]
    argv += [*LIT.split(), *extra.split(), *init, "--eval-every", "0", "--overwrite"]
    log = run.with_suffix(".log")
    run.parent.mkdir(parents=True, exist_ok=True)
    seconds += cli(argv, log)
    row = {"row": name, "sets": sets, "steps": steps, "minutes": seconds / 60, "samples_per_s": samples_per_s(log)}
    row["args"] = " ".join([*extra.split(), *(["(SimCLR init)"] if init else [])])
    done.write_text(json.dumps(row, indent=2) + "\n")
    return evaluated(run, data)


def evaluated(run: Path, data: Path) -> dict:
    """The row with its scores on both test sets (computed once, kept in its row.json)."""
    row = json.loads((run / "row.json").read_text())
    if "seen_words" not in row:
        from mmssl.models import DualEncoder
        from mmssl.recipes.image_text import RECIPE

        model = DualEncoder.from_pretrained(run / "final")
        for key, folder in (("unseen_words", "emoji-unseen"), ("seen_words", "emoji-seen-words")):
            scores = RECIPE.evaluate(model, RECIPE.load_pairs(str(data / folder), "test"))
            row[key] = {k: v for k, v in scores.items() if "recall@" in k or k in ("n", "captions")}
        (run / "row.json").write_text(json.dumps(row, indent=2) + "\n")
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench-image-recipes")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--print-only", action="store_true", help="reprint the table of the last run's results.json")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.print_only:
        data = make_data(out)
        rows = []
        for name in args.rows.split(","):
            rows.append(train(out, data, name))
            print(json.dumps(rows[-1]), flush=True)
        stamp = {"date": f"{datetime.now(UTC):%Y-%m-%d}", "cpu": f"{cpu_name()}, {os.cpu_count()} cores"}
        (out / "results.json").write_text(json.dumps({**stamp, "rows": rows}, indent=2) + "\n")
    saved = json.loads((out / "results.json").read_text())
    first = saved["rows"][0]
    print(f"\n{saved['date']}, {saved['cpu']}")
    for key, what in (("unseen_words", "keywords no training caption uses"), ("seen_words", "today's rule")):
        n, captions = first[key]["n"], first[key]["captions"]
        print(f"\ntest: {n} emoji never seen in training, {captions} queries: {what}")
        print(
            "| row | data | steps | train min | samples/s | T->I R@1 / R@5 / R@10 | I->T R@1 / R@5 / R@10 | arguments |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in saved["rows"]:
            t2i = " / ".join(f"{r[key][f'text_to_image_recall@{k}']:.3f}" for k in (1, 5, 10))
            i2t = " / ".join(f"{r[key][f'image_to_text_recall@{k}']:.3f}" for k in (1, 5, 10))
            rate = f"{r['samples_per_s']:.0f}" if r["samples_per_s"] else "-"
            head = f"| {r['row']} | {r['sets']} | {r['steps']} | {r['minutes']:.1f} | {rate}"
            print(f"{head} | {t2i} | {i2t} | `{r['args']}` |")


if __name__ == "__main__":
    main()
