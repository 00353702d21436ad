"""LiT training speed with the locked text tower's caption embeddings cached vs recomputed each step.

What it measures (issue #7's LiT recipe): samples/s of the same image-text task, an mmssl-vit-tiny
image tower against the locked MiniLM text tower on the emoji set (batch 128, fp32, heavy
augmentation), trained with `ContrastiveTask(cache_locked=True)` (the default: MiniLM embeds every
training caption once, up front) and with `cache_locked=False` (MiniLM runs on each batch's
captions, as a trainer without the cache does). The two take turns, `--repeats` times; each run is
`--steps` optimizer steps after 5 warm-up steps. The losses agree to float noise (tested in
tests/test_image_text.py); this measures the time.

Command (from the repo root):
    .venv/bin/python benchmarks/bench_lit_cache.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

from mmssl.runtime import cpu_name  # noqa: E402


def run(data: str, cached: bool, steps: int) -> float:
    from mmssl.engine import Trainer
    from mmssl.recipes.config import TrainConfig
    from mmssl.recipes.contrastive import ContrastiveTask
    from mmssl.recipes.image_text import RECIPE as IMAGE_TEXT

    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig.from_flat(
            task="image-text",
            train=data,
            out=out,
            image_model="mmssl-vit-tiny",
            text_init="minilm",
            lock_text=True,
            augment="heavy",
            batch_size=128,
            max_steps=steps + 5,
            device="cpu",
            valid_partition="none",
        )
        torch.manual_seed(0)
        task = IMAGE_TEXT.build_task(config, torch.device("cpu"))
        if not cached:
            task = ContrastiveTask(task.model, task.loss, task.data, metric=task.metric, cache_locked=False)
        trainer = Trainer(task, config.engine, torch.device("cpu"))
        task.model.train()
        for _ in range(5):
            trainer.train_step()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        return steps * config.batch_size / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="runs/bench-image-text/data/emoji")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if not Path(args.data, "metadata.jsonl").is_file():
        from mmssl import cli

        cli.main(["data", "make-images", "--kind", "emoji", "--out", args.data])
    rates: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):
        for cached in (False, True):
            rates[cached].append(run(args.data, cached, args.steps))
            print(f"cached={cached}: {rates[cached][-1]:.1f} samples/s", flush=True)
    print(f"\n{datetime.now(UTC):%Y-%m-%d}, {cpu_name()}, {os.cpu_count()} cores; batch 128, fp32, {args.steps} steps")
    print("| caption embeddings | samples/s (median) | runs |")
    print("|---|---|---|")
    for cached, label in ((False, "MiniLM on every batch"), (True, "cached once (default)")):
        print(f"| {label} | {statistics.median(rates[cached]):.1f} | {', '.join(f'{r:.1f}' for r in rates[cached])} |")
    print(f"\nspeed-up: {statistics.median(rates[True]) / statistics.median(rates[False]):.2f}x")


if __name__ == "__main__":
    main()
