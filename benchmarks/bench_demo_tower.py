"""The demo's emoji image tower, trained as `make demo` trains it, with and without one change.

What it measures (issue #23): each variant below trains the demo's image tower exactly as
``demo.default.image_model`` does (``IMAGE_TRAIN``, every emoji, ``--image-steps`` steps) under
each seed, then scores it on every emoji of the set, as the demo's indexes are searched in dense
mode (exact cosine, so no index is built):
  - image -> its own name at rank 1, among every emoji's name (the issue's >= 0.90 target);
  - name -> its own image at rank 1, among every emoji's image (>= 0.80);
  - the test split's unseen keywords -> their emoji, recall@10 among every emoji.
Variants (``VARIANTS``), in the same run, taking turns seed by seed:
  demo        ``IMAGE_TRAIN`` as it is
  random      ... with random batches (``--cluster-batches 0``): the peer of the grouped batches
  groups-32   ... with groups of about 32 similar names instead of 8
  name-p75    ... with the name drawn as the caption 3 times in 4 (not half the time)
  name-p90    ... 9 times in 10
  names-only  ... the name every time (no keyword captions)

Command (from the repo root; the emoji set is made in --out when missing; about 4 minutes a row
on 2 cores):
    .venv/bin/python benchmarks/bench_demo_tower.py [--variants demo,random] [--seeds 0,1] [--steps 600]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from demo.default import IMAGE_STEPS, IMAGE_TRAIN, IMAGE_WARMUP, emoji_data  # noqa: E402
from mmssl import cli  # noqa: E402
from mmssl.runtime import cpu_name  # noqa: E402


def with_option(argv: list[str], option: str, value: str) -> list[str]:
    """``argv`` with ``option``'s value replaced (or the option added)."""
    out = list(argv)
    if option in out:
        out[out.index(option) + 1] = value
    else:
        out += [option, value]
    return out


VARIANTS = {
    "demo": IMAGE_TRAIN,
    "random": with_option(IMAGE_TRAIN, "--cluster-batches", "0"),
    "groups-32": with_option(IMAGE_TRAIN, "--cluster-batches", "32"),
    "name-p75": with_option(IMAGE_TRAIN, "--first-caption-p", "0.75"),
    "name-p90": with_option(IMAGE_TRAIN, "--first-caption-p", "0.9"),
    "names-only": with_option(IMAGE_TRAIN, "--first-caption-p", "1"),
}


def score(model_dir: Path, data: Path) -> dict:
    import torch

    from mmssl.data.image_text import read_image_text
    from mmssl.models import DualEncoder

    rows = [json.loads(line) for line in (data / "metadata.jsonl").read_text().splitlines()]
    paths = [str((data / r["file_name"]).resolve()) for r in rows]
    model = DualEncoder.from_pretrained(model_dir)
    images, names = model.embed("image", paths), model.embed("text", [r["name"] for r in rows])
    sims, own = images @ names.T, torch.arange(len(rows))  # (N, N): image i against name j
    test = list(read_image_text(data, split="test"))
    at = {p: i for i, p in enumerate(paths)}
    right = torch.tensor([at[str(Path(r.image).resolve())] for r in test])
    top = (model.embed("text", [r.text for r in test]) @ images.T).topk(10, dim=1).indices
    return {
        "image_to_name_rank1": round((sims.argmax(1) == own).float().mean().item(), 4),
        "name_to_image_rank1": round((sims.argmax(0) == own).float().mean().item(), 4),
        "unseen_keywords_recall@10": round((top == right[:, None]).any(1).float().mean().item(), 4),
        "n": {"emoji": len(rows), "test_queries": len(test)},
    }


def train(variant: str, seed: int, steps: int, data: Path, out: Path) -> float:
    argv = ["train", "--task", "image-text", "--train", str(data), "--out", str(out), "--train-partition", ""]
    argv += ["--valid-partition", "test", *VARIANTS[variant], "--max-steps", str(steps), "--seed", str(seed)]
    argv += ["--warmup-steps", str(IMAGE_WARMUP), "--eval-every", "0", "--save-every", "0", "--log-every", "100"]
    start = time.monotonic()
    if cli.main([*argv, "--overwrite"]):
        raise SystemExit(f"training {variant} (seed {seed}) failed")
    return time.monotonic() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="demo,random")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--steps", type=int, default=IMAGE_STEPS)
    p.add_argument("--out", default="runs/bench-demo-tower")
    args = p.parse_args()
    out = Path(args.out)
    data = emoji_data(out / "emoji")
    if data is None:
        raise SystemExit("the emoji set needs fonts-noto-color-emoji, unicode-cldr-core and unicode-data")
    variants, seeds = args.variants.split(","), [int(s) for s in args.seeds.split(",")]
    rows = []
    for seed in seeds:
        for variant in variants if seed % 2 == 0 else variants[::-1]:  # taking turns
            run = out / f"{variant}-seed{seed}"
            seconds = train(variant, seed, args.steps, data, run)
            rows.append({"variant": variant, "seed": seed, "train_s": round(seconds, 1), **score(run / "final", data)})
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "date": f"{datetime.now(UTC):%Y-%m-%d}", "cpu": f"{cpu_name()}, {os.cpu_count()} cores",
        "steps": args.steps, "variants": {v: VARIANTS[v] for v in variants}, "rows": rows,
    }  # fmt: skip
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    keys = ("image_to_name_rank1", "name_to_image_rank1", "unseen_keywords_recall@10")
    print(f"\n| variant | seed | {' | '.join(keys)} | train s |\n|---|---|{'---|' * len(keys)}---|")
    for r in sorted(rows, key=lambda r: (r["variant"], r["seed"])):
        print(f"| {r['variant']} | {r['seed']} | {' | '.join(f'{r[k]:.3f}' for k in keys)} | {r['train_s']:.0f} |")
    by = {(r["variant"], r["seed"]): r for r in rows}
    for v in variants[1:]:
        for k in keys:
            diffs = [by[variants[0], s][k] - by[v, s][k] for s in seeds]
            print(f"{variants[0]} - {v}, {k}: paired differences {', '.join(f'{d:+.3f}' for d in diffs)}")


if __name__ == "__main__":
    main()
