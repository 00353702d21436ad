"""Matryoshka training against plain training: test MRR at each prefix size (issue #27, part a).

    .venv/bin/python benchmarks/bench_matryoshka.py --corpus runs/demo/corpus.jsonl.gz [--steps 400]
    .venv/bin/python benchmarks/bench_matryoshka.py --corpus runs/demo/corpus.jsonl.gz --recipe minilm --steps 150
    .venv/bin/python benchmarks/bench_matryoshka.py ... --rows plain,matryoshka-pca,start,start-pca

Models of one recipe, the same seed, data and steps, one after the other (``--rows``): ``plain``
(no ``--matryoshka``: the peer), ``matryoshka`` (``--matryoshka DIMS``), ``matryoshka-pca`` (the same
from the tower's principal axes, ``--matryoshka-init pca``; ``matryoshka-pca-small``: with the
weights 1,1,2,4, largest size first), and untrained (0 steps) ``start`` and
``start-pca``: what the prefixes of the initial model keep, as it is and turned to its principal
axes. Each is scored by ``mmssl eval --dims DIMS`` on the same 5,000 test pairs (the CodeSearchNet
protocol: chunks of 1,000, seed 0). Recipes: ``nbow``, the demo's
from-scratch NBoW tower (shared, 256 dims: ``demo.default.MODELS["scratch"]``), dims 256,128,64,32;
``minilm``, all-MiniLM-L6-v2 fine-tuned as a shared tower (issue #3's recipe, shorter inputs),
dims 384,256,128,64. Prints a table and writes ``benchmarks/results/matryoshka[-RECIPE]-DATE.json``.
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

RECIPES = {
    "nbow": (
        (256, 128, 64, 32),
        "--preset nbow --shared --batch-size 256 --lr 3e-3 --max-code-length 192 --max-text-length 48 "
        "--vocab-size 16000 --warmup-steps 20 --embed-dim 256 --precision fp32 --eval-every 0 --device cpu",
    ),
    # Issue #3's MiniLM fine-tune (dropout off, fp32: bf16 is emulated on AVX2) with 128 code tokens,
    # which roughly doubles its samples/s on 2 cores.
    "minilm": (
        (384, 256, 128, 64),
        "--text-init minilm --shared --batch-size 32 --lr 3e-5 --max-code-length 128 --max-text-length 48 "
        "--weight-decay 0.01 --dropout 0 --warmup-steps 10 --precision fp32 --eval-every 0 --device cpu",
    ),
}


ROWS = {  # name -> (trained: the --steps or 0, --matryoshka, --matryoshka-init pca, --matryoshka-weights)
    "plain": (True, False, False, None),
    "matryoshka": (True, True, False, None),
    "matryoshka-pca": (True, True, True, None),
    "matryoshka-pca-small": (True, True, True, "1,1,2,4"),  # the smaller prefixes weigh more
    "start": (False, False, False, None),
    "start-pca": (False, True, True, None),
}


def train(corpus: str, out: Path, steps: int, recipe: str, row: str) -> tuple[Path, float]:
    dims, flags = RECIPES[recipe]
    trained, matryoshka, pca, weights = ROWS[row]
    steps = steps if trained else 0
    argv = ["train", "--train", corpus, "--out", str(out), "--max-steps", str(steps), "--seed", "0", *flags.split()]
    argv += ["--matryoshka", ",".join(map(str, dims))] if matryoshka else []
    argv += ["--matryoshka-init", "pca" if pca else "none"] if matryoshka else []
    argv += ["--matryoshka-weights", weights] if weights else []
    argv.append("--overwrite")
    start = time.monotonic()
    assert cli.main(argv) == 0
    return out / "final", time.monotonic() - start


def score(model: Path, corpus: str, pairs: int, dims: tuple[int, ...]) -> dict[int, float]:
    buffer = io.StringIO()
    argv = ["eval", "--model", str(model), "--data", corpus, "--partition", "test", "--max-pairs", str(pairs)]
    with contextlib.redirect_stdout(buffer):
        assert cli.main([*argv, "--dims", ",".join(map(str, dims)), "--json", "--device", "cpu"]) == 0
    result = json.loads(buffer.getvalue())
    out = {dims[0]: result["mrr"]}
    out |= {int(k.split("@")[1]): v["mrr"] for k, v in result["baselines"].items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="nbow")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--out", default="runs/bench-matryoshka")
    parser.add_argument("--rows", default="plain,matryoshka", help=f"comma list of {', '.join(ROWS)}")
    args = parser.parse_args()
    names = args.rows.split(",")
    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        parser.error(f"--rows: unknown row {unknown[0]!r} (rows: {', '.join(ROWS)})")
    root = Path(args.out) / args.recipe
    dims = RECIPES[args.recipe][0]
    rows = {}
    for name in names:
        model, seconds = train(args.corpus, root / name, args.steps, args.recipe, name)
        rows[name] = {"train_seconds": round(seconds, 1), "mrr": score(model, args.corpus, args.pairs, dims)}
    print("\nMRR at each size (its own full size = 100 %); difference: against plain at the same size")
    print(f"{'row':>16} " + " ".join(f"{d:>16}" for d in dims))
    for name, row in rows.items():
        mrr, full = row["mrr"], row["mrr"][dims[0]]
        cells = [f"{mrr[d]:.4f} {mrr[d] / full:6.1%}" for d in dims]
        print(f"{name:>16} " + " ".join(f"{c:>16}" for c in cells))
        if "plain" in rows and name != "plain":
            diffs = [f"{mrr[d] - rows['plain']['mrr'][d]:+.4f}" for d in dims]
            print(f"{'  vs plain':>16} " + " ".join(f"{c:>16}" for c in diffs))
    for name, row in rows.items():
        steps = args.steps if ROWS[name][0] else 0
        print(f"{name}: {steps} steps, {row['train_seconds']:.0f} s (training and saving)")
    record = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}",
        "command": f"benchmarks/bench_matryoshka.py --corpus {args.corpus} --recipe {args.recipe} "
        f"--steps {args.steps} --pairs {args.pairs} --rows {args.rows}",
        "recipe": RECIPES[args.recipe][1].split(),
        "dims": dims,
        "rows": rows,
    }
    suffix = "" if args.recipe == "nbow" else f"-{args.recipe}"
    path = Path("benchmarks/results") / f"matryoshka{suffix}-{record['date']}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
