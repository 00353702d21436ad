"""Matryoshka training against plain training: test MRR at each prefix size (issue #27, part a).

    .venv/bin/python benchmarks/bench_matryoshka.py --corpus runs/demo/corpus.jsonl.gz [--steps 400]

Two models of one recipe (the demo's from-scratch NBoW tower, shared, 256 dims: the recipe of
``demo.default.MODELS["scratch"]``), the same seed, data and steps, one trained with
``--matryoshka 256,128,64,32`` and one without, one after the other; each scored by ``mmssl eval
--dims 256,128,64,32`` on the same 5,000 test pairs (the CodeSearchNet protocol: chunks of 1,000,
seed 0). Prints a table and writes ``benchmarks/results/matryoshka-DATE.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import platform
import time
from pathlib import Path

from mmssl import cli

DIMS = (256, 128, 64, 32)
RECIPE = (
    "--preset nbow --shared --batch-size 256 --lr 3e-3 --max-code-length 192 --max-text-length 48 "
    "--vocab-size 16000 --warmup-steps 20 --embed-dim 256 --precision fp32 --eval-every 0 --device cpu"
).split()


def train(corpus: str, out: Path, steps: int, matryoshka: bool) -> tuple[Path, float]:
    argv = ["train", "--train", corpus, "--out", str(out), "--max-steps", str(steps), "--seed", "0", *RECIPE]
    argv += ["--matryoshka", ",".join(map(str, DIMS))] if matryoshka else []
    argv.append("--overwrite")
    start = time.monotonic()
    assert cli.main(argv) == 0
    return out / "final", time.monotonic() - start


def score(model: Path, corpus: str, pairs: int) -> dict[int, float]:
    buffer = io.StringIO()
    argv = ["eval", "--model", str(model), "--data", corpus, "--partition", "test", "--max-pairs", str(pairs)]
    with contextlib.redirect_stdout(buffer):
        assert cli.main([*argv, "--dims", ",".join(map(str, DIMS)), "--json", "--device", "cpu"]) == 0
    result = json.loads(buffer.getvalue())
    out = {DIMS[0]: result["mrr"]}
    out |= {int(k.split("@")[1]): v["mrr"] for k, v in result["baselines"].items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--out", default="runs/bench-matryoshka")
    args = parser.parse_args()
    root = Path(args.out)
    rows = {}
    for name, nested in (("plain", False), ("matryoshka", True)):
        model, seconds = train(args.corpus, root / name, args.steps, nested)
        rows[name] = {"train_seconds": round(seconds, 1), "mrr": score(model, args.corpus, args.pairs)}
    print(f"\n{'dims':>6} {'plain':>8} {'matryoshka':>11} {'difference':>11} {'matryoshka / its own full':>26}")
    full = rows["matryoshka"]["mrr"][DIMS[0]]
    for d in DIMS:
        p, m = rows["plain"]["mrr"][d], rows["matryoshka"]["mrr"][d]
        print(f"{d:>6} {p:8.4f} {m:11.4f} {m - p:+11.4f} {m / full:25.1%}")
    for name, row in rows.items():
        print(f"{name}: trained {args.steps} steps in {row['train_seconds']:.0f} s")
    record = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}",
        "command": f"benchmarks/bench_matryoshka.py --corpus {args.corpus} --steps {args.steps} --pairs {args.pairs}",
        "recipe": RECIPE,
        "dims": DIMS,
        "rows": rows,
    }
    path = Path("benchmarks/results") / f"matryoshka-{record['date']}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
