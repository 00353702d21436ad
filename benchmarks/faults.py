"""Fault injection against the real ``mmssl`` commands: kills, races, bad values, damaged files.

What it is for: checking, end to end, the promises the code makes about failures: checkpoints and
index versions are written atomically and resume or retry exactly; writers of one index exclude
each other without losing items; every bad option value and every damaged file a command reads is
refused in one line naming it, with nothing changed; a huge record does not blow up a run. Each
case runs the commands themselves (``mmssl.cli.main``: see ``fault_cases.Runner`` for how) on tiny
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
trials). Commands run in forked children of this process (``fault_cases.Runner``: it imports torch
and the commands once); full mode also kills 2 points per kind in real ``python -m mmssl.cli``
processes ("spawned" rows), and ``--runner spawn`` runs everything that way (slow). Rows reflect
what was observed; the exit status is 0 only if every row is ok.

Commands (from the repository root; on 2 busy cores full mode takes about 6-10 minutes, ``--quick``
about 2):

    .venv/bin/python benchmarks/faults.py [--quick] [--only SUBSTRING] [--out FILE] [--keep]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_cases import (  # noqa: E402
    Kill,
    Outcome,
    Row,
    Runner,
    after_start,
    all_of,
    code_records,
    copy_tree,
    diff_hashes,
    exists,
    fresh,
    lines_at_least,
    markdown_table,
    one_line_error,
    pick,
    probe_checkpoint,
    probe_index,
    sqlite_items,
    temporaries,
    training_losses,
    tree_hashes,
    truncate,
    write_jsonl,
)

TRAIN_STEPS = 16
TINY = ["--preset", "tiny", "--vocab-size", "300", "--batch-size", "32", "--eval-every", "0", "--embed-dim", "16"]
TINY += ["--device", "cpu", "--lr", "2e-3", "--warmup-steps", "3"]
QUERIES = ["parse the file given as input", "save the user record", "sort the list"]
N_COLLECTION, N_OLD, N_NEW = 200, 120, 40
N_BIG = 20_000  # the index two writers race on: the largest that is still exact search (flat)
SKIP_LOCK = (".lock",)  # a writer records its PID in the index's lock file before anything else
SPAWNED_POINTS = [6, 13]  # full mode also kills real ``python -m mmssl.cli`` processes at these points


def train_argv(corpus: Path, out: Path, steps: int = TRAIN_STEPS, *extra: str) -> list[str]:
    return ["train", "--train", str(corpus), "--out", str(out), "--max-steps", str(steps), *TINY, *extra]


class World:
    """The data every case runs on, made on first use under ``root``."""

    def __init__(self, root: Path, runner: Runner) -> None:
        self.root, self.runner = root, runner

    def path(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def fresh(self, name: str) -> Path:
        """An empty directory for one case."""
        p = self.path("cases", name)
        if p.exists():
            shutil.rmtree(p)
        p.mkdir(parents=True)
        return p

    @functools.cached_property
    def corpus(self) -> Path:
        return write_jsonl(code_records(N_COLLECTION), self.path("data", "corpus.jsonl.gz"))

    @functools.cached_property
    def new_records(self) -> Path:
        return write_jsonl(code_records(N_NEW, seed=1, tag="new"), self.path("data", "new.jsonl"))

    @functools.cached_property
    def other_records(self) -> Path:
        return write_jsonl(code_records(N_NEW, seed=2, tag="other"), self.path("data", "other.jsonl"))

    @functools.cached_property
    def train_ref(self) -> tuple[Path, Outcome]:
        """The uninterrupted training run (kill points are spread over its wall time); its final
        model is the model every index is built with."""
        out = self.path("train_ref")
        o = self.runner.run(train_argv(self.corpus, out, TRAIN_STEPS, "--save-every", "2", "--log-every", "1"))
        if o.rc != 0:
            raise RuntimeError(f"the reference training run failed: {o.short()}: {o.tail(3)}")
        return out, o

    @property
    def model(self) -> Path:
        return self.train_ref[0] / "final"

    def build_argv(self, out: Path, *extra: str, data: Path | None = None, shard_size: int = 50) -> list[str]:
        argv = ["index", "build", "--model", str(self.model), "--data", str(data or self.corpus), "--out", str(out)]
        return argv + ["--device", "cpu", "--lexical", "--shard-size", str(shard_size), *extra]

    def search(self, index: Path, verify: bool = True) -> tuple[Outcome, list | None]:
        argv = ["index", "search", "--index", str(index), *[a for q in QUERIES for a in ("--query", q)], "-k", "5"]
        o = self.runner.run(argv + ["--json"] + (["--verify"] if verify else []))
        if o.rc != 0:
            return o, None
        hits = json.loads(o.stdout)
        return o, [[(h["id"], round(h["score"], 5)) for h in q] for q in hits]

    @functools.cached_property
    def index_ref(self) -> tuple[Path, Outcome, list]:
        """An uninterrupted build of the collection, and its search results."""
        out = self.path("index_ref", "idx")
        o = self.runner.run(self.build_argv(out))
        if o.rc != 0:
            raise RuntimeError(f"the reference index build failed: {o.short()}: {o.tail(3)}")
        _, hits = self.search(out)
        if hits is None:
            raise RuntimeError("searching the reference index failed")
        return out, o, hits

    @functools.cached_property
    def big_index(self) -> Path:
        data = write_jsonl(code_records(N_BIG), self.path("data", "big.jsonl.gz"))
        out = self.path("index_big", "idx")
        o = self.runner.run(self.build_argv(out, data=data, shard_size=5000))
        if o.rc != 0:
            raise RuntimeError(f"building the big index failed: {o.short()}: {o.tail(3)}")
        return out

    @functools.cached_property
    def old_index(self) -> Path:
        """An index of another collection (the first N_OLD records), to rebuild over."""
        out = self.path("index_old", "idx")
        o = self.runner.run(self.build_argv(out, "--max-items", str(N_OLD)))
        if o.rc != 0:
            raise RuntimeError(f"building the old index failed: {o.short()}: {o.tail(3)}")
        return out


# ---- kill points: where in a run each one falls (events on disk, so that load does not move them) --------


def at_fraction(f: float, wall: float) -> Kill:
    return after_start(round(f * wall, 3), f"at {f:.0%} of an uninterrupted run's time")


def train_points(out: Path, wall: float) -> list[Kill]:
    """20 points in the life of ``mmssl train --max-steps 16 --save-every 2`` writing to ``out``
    (``wall``: an uninterrupted run's seconds)."""
    metrics = out / "metrics.jsonl"

    def step(n: int, delay: float = 0.0, label: str = "") -> Kill:
        return Kill(
            label or f"step {n} logged" + (f" +{delay * 1000:g}ms" if delay else ""), lines_at_least(metrics, n), delay
        )

    def writing(n: int, pattern: str, label: str) -> Kill:
        return Kill(label, all_of(lines_at_least(metrics, n), exists(out, pattern)))

    return [
        at_fraction(0.1, wall),  # reading the corpus, training the tokenizers, building the model
        Kill("the run directory made", exists(out.parent, out.name)),
        step(1),
        step(2),
        step(3, 0.02),
        step(4),
        writing(4, "checkpoints/.last.*.tmp", "writing checkpoint 4 (its temporary)"),
        writing(4, "checkpoints/.last.*.tmp/trainer_state.pt", "checkpoint 4 written, before its swap"),
        step(5),
        step(6, 0.005),
        step(7, 0.02),
        step(8),
        step(9, 0.05),
        writing(10, "checkpoints/.last.*.tmp", "writing checkpoint 10"),
        step(11, 0.01),
        step(12, 0.01),
        step(16, 0.0, "step 16 logged (validating)"),
        Kill("writing best/", exists(out, ".best.*.tmp")),
        writing(16, "checkpoints/.last.*.tmp", "writing the last checkpoint"),
        Kill("writing final/", exists(out, ".final.*.tmp")),
    ]


def build_points(out: Path, wall: float) -> list[Kill]:
    """20 points in the life of ``mmssl index build --shard-size 50`` of 200 items into ``out``
    (``wall``: an uninterrupted build's seconds)."""
    emb, root, tmp = Path(f"{out}.embeddings"), out.parent, f".{out.name}.*.tmp"
    manifest = fresh(out / "manifest.json")
    return [
        at_fraction(0.2, wall),  # loading the model, reading the collection
        at_fraction(0.45, wall),
        Kill("embeddings spec written", fresh(emb / "embeddings.json")),
        Kill("shard 0 vectors written", fresh(emb / "shard-00000.npy")),
        Kill("shard 0 finished", fresh(emb / "shard-00000.ids.npy")),
        Kill("shard 1 vectors written", fresh(emb / "shard-00001.npy")),
        Kill("shard 2 finished", fresh(emb / "shard-00002.ids.npy")),
        Kill("all shards finished", fresh(emb / "shard-00003.ids.npy")),
        Kill("index temporary made", exists(root, tmp)),
        Kill("index temporary made +5ms", exists(root, tmp), 0.005),
        Kill("temporary index.faiss written", exists(root, f"{tmp}/index.faiss")),
        Kill("temporary meta.sqlite made", exists(root, f"{tmp}/meta.sqlite")),
        Kill("temporary meta.sqlite +10ms", exists(root, f"{tmp}/meta.sqlite"), 0.01),
        Kill("temporary lexical/ made", exists(root, f"{tmp}/lexical")),
        Kill("temporary manifest.json written, before the swap", exists(root, f"{tmp}/manifest.json")),
        Kill("temporary manifest.json +1ms", exists(root, f"{tmp}/manifest.json"), 0.001),
        Kill("temporary manifest.json +3ms", exists(root, f"{tmp}/manifest.json"), 0.003),
        Kill("swapped in", manifest),
        Kill("swapped in +1ms", manifest, 0.001),
        Kill("swapped in +3ms", manifest, 0.003),
    ]


def add_points(idx: Path, wall: float) -> list[Kill]:
    """20 points in the life of ``mmssl index add`` on ``idx`` (``wall``: an uninterrupted add's seconds)."""
    root, tmp = idx.parent, f".{idx.name}.*.tmp"
    lock, manifest = fresh(idx / ".lock"), fresh(idx / "manifest.json")
    return [
        *(at_fraction(f, wall) for f in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)),  # loading, reading, embedding
        Kill("write lock taken", lock),
        Kill("write lock taken +5ms (checking the current version)", lock, 0.005),
        Kill("temporary version made", exists(root, tmp)),
        Kill("temporary version made +2ms", exists(root, tmp), 0.002),
        Kill("temporary index.faiss copied", exists(root, f"{tmp}/index.faiss")),
        Kill("temporary meta.sqlite copied", exists(root, f"{tmp}/meta.sqlite")),
        Kill("items being inserted (meta.sqlite-journal)", exists(root, f"{tmp}/meta.sqlite-journal")),
        Kill("temporary lexical/ made", exists(root, f"{tmp}/lexical")),
        Kill("temporary lexical/ +2ms", exists(root, f"{tmp}/lexical"), 0.002),
        Kill("temporary manifest.json written, before the swap", exists(root, f"{tmp}/manifest.json")),
        Kill("temporary manifest.json +1ms", exists(root, f"{tmp}/manifest.json"), 0.001),
        Kill("swapped in", manifest),
        Kill("swapped in +1ms", manifest, 0.001),
        Kill("swapped in +3ms", manifest, 0.003),
    ]


