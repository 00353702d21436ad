"""Mining speed per file: the labeled miner (``mine_python``) against the unlabeled one
(``mine_unlabeled``, which runs the labeled rules too, to draw the same partitions), on the same
source trees, in one process each (``workers=1``), taking turns.

    .venv/bin/python benchmarks/bench_mine.py [--rounds 3] [ROOT ...]   (default: the standard library)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import sysconfig
import time

from mmssl.data.mine import mine_python, mine_unlabeled


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="*", default=[sysconfig.get_paths()["stdlib"]])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    times: dict[str, list[float]] = {"labeled": [], "unlabeled": []}
    counts = {}
    for _ in range(args.rounds):
        for name, mine in (("labeled", mine_python), ("unlabeled", mine_unlabeled)):
            start = time.perf_counter()
            records, stats = mine(args.roots, workers=1)
            times[name].append(time.perf_counter() - start)
            files = (stats.labeled if name == "unlabeled" else stats).files_parsed
            counts[name] = (files, len(records))
    print(f"{'miner':<10} {'files':>6} {'records':>8} {'best s':>7} {'median s':>9} {'files/s':>8} {'records/s':>10}")
    for name, values in times.items():
        files, records = counts[name]
        best = min(values)
        print(f"{name:<10} {files:>6} {records:>8} {best:7.2f} {statistics.median(values):9.2f} "
              f"{files / best:8.1f} {records / best:10.1f}")  # fmt: skip
    ratio = min(times["unlabeled"]) / min(times["labeled"])
    print(f"unlabeled / labeled time per file: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
