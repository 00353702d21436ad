"""Fixed-seed parity of the training paths across a code change: four 20-step runs (text-code from
scratch, image-text LiT against MiniLM, MLM pretraining, BYOL image SSL) whose metrics.jsonl losses
and validation values must be the same before and after a restructuring.

    .venv/bin/python benchmarks/parity.py --out runs/parity-new                     # this tree
    git worktree add /tmp/old REV
    .venv/bin/python benchmarks/parity.py --tree /tmp/old --out runs/parity-old     # another tree
    .venv/bin/python benchmarks/parity.py --compare runs/parity-old runs/parity-new

``--tree`` runs another checkout's code with this environment (PYTHONPATH): the commands and their
flags are the same in both. The compare prints one row per run: records, identical or the first
difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = "--max-steps 20 --log-every 1 --eval-every 10 --save-every 10 --device cpu --seed 0 --warmup-steps 3"
RUNS = {
    "textcode": "train --train {corpus} --preset tiny --vocab-size 300 --batch-size 32 --embed-dim 16 --lr 2e-3",
    "lit": "train --task image-text --train {shapes} --text-init minilm --lock-text --valid-partition test "
    "--image-model mmssl-vit-micro --batch-size 32",
    "mlm": "pretrain mlm --data {corpus} --preset tiny --vocab-size 300 --block-size 64 --batch-size 16",
    "byol": "pretrain byol --data {shapes} --valid-partition test --image-model mmssl-vit-micro --batch-size 32",
}
KEYS = ("loss", "valid_loss", "mrr", "mean_recall", "perplexity")
sys.path.insert(0, str(ROOT))
from tests.conftest import make_code_corpus  # noqa: E402  (the test suite's synthetic corpus)


def run_all(tree: Path, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    mmssl = [sys.executable, "-m", "mmssl.cli"]
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    corpus, shapes = data / "corpus.jsonl.gz", data / "shapes"
    make_code_corpus(corpus)
    if not shapes.exists():
        argv = ["data", "make-images", "--kind", "shapes", "--out", str(shapes), "--count", "500", "--size", "32"]
        subprocess.run([*mmssl, *argv], check=True, env=env, cwd=tree)
    for name, args in RUNS.items():
        argv = args.format(corpus=corpus, shapes=shapes).split() + COMMON.split() + ["--out", str(out / name)]
        with (out / f"{name}.log").open("w") as log:
            subprocess.run([*mmssl, *argv], check=True, env=env, cwd=tree, stdout=log, stderr=subprocess.STDOUT)
        print(f"{name}: done", flush=True)


def records(path: Path) -> list[tuple]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [(r["step"], *(r.get(k) for k in KEYS)) for r in rows]


def compare(a: Path, b: Path) -> int:
    ok = True
    print(f"{'run':<10} {'records':>7}  result")
    for name in RUNS:
        ra, rb = records(a / name / "metrics.jsonl"), records(b / name / "metrics.jsonl")
        diff = next(((x, y) for x, y in zip(ra, rb) if x != y), None)
        same = diff is None and len(ra) == len(rb)
        ok &= same
        print(f"{name:<10} {len(ra):>7}  {'identical' if same else f'DIFFER: {diff}'}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", default=str(ROOT), help="checkout whose code runs (default: this one)")
    parser.add_argument("--out", help="output folder of the four runs")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two output folders")
    args = parser.parse_args()
    if args.compare:
        return compare(Path(args.compare[0]), Path(args.compare[1]))
    if not args.out:
        parser.error("--out or --compare is required")
    run_all(Path(args.tree).resolve(), Path(args.out).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
