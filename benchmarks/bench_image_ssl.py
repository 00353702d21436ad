"""Self-supervised image pretraining (issue #9): each method's tower next to a random one.

What it measures, per offline image set (``--sets``: shapes, digits, emoji; made by `mmssl data
make-images` when missing) and per initialization of the same open_clip tower (``--image-model``):
  random       the untrained tower (seed 0), the control
  <method>     `mmssl pretrain <method>` for ``--pretrain-minutes`` of this machine's CPU (the same
               budget for every method; the steps it reached are reported), its final tower
then
  - frozen features (the tower's output before normalization, open_clip's eval preprocessing) of the
    train and test splits: linear-probe accuracy (logistic regression, C picked on a fifth of train:
    `mmssl.recipes.image_text_eval.probe`) and k-NN accuracy (scikit-learn, k=20, cosine, distance-weighted)
    on the set's class tasks (shapes: left/right colour and shape; digits: the digit; emoji: the
    Unicode group), averaged over the set's tasks (each task in results.json);
  - image-text: `mmssl train --task image-text --image-init <tower>` (random: the plain config) for
    ``--train-steps`` steps, the same for every init, then recall@10 text->image and image->text
    on the test split;
  - the collapse metrics the pretraining logged last (effective rank, per-dimension std).

Seeds (``--seeds 0,1,2``): each seed pretrains, builds the random control and trains image-text
with that seed. ``OUT/results.json`` accumulates: a later run with other seeds (or sets) adds its rows
to those already there (a row of the same set, init and seed is replaced), and the table shows every
row's set and init as mean +- standard deviation over the seeds measured.

Command (from the repo root; about 40 minutes per set and seed at the defaults on 2 cores, and the
machine must be otherwise idle: the pretraining budget is wall-clock):
    .venv/bin/python benchmarks/bench_image_ssl.py [--sets shapes,digits,emoji] [--seeds 0] [--pretrain-minutes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmssl.io import atomic_file  # noqa: E402
from mmssl.pretrain.image_ssl import METHODS, tower_features  # noqa: E402
from mmssl.runtime import cpu_name  # noqa: E402


def cli(*argv: str) -> None:
    cmd = [sys.executable, "-m", "mmssl.cli", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed:\n{proc.stderr[-3000:]}")


def last_logged(metrics: Path) -> dict:
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    return train[-1] if train else {}


def tower_for(init: str | None, model: str, seed: int):
    from mmssl.models.image import ImageTower, ImageTowerConfig

    torch.manual_seed(seed)
    if init is None:
        return ImageTower.build(ImageTowerConfig(model=model)).eval()
    return ImageTower.build(ImageTowerConfig(model=f"local-dir:{init}", weights=init)).eval()


def frozen_scores(tower, data: str) -> dict:
    from sklearn.neighbors import KNeighborsClassifier

    from mmssl.recipes.image_pairs import load_image_pairs
    from mmssl.recipes.image_text_eval import _labels, class_tasks, probe

    train, test = load_image_pairs(data, "train"), load_image_pairs(data, "test")
    xtr, xte = tower_features(tower, train.candidates), tower_features(tower, test.candidates)
    out = {}
    for task in class_tasks([r.meta for r in test.candidates]):
        tri, ytr = _labels(task, train)
        tei, yte = _labels(task, test)
        knn = KNeighborsClassifier(n_neighbors=20, metric="cosine", weights="distance").fit(xtr[tri], ytr)
        out[task.name] = {
            "probe": probe(xtr[tri], ytr, xte[tei], yte),
            "knn": float((knn.predict(xte[tei]) == yte).mean()),
        }
    return out


def image_text_recall(data: str, init: str | None, out: Path, args, seed: int) -> dict:
    from mmssl.models import DualEncoder
    from mmssl.recipes.image_pairs import load_image_pairs
    from mmssl.recipes.image_text import RECIPE as IMAGE_TEXT

    argv = ["train", "--task", "image-text", "--train", data, "--out", str(out), "--image-model", args.image_model]
    argv += ["--batch-size", str(args.batch_size), "--max-steps", str(args.train_steps), "--warmup-steps", "10"]
    argv += ["--eval-every", "0", "--save-every", "0", "--valid-partition", "test", "--device", "cpu"]
    argv += ["--seed", str(seed)]
    argv += ["--image-init", init] if init else []
    cli(*argv)
    model = DualEncoder.from_pretrained(out / "final")
    scores = IMAGE_TEXT.evaluate(model, load_image_pairs(data, "test"))
    # recall@1 too: with few distinct captions (digits: 10) image->text recall@10 is 1 whatever the model
    return {k: v for k, v in scores.items() if k.endswith(("recall@1", "recall@10"))}


def load_rows(path: Path) -> list[dict]:
    """Rows of an earlier run in the same OUT (those without a seed were seed 0)."""
    if not path.is_file():
        return []
    return [{"seed": 0, **r} for r in json.loads(path.read_text())]


def mean_sd(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def table(rows: list[dict]) -> None:
    """One line per set and init, mean +- sd over its seeds; the last two columns pair each seed with
    the random tower of the same seed (init - random: the seed-to-seed spread of the control cancels)."""
    print("| set | init | seeds | pretrain steps | eff. rank (last step) | k-NN acc | linear probe | R@1 t->i "
          "| R@1 i->t | R@10 t->i | R@10 i->t | probe - random | R@1 i->t - random |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["set"], r["init"]), []).append(r)
    for (name, init), rs in groups.items():
        ranks = [r["eff_rank"] for r in rs if r["eff_rank"] is not None]
        cells = [mean_sd(ranks, 1) if ranks else "-"]
        keys = ("knn", "probe", "text_to_image_recall@1", "image_to_text_recall@1")
        cells += [mean_sd([r[k] for r in rs]) for k in (*keys, "text_to_image_recall@10", "image_to_text_recall@10")]
        control = {r["seed"]: r for r in groups.get((name, "random"), [])}
        for key in ("probe", "image_to_text_recall@1"):
            diffs = [r[key] - control[r["seed"]][key] for r in rs if r["seed"] in control]
            cells.append(f"{'+' if np.mean(diffs) >= 0 else ''}{mean_sd(diffs)}" if diffs and init != "random" else "-")
        steps = mean_sd([r["pretrain_steps"] for r in rs], 0)
        print(f"| {name} | {init} | {','.join(str(r['seed']) for r in rs)} | {steps} | {' | '.join(cells)} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default="shapes")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0", help="comma-separated; each pretrains and trains with its seed")
    p.add_argument("--image-model", default="mmssl-vit-tiny")
    p.add_argument("--pretrain-minutes", type=float, default=2.0)
    p.add_argument("--train-steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", default="runs/bench-image-ssl")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = load_rows(out / "results.json")
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in args.sets.split(","):
            data = Path("runs/data") / name
            if not (data / "metadata.jsonl").is_file():
                cli("data", "make-images", "--kind", name, "--out", str(data))
            for method in ["random", *args.methods.split(",")]:
                start = time.monotonic()
                tag = method if seed == 0 else f"{method}-seed{seed}"
                tower_dir, logged = None, {}
                if method != "random":
                    run = out / name / tag
                    cli(
                        "pretrain", method, "--data", str(data), "--out", str(run), "--image-model",
                        args.image_model, "--batch-size", str(args.batch_size), "--max-steps", "100000",
                        "--max-minutes", str(args.pretrain_minutes), "--warmup-steps", "20", "--valid-partition",
                        "test", "--eval-every", "0", "--save-every", "0", "--log-every", "10", "--device", "cpu",
                        "--clusters", "50", "--seed", str(seed),
                    )  # fmt: skip
                    tower_dir = str(run / "final")
                    logged = last_logged(run / "metrics.jsonl")
                frozen = frozen_scores(tower_for(tower_dir, args.image_model, seed), str(data))
                recall = image_text_recall(str(data), tower_dir, out / name / f"image-text-{tag}", args, seed)
                row = {
                    "set": name,
                    "init": method,
                    "seed": seed,
                    "pretrain_steps": logged.get("step", 0),
                    "eff_rank": logged.get("eff_rank"),
                    "emb_std": logged.get("emb_std"),
                    "probe": float(np.mean([v["probe"] for v in frozen.values()])),
                    "knn": float(np.mean([v["knn"] for v in frozen.values()])),
                    "tasks": frozen,
                    **recall,
                    "seconds": time.monotonic() - start,
                }
                rows = [r for r in rows if (r["set"], r["init"], r["seed"]) != (name, method, seed)] + [row]
                print(json.dumps(row), flush=True)
                with atomic_file(out / "results.json", "w") as f:  # rows of earlier runs are in it too
                    json.dump(rows, f, indent=2)
    stamp = f"{datetime.now(UTC):%Y-%m-%d}, {cpu_name()}, {os.cpu_count()} cores"
    print(
        f"\n{stamp}; {args.image_model}, batch {args.batch_size}, pretraining {args.pretrain_minutes} min per "
        f"method, image-text {args.train_steps} steps from each init; every row of {out / 'results.json'}"
    )
    table(sorted(rows, key=lambda r: (r["set"], r["seed"])))


if __name__ == "__main__":
    main()