def kill_note(kill: Kill, o: Outcome) -> str:
    return f"kill {kill.label}: " + (o.short() if o.killed else f"not reached, {o.short()}")


def logged_steps(run: Path) -> int:
    """Training records in ``RUN/metrics.jsonl`` (a torn last line, as a kill leaves it, not counted)."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(line.startswith("{") and line.endswith("}") and '"loss"' in line for line in lines)


def case_dir(world: World, name: str) -> Path:
    return world.fresh(name.split(" (")[0].replace(" ", "_").replace("/", "of"))


# ---- 1. SIGKILL during training, then --resume ---------------------------------------------------------


def train_kill(world: World, n: int, want: Callable[[str], bool], mode: str | None = None) -> list[Row]:
    labels = [k.label for k in train_points(Path("run"), 1.0)]
    chosen = SPAWNED_POINTS if mode == "spawn" else pick(labels, n)
    kind = "train kill" + (" (spawned)" if mode == "spawn" else "")
    names = {i: f"{kind} {j + 1}/{len(chosen)} ({labels[i]})" for j, i in enumerate(chosen)}
    if not any(map(want, names.values())):
        return []
    ref_dir, ref = world.train_ref
    ref_losses = training_losses(ref_dir)
    expected = "checkpoint reads back; resume: losses == uninterrupted run's; no temporaries"
    rows = []
    for i, name in names.items():
        if not want(name):
            continue
        out = case_dir(world, name) / "run"
        kill = train_points(out, ref.wall)[i]
        argv = train_argv(world.corpus, out, TRAIN_STEPS, "--save-every", "2", "--log-every", "1")
        killed = world.runner.run(argv, kill, mode=mode)
        problems, notes = [], [kill_note(kill, killed)]
        logged = logged_steps(out)
        try:
            ckpt = world.runner.call(probe_checkpoint, str(out))
            at = f"step {ckpt['step']}" if ckpt["exists"] else "none"
            notes.append(f"{logged} steps logged, checkpoint {at}")
        except RuntimeError as e:
            ckpt = {"exists": True}
            problems.append(f"checkpoint unreadable: {e}")
        if ckpt["exists"]:
            again, how = argv + ["--resume"], "--resume"
        elif out.exists() and any(out.iterdir()):
            again, how = argv + ["--overwrite"], "--overwrite (no checkpoint yet)"
        else:
            again, how = argv, "rerun (nothing written yet)"
        resumed = world.runner.run(again, mode=mode)
        notes.append(f"{how}: {resumed.short()}")
        if resumed.rc != 0:
            problems.append(f"{how} failed: {resumed.tail(2)}")
        else:
            try:
                losses = training_losses(out)
            except json.JSONDecodeError as e:
                losses = [(-1, f"metrics.jsonl unreadable: {e}")]
            if losses != ref_losses:
                diff = next(
                    (f"step {a[0]}: {a[1]} vs {b[1]}" for a, b in zip(losses, ref_losses) if a != b),
                    f"{len(losses)} records vs {len(ref_losses)}",
                )
                problems.append(f"losses differ ({diff})")
        left = temporaries(out)
        if left:
            problems.append(f"left behind: {', '.join(Path(p).name for p in left[:3])}")
        rows.append(Row(name, expected, "; ".join(problems + notes), not problems))
    return rows


# ---- 2. SIGKILL during index build, then the same command again ---------------------------------------


def index_state(world: World, out: Path, count: int) -> tuple[bool, str]:
    """Whether ``out`` holds a complete index of ``count`` items (loads with every sha256 checked)."""
    try:
        got = world.runner.call(probe_index, str(out))
    except RuntimeError as e:
        return False, f"does not load: {e}"
    if not (got["count"] == got["ntotal"] == got["rows"] == count and got["ids_agree"]):
        return False, f"inconsistent: {got}, expected {count} items"
    return True, f"complete ({count} items)"


def build_kill(world: World, n: int, want: Callable[[str], bool], mode: str | None = None) -> list[Row]:
    """Even points build a new index, odd ones rebuild over an old index (``--overwrite``)."""
    labels = [k.label for k in build_points(Path("idx"), 1.0)]
    chosen = SPAWNED_POINTS if mode == "spawn" else pick(labels, n)
    variant = {i: "over old" if i % 2 else "new" for i in chosen}
    kind = "build kill" + (" (spawned)" if mode == "spawn" else "")
    names = {i: f"{kind} {j + 1}/{len(chosen)} ({variant[i]}: {labels[i]})" for j, i in enumerate(chosen)}
    if not any(map(want, names.values())):
        return []
    _, ref, ref_hits = world.index_ref
    old_hashes = tree_hashes(world.old_index, skip=SKIP_LOCK) if "over old" in variant.values() else {}
    rows = []
    for i, name in names.items():
        if not want(name):
            continue
        over = variant[i] == "over old"
        out = case_dir(world, name) / "idx"
        emb = Path(f"{out}.embeddings")
        if over:  # the old index and its embeddings, as a build over it finds them
            copy_tree(world.old_index, out)
            copy_tree(Path(f"{world.old_index}.embeddings"), emb)
        argv = world.build_argv(out, *(["--overwrite"] if over else []))
        kill = build_points(out, ref.wall)[i]
        killed = world.runner.run(argv, kill, mode=mode)
        problems, notes = [], [kill_note(kill, killed)]
        if (out / "manifest.json").is_file():
            if over and tree_hashes(out, skip=SKIP_LOCK) == old_hashes:
                notes.append("old index intact")
            else:
                complete, what = index_state(world, out, N_COLLECTION)
                notes.append(f"new index {what}")
                if not complete:
                    problems.append(f"after the kill the index {what}")
        elif out.exists():
            problems.append(f"after the kill {out.name} exists without a manifest")
        else:
            notes.append("no index")
            if over:
                problems.append("the old index is gone")
        again = argv if over or not (out / "manifest.json").is_file() else argv + ["--overwrite"]
        rerun = world.runner.run(again, mode=mode)
        notes.append(f"rerun: {rerun.short()}")
        if rerun.rc != 0:
            problems.append(f"rerun failed: {rerun.tail(2)}")
        else:
            complete, what = index_state(world, out, N_COLLECTION)
            if not complete:
                problems.append(f"after the rerun the index {what}")
            _, hits = world.search(out)
            if hits != ref_hits:
                problems.append("search results differ from the uninterrupted build's")
        left = temporaries(out, emb)
        if left:
            problems.append(f"left behind: {', '.join(Path(p).name for p in left[:3])}")
        expected = (
            "after the kill: the old index intact or the new one complete; rerun: complete, same results"
            if over
            else "after the kill: no index or a complete one; rerun: complete, same results"
        ) + ", no temporaries"
        rows.append(Row(name, expected, "; ".join(problems + notes), not problems))
    return rows


# ---- 3. SIGKILL during index add, then the same add again ----------------------------------------------


def add_kill(world: World, n: int, want: Callable[[str], bool], mode: str | None = None) -> list[Row]:
    def argv_of(idx: Path) -> list[str]:
        return ["index", "add", "--index", str(idx), "--data", str(world.new_records)]

    labels = [k.label for k in add_points(Path("idx"), 1.0)]
    chosen = SPAWNED_POINTS if mode == "spawn" else pick(labels, n)
    kind = "add kill" + (" (spawned)" if mode == "spawn" else "")
    names = {i: f"{kind} {j + 1}/{len(chosen)} ({labels[i]})" for j, i in enumerate(chosen)}
    if not any(map(want, names.values())):
        return []
    base = world.index_ref[0]
    timing = world.runner.run(argv_of(copy_tree(base, world.fresh("add_timing") / "idx")), mode=mode)
    if timing.rc != 0:
        return [Row("add kill", "an uninterrupted add succeeds", timing.tail(2), False)]
    base_hashes = tree_hashes(base, skip=SKIP_LOCK)
    total = N_COLLECTION + N_NEW
    expected = f"after the kill: old or new version; retry: {total} items, no duplicates, all agree, no temporaries"
    rows = []
    for i, name in names.items():
        if not want(name):
            continue
        idx = copy_tree(base, case_dir(world, name) / "idx")
        kill = add_points(idx, timing.wall)[i]
        killed = world.runner.run(argv_of(idx), kill, mode=mode)
        problems, notes = [], [kill_note(kill, killed)]
        if tree_hashes(idx, skip=SKIP_LOCK) == base_hashes:
            notes.append("old version intact")
        else:
            complete, what = index_state(world, idx, total)
            notes.append(f"new version {what}")
            if not complete:
                problems.append(f"after the kill the index {what}")
        retry = world.runner.run(argv_of(idx), mode=mode)
        said = retry.stdout.strip().splitlines()[-1] if retry.stdout.strip() else ""
        notes.append(f"retry: {retry.short()} ({said.split(': ', 1)[-1]})")
        if retry.rc != 0:
            problems.append(f"retry failed: {retry.tail(2)}")
        complete, what = index_state(world, idx, total)
        if not complete:
            problems.append(f"after the retry the index {what}")
        items = sqlite_items(idx)
        if not items["rows"] == items["ids"] == items["fingerprints"] == total:
            problems.append(f"meta.sqlite: {items} (expected {total} distinct)")
        left = temporaries(idx)
        if left:
            problems.append(f"left behind: {', '.join(Path(p).name for p in left[:3])}")
        rows.append(Row(name, expected, "; ".join(problems + notes), not problems))
    return rows


# ---- 4. two writers at once --------------------------------------------------------------------------


def concurrent_add(world: World, trials: int, want: Callable[[str], bool]) -> list[Row]:
    """Two adds of different records on one index of N_BIG items (big enough that a writer holds the
    lock for a while), the second started at offsets that put its lock attempt inside the first's
    write, and one after it."""
    names = [f"concurrent add {k + 1}/{trials}" for k in range(trials)]
    if not any(map(want, names)):
        return []
    base = world.big_index

    def add(idx: Path, data: Path) -> list[str]:
        return ["index", "add", "--index", str(idx), "--data", str(data)]

    idx = copy_tree(base, world.fresh("concurrent_timing") / "idx")
    watch = {"lock": fresh(idx / ".lock"), "swap": fresh(idx / "manifest.json")}
    timing = world.runner.run(add(idx, world.new_records), watch=watch)
    if timing.rc != 0 or len(timing.events) < 2:
        return [Row("concurrent add", "an uninterrupted add succeeds", f"{timing.short()}: {timing.tail(2)}", False)]
    window = timing.events["swap"] - timing.events["lock"]
    offsets = [round(f * window, 3) for f in (0.0, 0.3, 0.6, 0.9)][: max(trials - 1, 1)] + [round(timing.wall + 0.2, 2)]
    offsets = offsets[-trials:] if trials < len(offsets) else offsets
    expected = "each add ok or 'being written by PID' (not both refused); count == old + successful adds"
    rows = []
    for name, offset in zip(names, offsets):
        name = f"{name} (B starts {offset:.2f}s after A; A writes for {window:.2f}s)"
        if not want(name):
            continue
        idx = copy_tree(base, case_dir(world, name) / "idx")
        outcomes = world.runner.run_together([add(idx, world.new_records), add(idx, world.other_records)], [0, offset])
        problems, notes, added = [], [], 0
        for label, o in zip("AB", outcomes):
            if o.rc == 0:
                added += N_NEW
                notes.append(f"{label}: ok at {o.wall:.2f}s")
            elif o.rc == 2 and "being written by PID" in o.stderr:
                holder = re.search(r"PID \d+", o.stderr)
                notes.append(f"{label}: busy (written by {holder.group(0) if holder else '?'})")
            else:
                problems.append(f"{label}: {o.short()}: {o.tail(1)}")
        if added == 0:
            problems.append("both refused")
        complete, what = index_state(world, idx, N_BIG + added)
        notes.append(what)
        if not complete:
            problems.append(f"final index {what}")
        if temporaries(idx):
            problems.append("temporaries left")
        rows.append(Row(name, expected, "; ".join(problems + notes), not problems))
    return rows


# ---- 5. bad values of every numeric option ------------------------------------------------------------


def _check_bad_values(names: list[str]) -> list[list]:
    """(runs in a child) ``cli.main`` on every bad value of the commands' options, in an empty cwd
    each: [command, option, value, kind, ok, what was wrong or the error line]."""
    import contextlib
    import io

    from mmssl import cli
    from mmssl.checks import bad_values, unchecked_options

    results = []
    for name in names:
        try:
            config_cls = cli.config_class(name)
            values = [(o, "", "no range declared") for o in unchecked_options(config_cls)]
            values += list(bad_values(config_cls))
            required = cli.placeholder_argv(name)
        except Exception as e:  # noqa: BLE001 - a command whose config cannot be imported
            results.append([name, "", "", "range", False, f"cannot read its options: {type(e).__name__}: {e}"])
            continue
        for option, value, kind in values:
            if kind == "no range declared":
                results.append([name, option, value, "range", False, "no range in mmssl.checks.RANGES"])
                continue
            flag = "--" + option.replace("_", "-")
            cwd = Path(tempfile.mkdtemp(prefix="values."))
            os.chdir(cwd)
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    rc = cli.main([*name.split(), *required, flag, value])
            except SystemExit as e:
                rc = e.code
            except BaseException as e:  # noqa: BLE001 - what escapes main is a traceback for a user
                rc, err = "an exception", io.StringIO(f"Traceback: {type(e).__name__}: {e}")
            lines = err.getvalue().strip().splitlines()
            problems = []
            if rc != 2:
                problems.append(f"exit {rc}")
            if any("Traceback" in line for line in lines):
                problems.append("traceback")
            if len(lines) != 1:
                problems.append(
                    f"{len(lines)} lines" + (" (argparse usage first)" if lines and "usage:" in lines[0] else "")
                )
            if not (lines and lines[-1].startswith(f"mmssl {name}: error:") and flag in lines[-1]):
                problems.append("the last line does not name the option")
            written = [p.name for p in cwd.iterdir()]
            if written:
                problems.append(f"wrote {written}")
            os.chdir("/")
            shutil.rmtree(cwd, ignore_errors=True)
            said = lines[-1][:120] if lines else ""
            results.append([name, option, value, kind, not problems, ", ".join(problems) + f": {said}"])
    return results


def _summary(results: list[list]) -> tuple[str, bool]:
    """'N bad values: M ok', then each kind of failure with its count and one example."""
    bad = [r for r in results if not r[4]]
    kinds: dict[str, list[list]] = {}
    for r in bad:
        kinds.setdefault(re.sub(r"\d+ lines", "N lines", r[5].split(": ")[0]), []).append(r)
    shown = [
        f"{len(rs)} x {why}, e.g. {rs[0][0]} --{rs[0][1].replace('_', '-')} {rs[0][2]}: {rs[0][5]}"
        for why, rs in kinds.items()
    ]
    return f"{len(results)} bad values: {len(results) - len(bad)} ok" + "".join(f"; {x}" for x in shown), not bad


def bad_option_values(world: World, want: Callable[[str], bool]) -> list[Row]:
    """One row per command for out-of-range values (NaN, inf), one for wrong types across all."""
    from mmssl import cli

    expected = "exit 2, one line naming the option, no traceback, nothing written"
    range_case = {name: f"values: {name} (out of range, NaN, inf)" for name in sorted(cli.COMMANDS)}
    type_case = "values: every command (wrong type: a fraction, a word)"
    names = [n for n, case in range_case.items() if want(case) or want(type_case)]
    if not names:
        return []
    try:
        results = world.runner.call(_check_bad_values, names, timeout=900)
    except RuntimeError as e:
        return [Row("values", expected, f"could not run: {e}", False)]
    rows = []
    for name in names:
        mine = [r for r in results if r[0] == name and r[3] == "range"]
        if want(range_case[name]) and mine:
            rows.append(Row(range_case[name], expected, *_summary(mine)))
    typed = [r for r in results if r[3] == "type"]
    if want(type_case) and typed:
        observed, ok = _summary(typed)
        counts = sorted(int(m.group(1)) for r in typed if (m := re.match(r"(\d+) lines", r[5])))
        if counts:
            observed += f" [stderr: {counts[0]} to {counts[-1]} lines]"
        rows.append(Row(type_case, expected, observed, ok))
    return rows


# ---- 6. damaged files ---------------------------------------------------------------------------------


@dataclass
class Damage:
    """A damaged input: ``make(case_dir) -> (argv, the file the error must name)``; ``check`` (optional)
    judges a run that is expected to succeed instead of failing."""

    name: str
    command: str
    make: Callable[[Path], tuple[list[str], Path]]
    check: Callable[[Path, Outcome], tuple[list[str], str]] | None = None  # -> (problems, what it saw)
    expected: str = ""  # of a run that ``check`` judges


def _model_copy(world: World, case: Path) -> Path:
    return copy_tree(world.model, case / "model")


def _damage_model(world: World, what: str) -> Callable[[Path], tuple[list[str], Path]]:
    def make(case: Path) -> tuple[list[str], Path]:
        model = _model_copy(world, case)
        target = {
            "weights": model / "towers" / "code" / "model.safetensors",
            "heads": model / "heads.safetensors",
            "tokenizer": model / "towers" / "text" / "tokenizer.json",
            "config": model / "towers" / "code" / "config.json",
            "dual config": model / "dual_encoder.json",
            "tower": model / "towers" / "code",
        }[what]
        if what in ("weights", "heads"):
            truncate(target)
        elif what == "tokenizer":
            target.unlink()
        elif what == "tower":
            shutil.rmtree(target)
        else:
            target.write_text("{ this is not JSON")
        argv = ["index", "build", "--model", str(model), "--data", str(world.corpus), "--out", str(case / "idx")]
        return argv + ["--device", "cpu"], target

    return make


def _run_copy(world: World, case: Path) -> tuple[Path, list[str]]:
    run = copy_tree(world.train_ref[0], case / "run")
    argv = train_argv(world.corpus, run, TRAIN_STEPS, "--save-every", "2", "--log-every", "1", "--resume")
    return run, argv


def _damage_checkpoint(world: World, what: str) -> Callable[[Path], tuple[list[str], Path]]:
    def make(case: Path) -> tuple[list[str], Path]:
        run, argv = _run_copy(world, case)
        state = run / "checkpoints" / "last" / "trainer_state.pt"
        if what == "truncated":
            truncate(state)
        else:  # a pickle that would create a file if it were unpickled (weights_only must refuse it)
            import torch

            torch.save({"step": 1, "payload": _Touch(str(case / "UNPICKLED"))}, state)
        return argv, state

    return make


class _Touch:
    """Unpickling this creates a file (``open(path, "w")``): proof that something was executed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _damage_metrics(world: World, torn: bool) -> Callable[[Path], tuple[list[str], Path]]:
    def make(case: Path) -> tuple[list[str], Path]:
        run, argv = _run_copy(world, case)
        metrics = run / "metrics.jsonl"
        lines = metrics.read_text().splitlines(keepends=True)
        if torn:
            metrics.write_text("".join(lines) + '{"step": 17, "loss": 3.1, "l')
        else:
            lines[len(lines) // 2] = "#### not a record\n"
            metrics.write_text("".join(lines))
        return argv, metrics

    return make


def _check_torn(world: World) -> Callable[[Path, Outcome], tuple[list[str], str]]:
    def check(case: Path, o: Outcome) -> tuple[list[str], str]:
        problems = [] if o.rc == 0 else [f"resume failed: {o.short()}: {o.tail(2)}"]
        run = case / "run"
        try:
            losses = training_losses(run)
            if losses != training_losses(world.train_ref[0]):
                problems.append("losses differ from the uninterrupted run's")
        except json.JSONDecodeError:
            problems.append("metrics.jsonl still holds the torn line")
        if temporaries(run):
            problems.append("temporaries left")
        dropped = "dropping a torn last record" in " ".join(o.stderr.split())
        return problems, f"{o.short()}; {'warned: dropping a torn last record; ' if dropped else ''}losses equal"

    return check


def _damage_corpus(world: World, what: str) -> Callable[[Path], tuple[list[str], Path]]:
    def make(case: Path) -> tuple[list[str], Path]:
        records = code_records(N_COLLECTION)
        if what == "truncated gz":
            target = write_jsonl(records, case / "corpus.jsonl.gz")
            truncate(target, 0.6)
        else:
            target = case / "corpus.jsonl"
            lines = [json.dumps(r).encode() + b"\n" for r in records]
            if what == "non-UTF-8":
                lines[50] = b'{"docstring": "caf\xe9 \xff", "code": "x = 1"}\n'
            elif what == "malformed JSON":
                lines[50] = b'{"docstring": "a", "code": \n'
            elif what == "missing code":
                lines[50] = json.dumps({k: v for k, v in records[50].items() if k != "code"}).encode() + b"\n"
            elif what == "empty docstrings":
                lines = [json.dumps({**r, "docstring": ""}).encode() + b"\n" for r in records]
            target.write_bytes(b"".join(lines))
        return train_argv(target, case / "out", 2), target

    return make


def _damage_config(world: World, what: str) -> Callable[[Path], tuple[list[str], Path]]:
    def make(case: Path) -> tuple[list[str], Path]:
        cfg = case / "run.toml"
        cfg.write_text("lr = 0.001\nbatch_size = [32\n" if what == "bad TOML" else "lr = 0.001\nlearning_rate = 0.01\n")
        return train_argv(world.corpus, case / "out", 2, "--config", str(cfg)), cfg

    return make


def _damage_index(world: World, what: str, command: str = "search") -> Callable[[Path], tuple[list[str], Path]]:
    def make(case: Path) -> tuple[list[str], Path]:
        idx = copy_tree(world.index_ref[0], case / "idx")
        manifest = json.loads((idx / "manifest.json").read_text())
        target = idx / "index.faiss"
        if what == "truncated index.faiss":
            truncate(target)
        elif what.startswith("random index.faiss"):
            target.write_bytes(os.urandom(target.stat().st_size))
        elif what == "manifest files {}":
            target = idx / "manifest.json"
            target.write_text(json.dumps({**manifest, "files": {}}))
        elif what == "meta.sqlite garbage":
            target = idx / "meta.sqlite"
            target.write_bytes(os.urandom(target.stat().st_size))
        elif what == "manifest metric l2":
            target = idx / "manifest.json"
            target.write_text(json.dumps({**manifest, "metric": "l2"}))
        if command == "add":
            return ["index", "add", "--index", str(idx), "--data", str(world.new_records)], target
        argv = ["index", "search", "--index", str(idx), "--query", QUERIES[0]]
        return argv + (["--verify"] if what.endswith("--verify") else []), target

    return make


def _damage_negatives(world: World) -> Callable[[Path], tuple[list[str], Path]]:
    def make(case: Path) -> tuple[list[str], Path]:
        negs = case / "negatives.jsonl"
        negs.write_bytes(b"\x89garbage\x00\x01 not a negatives table\n" + os.urandom(200))
        return train_argv(world.corpus, case / "out", 2, "--negatives", str(negs)), negs

    return make


def _damage_images(world: World) -> Callable[[Path], tuple[list[str], Path]]:
    def make(case: Path) -> tuple[list[str], Path]:
        images = case / "images"
        made = world.runner.run(
            ["data", "make-images", "--kind", "shapes", "--out", str(images), "--count", "60", "--size", "32"]
        )
        if made.rc != 0:
            raise RuntimeError(f"make-images failed: {made.tail(2)}")
        png = sorted((images / "train").glob("*.png"))[0]
        truncate(png)
        argv = ["mine-negatives", "--source", "bm25", "--task", "image-text", "--data", str(images)]
        return argv + ["--out", str(case / "negatives.jsonl"), "--top-k", "5", "--keep", "2"], png

    return make


def _check_images(case: Path, o: Outcome) -> tuple[list[str], str]:
    problems = [] if o.rc == 0 else [f"{o.short()}: {o.tail(2)}"]
    log = " ".join(o.stderr.split())
    said = re.search(r"skipped \d+ bad images \([^)]*\)", log)
    if not said or not said.group(0).startswith("skipped 1 "):
        problems.append("no 'skipped 1 bad images' in the log")
    pairs = None
    if o.rc == 0:
        pairs = json.JSONDecoder().raw_decode(o.stdout.lstrip())[0]["pairs"]
        if pairs != 47:  # 48 training images, one skipped
            problems.append(f"{pairs} pairs mined, expected 47")
    return problems, f"{o.short()}; logged '{said.group(0) if said else ''}'; {pairs} pairs mined"


def damages(world: World) -> list[Damage]:
    d = []
    for what, label in [
        ("weights", "truncated model.safetensors"),
        ("heads", "truncated heads.safetensors"),
        ("tokenizer", "missing tokenizer.json"),
        ("config", "tower config.json not JSON"),
        ("dual config", "dual_encoder.json not JSON"),
        ("tower", "missing tower folder"),
    ]:
        d.append(Damage(f"corrupt model: {label}", "index build", _damage_model(world, what)))
    d.append(Damage("corrupt checkpoint: truncated trainer_state.pt", "train", _damage_checkpoint(world, "truncated")))
    d.append(Damage("corrupt checkpoint: a pickled object", "train", _damage_checkpoint(world, "pickle")))
    d.append(
        Damage(
            "corrupt metrics: torn last line (resumes)",
            "train",
            _damage_metrics(world, True),
            _check_torn(world),
            "--resume works: the torn line dropped, losses == the uninterrupted run's, no temporaries",
        )
    )
    d.append(Damage("corrupt metrics: damaged middle line", "train", _damage_metrics(world, False)))
    for what in ("truncated gz", "non-UTF-8", "malformed JSON", "missing code", "empty docstrings"):
        d.append(Damage(f"corrupt corpus: {what}", "train", _damage_corpus(world, what)))
    for what in ("bad TOML", "unknown key"):
        d.append(Damage(f"corrupt config: {what}", "train", _damage_config(world, what)))
    for what in (
        "truncated index.faiss",
        "random index.faiss",
        "random index.faiss --verify",
        "manifest files {}",
        "meta.sqlite garbage",
        "manifest metric l2",
    ):
        d.append(Damage(f"corrupt index: {what}", "index search", _damage_index(world, what)))
    d.append(
        Damage(
            "corrupt index: random index.faiss, then add",
            "index add",
            _damage_index(world, "random index.faiss", "add"),
        )
    )
    d.append(Damage("corrupt negatives: garbage table", "train", _damage_negatives(world)))
    d.append(
        Damage(
            "corrupt images: truncated PNG (skipped, counted)",
            "mine-negatives",
            _damage_images(world),
            _check_images,
            "exit 0, 'skipped 1 bad images' logged, 47 of 48 training pairs mined, the image set unchanged",
        )
    )
    return d


def corrupt_files(world: World, want: Callable[[str], bool]) -> list[Row]:
    rows = []
    for damage in damages(world):
        if not want(damage.name):
            continue
        case = world.fresh(damage.name.split(":")[1].strip().replace(" ", "_").replace("/", "_"))
        try:
            argv, target = damage.make(case)
        except RuntimeError as e:
            rows.append(Row(damage.name, "set up", f"could not set up: {e}", False))
            continue
        before = tree_hashes(case)
        o = world.runner.run(argv, timeout=300)
        if damage.check is not None:
            problems, saw = damage.check(case, o)
            changed = [c for c in diff_hashes(before, tree_hashes(case)) if c.startswith("~images")]
            if changed:
                problems.append(f"changed: {', '.join(changed[:3])}")
            rows.append(Row(damage.name, damage.expected, "; ".join(problems + [saw]), not problems))
            continue
        ok, observed = one_line_error(o, damage.command, (str(target),))
        changed = diff_hashes(before, tree_hashes(case))
        if changed:
            ok = False
            observed = f"changed {len(changed)} path(s) ({', '.join(changed[:3])}); {observed}"
        if (case / "UNPICKLED").exists():
            ok, observed = False, f"the pickle was unpickled; {observed}"
        rows.append(
            Row(
                damage.name,
                f"exit 2, one 'mmssl {damage.command}: error:' line naming {target.name}, nothing changed",
                observed,
                ok,
            )
        )
    return rows


# ---- 7. a 50 MB record ---------------------------------------------------------------------------------


def large_record(world: World, want: Callable[[str], bool], size_mb: int = 50) -> list[Row]:
    name = f"large record: one {size_mb} MB record in the training corpus"
    if not want(name):
        return []
    case = world.fresh("large_record")
    records = code_records(N_COLLECTION)
    small = write_jsonl(records, case / "small.jsonl.gz")
    line = "value = compute(value) + 1  # a long generated function body\n"
    body = "def huge():\n" + "    " + ("    ".join([line] * (size_mb * 2**20 // (len(line) + 4))))
    big = write_jsonl(
        [*records, {**records[2], "path": "pkg/huge.py", "code": body, "docstring": "A huge function."}],
        case / "big.jsonl.gz",
    )
    base = world.runner.run(train_argv(small, case / "run_small", 2), mode="spawn")
    if base.rc != 0:
        return [Row(name, "the run without it succeeds", f"{base.short()}: {base.tail(2)}", False)]
    limit = max(10 * base.wall, 120)
    o = world.runner.run(train_argv(big, case / "run_big", 2), mode="spawn", timeout=limit)
    wall_x, rss_x = o.wall / base.wall, o.maxrss_mb / base.maxrss_mb

    def pairs(run: Outcome) -> str:
        found = re.search(r"([\d,]+) training pairs", run.stderr)
        return found.group(1) if found else "?"

    observed = (
        f"{o.short()}; {o.wall:.1f}s vs {base.wall:.1f}s ({wall_x:.2f}x), "
        f"peak RSS {o.maxrss_mb:.0f} MB vs {base.maxrss_mb:.0f} MB ({rss_x:.2f}x); "
        f"{pairs(o)} vs {pairs(base)} training pairs (fresh processes)"
    )
    if o.rc != 0:
        observed += f": {o.tail(2)}"
    ok = o.rc == 0 and wall_x <= 2 and rss_x <= 2
    return [Row(name, "2-step train finishes, within 2x wall time and 2x peak RSS of the run without it", observed, ok)]


# ---- main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 kill points per kind (default: 20)")
    parser.add_argument("--only", default=None, help="run only the cases whose name contains this")
    parser.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    parser.add_argument("--runner", choices=["fork", "spawn"], default="fork", help="how commands run (fault_cases)")
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
