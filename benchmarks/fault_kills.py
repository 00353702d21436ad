"""The kill cases of ``benchmarks/faults.py``: SIGKILL ``mmssl train``, ``index build`` and ``index
add`` at points in their runs (events on disk), then resume or run again and compare with the
uninterrupted run; and two writers of one index at once.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_cases import (  # noqa: E402
    Row,
    copy_tree,
    probe_checkpoint,
    probe_index,
    sqlite_items,
    temporaries,
    training_losses,
    tree_hashes,
)
from fault_runner import Kill, Outcome, after_start, all_of, exists, fresh, lines_at_least, pick  # noqa: E402
from fault_world import (  # noqa: E402
    N_BIG,
    N_COLLECTION,
    N_NEW,
    SKIP_LOCK,
    SPAWNED_POINTS,
    TRAIN_STEPS,
    World,
    train_argv,
)

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


def kill_names(kind: str, labels: list[str], n: int, mode: str | None) -> dict[int, str]:
    """The kill points a case runs, by index into ``labels``, each with its row's name: ``n`` spread
    over the run, or on real processes (``mode == "spawn"``) the fixed ``SPAWNED_POINTS``."""
    chosen = SPAWNED_POINTS if mode == "spawn" else pick(labels, n)
    kind += " (spawned)" if mode == "spawn" else ""
    return {i: f"{kind} {j + 1}/{len(chosen)} ({labels[i]})" for j, i in enumerate(chosen)}


def kill_row(name: str, expected: str, problems: list[str], notes: list[str], *roots: Path) -> Row:
    """A kill case's row: ok when nothing was wrong and no temporary is left under ``roots``."""
    left = temporaries(*roots)
    if left:
        problems = [*problems, f"left behind: {', '.join(Path(p).name for p in left[:3])}"]
    return Row(name, expected, "; ".join(problems + notes), not problems)


# ---- 1. SIGKILL during training, then --resume ---------------------------------------------------------


def train_kill(world: World, n: int, want: Callable[[str], bool], mode: str | None = None) -> list[Row]:
    names = kill_names("train kill", [k.label for k in train_points(Path("run"), 1.0)], n, mode)
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
        rows.append(kill_row(name, expected, problems, notes, out))
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


def after_kill(world: World, idx: Path, old: dict | None, count: int, label: str, notes: list[str]) -> list[str]:
    """What was wrong with the index at ``idx`` after a kill: nothing if it is the old one byte for
    byte (``old``: its file hashes) or a complete one of ``count`` items; which it was goes to ``notes``."""
    if old is not None and tree_hashes(idx, skip=SKIP_LOCK) == old:
        notes.append(f"old {label} intact")
        return []
    complete, what = index_state(world, idx, count)
    notes.append(f"new {label} {what}")
    return [] if complete else [f"after the kill the index {what}"]


def build_kill(world: World, n: int, want: Callable[[str], bool], mode: str | None = None) -> list[Row]:
    """Even points build a new index, odd ones rebuild over an old index (``--overwrite``)."""
    labels = [k.label for k in build_points(Path("idx"), 1.0)]
    variant = {i: "over old" if i % 2 else "new" for i in range(len(labels))}
    names = kill_names("build kill", [f"{variant[i]}: {label}" for i, label in enumerate(labels)], n, mode)
    if not any(map(want, names.values())):
        return []
    _, ref, ref_hits = world.index_ref
    old_hashes = tree_hashes(world.old_index, skip=SKIP_LOCK) if any(variant[i] == "over old" for i in names) else {}
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
            problems += after_kill(world, out, old_hashes if over else None, N_COLLECTION, "index", notes)
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
        expected = (
            "after the kill: the old index intact or the new one complete; rerun: complete, same results"
            if over
            else "after the kill: no index or a complete one; rerun: complete, same results"
        ) + ", no temporaries"
        rows.append(kill_row(name, expected, problems, notes, out, emb))
    return rows


# ---- 3. SIGKILL during index add, then the same add again ----------------------------------------------


def add_kill(world: World, n: int, want: Callable[[str], bool], mode: str | None = None) -> list[Row]:
    def argv_of(idx: Path) -> list[str]:
        return ["index", "add", "--index", str(idx), "--data", str(world.new_records)]

    names = kill_names("add kill", [k.label for k in add_points(Path("idx"), 1.0)], n, mode)
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
        notes = [kill_note(kill, killed)]
        problems = after_kill(world, idx, base_hashes, total, "version", notes)
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
        rows.append(kill_row(name, expected, problems, notes, idx))
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
