"""Fault injection against the real ``mmssl`` commands: kills, races, bad values, damaged files.

What it is for: checking, end to end, the promises the code makes about failures: checkpoints and
index versions are written atomically and resume or retry exactly; writers of one index exclude
each other without losing items; every bad option value and every damaged file a command reads is
refused in one line naming it, with nothing changed; a huge record does not blow up a run. Each
case runs the commands themselves (``mmssl.cli.main``: see ``fault_runner.Runner`` for how) on tiny
data it makes in a temporary directory (no network), and compares what happened with what should.

Cases (``--only SUBSTRING`` runs those whose name contains it):
    train kill     SIGKILL ``mmssl train --max-steps 16 --save-every 2 --log-every 1`` at a point of
                   its run (``train_points``: early on, after given steps, inside a checkpoint's
                   temporary, before its swap, while best/ and final/ are written); the checkpoint
                   left must read back (state and model); then ``--resume`` (``--overwrite`` when no
                   checkpoint was written yet) to the end: its metrics.jsonl losses equal an
                   uninterrupted run's exactly (same seed), no ``.*.tmp`` / ``.*.old-PID`` left.
    build kill     SIGKILL ``mmssl index build`` (``build_points``: loading, embedding shard by
                   shard, each file of the temporary index, before and after the swap), building a
                   new index or (every other point) rebuilding over an old one (``--overwrite``):
                   what is at OUT after the kill is nothing, the old index byte for byte, or the new
                   one complete; the same command again (``--overwrite`` where an index is there)
                   gives a complete index (loads with every sha256 checked) with the uninterrupted
                   build's search results, and no temporaries.
    add kill       SIGKILL ``mmssl index add`` (``add_points``): the index is the old version or the
                   new one; the same add again leaves exactly old + new items (no duplicates),
                   manifest, FAISS ids and SQLite rows agreeing, and no temporaries.
    concurrent add two ``mmssl index add`` of different records on one 20,000-item index, the second
                   started so that it asks for the write lock while the first holds it (and once
                   after the first is done): each succeeds or fails with "being written by PID", not
                   both fail, and the final count is the old one plus the successful adds'.
    values         every bad value of every numeric option of every command (``cli.COMMANDS`` x
                   ``mmssl.checks.RANGES``): just past each end of the range, NaN and inf (floats),
                   and values of the wrong type (a fraction, a word): exit 2, one ``mmssl CMD:
                   error:`` line naming the option, no traceback, nothing written (one row per
                   command, and one for the wrong types of all commands).
    corrupt        damaged files of every kind the project reads (model dirs, checkpoints,
                   metrics.jsonl, corpora, config files, index dirs, negatives tables, image sets):
                   a one-line error naming the file (exit 2), no traceback, every file as it was;
                   a torn last metrics line resumes, a truncated PNG is skipped and counted.
    large record   a 50 MB record in a training corpus: a 2-step ``mmssl train`` finishes within 2x
                   the wall time and 2x the peak RSS of the same run without it (fresh processes).

Kill points are events on disk (a file appearing or being replaced, a number of metrics lines) the
script polls for every 2 ms, plus a few times after the start, so that where a kill lands does not
drift with the machine's load; each row says where it was aimed and when it came ("not reached":
the run ended first). There are 20 per kind, 5 concurrent trials (``--quick``: 4 points, 2
trials). Commands run in forked children of this process (``fault_runner.Runner``: it imports torch
and the commands once); full mode also kills 2 points per kind in real ``python -m mmssl.cli``
processes ("spawned" rows), and ``--runner spawn`` runs everything that way (slow). Rows reflect
what was observed; the exit status is 0 only if every row is ok.

The cases are in ``fault_kills.py`` (kills, two writers), ``fault_inputs.py`` (values, the large
record) and ``fault_damage.py`` (damaged files); the data and reference runs they share are in
``fault_world.py``, the runner in ``fault_runner.py``, and the checks, disk probes and tiny data in
``fault_cases.py``.

Commands (from the repository root; on 2 busy cores full mode takes about 6-10 minutes, ``--quick``
about 2):

    .venv/bin/python benchmarks/faults.py [--quick] [--only SUBSTRING] [--out FILE] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_cases import Row, markdown_table  # noqa: E402
from fault_damage import corrupt_files  # noqa: E402
from fault_inputs import bad_option_values, large_record  # noqa: E402
from fault_kills import add_kill, build_kill, concurrent_add, train_kill  # noqa: E402
from fault_runner import Runner  # noqa: E402
from fault_world import World  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 kill points per kind (default: 20)")
    parser.add_argument("--only", default=None, help="run only the cases whose name contains this")
    parser.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    parser.add_argument("--runner", choices=["fork", "spawn"], default="fork", help="how commands run (fault_runner)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (printed)")
    args = parser.parse_args(argv)
    points = 4 if args.quick else 20
    trials = 2 if args.quick else 5

    def want(name: str) -> bool:
        return args.only is None or args.only in name

    root = Path(tempfile.mkdtemp(prefix="mmssl-faults."))
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.0f}s] {text}", file=sys.stderr)

    rows: list[Row] = []
    try:
        runner = Runner(args.runner, workdir=root)
        world = World(root, runner)
        kinds = [
            ("values", lambda: bad_option_values(world, want)),
            ("corrupt", lambda: corrupt_files(world, want)),
            ("train kill", lambda: train_kill(world, points, want)),
            ("build kill", lambda: build_kill(world, points, want)),
            ("add kill", lambda: add_kill(world, points, want)),
            ("concurrent add", lambda: concurrent_add(world, trials, want)),
            ("large record", lambda: large_record(world, want)),
        ]
        if args.runner == "fork" and (not args.quick or "spawned" in (args.only or "")):  # on real processes
            spawned = [train_kill, build_kill, add_kill]
            kinds.append(("spawned kills", lambda: [r for f in spawned for r in f(world, points, want, "spawn")]))
        for kind, run in kinds:
            t0 = time.monotonic()
            try:
                got = run()
            except Exception as e:  # a case that cannot run is a failed row, not a lost table
                got = [Row(kind, "the case runs", f"{type(e).__name__}: {e}"[:300], False)]
            for row in got:
                say(f"{'ok  ' if row.ok else 'FAIL'} {row.case}: {row.observed[:150]}")
            if got:
                say(f"{kind}: {len(got)} rows in {time.monotonic() - t0:.0f}s")
            rows += got
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    table = markdown_table(rows)
    failed = [r for r in rows if not r.ok]
    mode = "quick" if args.quick else "full"
    summary = f"{len(rows) - len(failed)}/{len(rows)} ok in {time.monotonic() - started:.0f}s ({mode}, {args.runner})"
    print(table)
    print(f"\n{summary}")
    if args.out:
        Path(args.out).write_text(f"{table}\n\n{summary}\n")
    return 0 if rows and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
