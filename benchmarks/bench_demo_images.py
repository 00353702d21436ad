"""The demo's own emoji indexes, searched as a user would: names, images and "pizza".

What it measures (issue #23), on the indexes `make demo` built (``--out``, default runs/demo):
  - text -> image, dense: each emoji's CLDR name as the query; the share that find their own image
    at rank 1 (all emoji, and the test emoji apart: the demo trains on their images with their
    names alone);
  - image -> text, dense: each emoji's image as the query; the share that find their own name at
    rank 1 among every emoji's name;
  - text -> image in the mode the tab starts in (the index's ``search_defaults``), dense and
    lexical: the test split's queries (keywords no training caption uses, never shown to the
    demo's model), recall@1 and @10 of their emoji;
  - the rank of the pizza emoji for "pizza", dense and in the tab's mode.
The peer, in the same run: the same numbers in lexical (BM25) mode where a mode applies.

Command (after `make demo`, or `mmssl demo default --no_launch`):
    .venv/bin/python benchmarks/bench_demo_images.py [--out runs/demo]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from demo.default import items_by_path  # noqa: E402
from indexing import SearchIndex  # noqa: E402
from mmssl.data.image_text import read_image_text  # noqa: E402
from mmssl.runtime import cpu_name  # noqa: E402


def rank_of(hits, right: int) -> int | None:
    return next((h.rank for h in hits if h.id == right), None)


def share(ranks: list[int | None], at: int) -> float:
    return sum(r is not None and r <= at for r in ranks) / max(len(ranks), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo")
    args = p.parse_args()
    root = Path(args.out) / "emoji"
    rows = [json.loads(line) for line in (root / "data" / "metadata.jsonl").read_text().splitlines()]
    for r in rows:
        r["path"] = str((root / "data" / r["file_name"]).resolve())
    result: dict = {"date": f"{datetime.now(UTC):%Y-%m-%d}", "cpu": f"{cpu_name()}, {os.cpu_count()} cores"}
    with SearchIndex.load(root / "image-index") as images, SearchIndex.load(root / "caption-index") as captions:
        at = items_by_path(images)
        chosen = images.manifest.search_defaults
        mode, weight = chosen.get("mode", "dense"), chosen.get("lexical_weight", 1.0)
        result["default_mode"] = {"mode": mode, "lexical_weight": weight}
        names = [r["name"] for r in rows]
        for m in ("dense", "lexical"):
            hits = images.search(names, k=10, mode=m)
            ranks = [rank_of(h, at[r["path"]]) for h, r in zip(hits, rows)]
            test = [rk for rk, r in zip(ranks, rows) if r["split"] == "test"]
            result[f"name_to_image_{m}"] = {"rank1": share(ranks, 1), "rank1_test_emoji": share(test, 1)}
        caption_at = items_by_path(captions)  # a caption item's payload path is its emoji's image
        hits = captions.search([r["path"] for r in rows], k=10, mode="dense")
        ranks = [rank_of(h, caption_at[r["path"]]) for h, r in zip(hits, rows)]
        result["image_to_name_dense"] = {"rank1": share(ranks, 1), "rank10": share(ranks, 10), "n": len(rows)}
        test = [(r.text, at[str(Path(r.image).resolve())]) for r in read_image_text(root / "data", split="test")]
        for label, m, w in (("default", mode, weight), ("dense", "dense", 1.0), ("lexical", "lexical", 1.0)):
            hits = images.search([q for q, _ in test], k=10, mode=m, lexical_weight=w)
            ranks = [rank_of(h, i) for h, (_, i) in zip(hits, test)]
            result[f"test_queries_{label}"] = {"recall@1": share(ranks, 1), "recall@10": share(ranks, 10)}
        pizza = next(r for r in rows if r["name"] == "pizza")
        for label, m, w in (("default", mode, weight), ("dense", "dense", 1.0)):
            hits = images.search(["pizza"], k=20, mode=m, lexical_weight=w)[0]
            result[f"pizza_rank_{label}"] = rank_of(hits, at[pizza["path"]])
        result["n"] = {"emoji": len(rows), "test_queries": len(test)}
    print(json.dumps(result, indent=1))
    (Path(args.out) / "bench_demo_images.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
