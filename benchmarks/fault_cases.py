"""Helpers of ``benchmarks/faults.py`` besides running commands (``fault_runner``): the table, the
checks on what a command printed, what a run left on disk (file hashes, temporaries, index
contents, probed in a forked child with ``Runner.call``), and the tiny data the cases run on.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from fault_runner import Outcome

# ---- the table -------------------------------------------------------------------------------------


@dataclass
class Row:
    case: str
    expected: str
    observed: str
    ok: bool


def markdown_table(rows: list[Row]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| case | expected | observed | ok |", "|---|---|---|---|"]
    lines += [
        f"| {cell(r.case)} | {cell(r.expected)} | {cell(r.observed)} | {'ok' if r.ok else 'FAIL'} |" for r in rows
    ]
    return "\n".join(lines)


# ---- checks on what a command printed ----------------------------------------------------------------


def error_lines(stderr: str, command: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"mmssl {command}: error:")]


def names_file(line: str, path: Path) -> bool:
    """Whether an error line names ``path``: in full, or its folder and its name."""
    return str(path) in line or (str(path.parent) in line and path.name in line)


def one_line_error(o: Outcome, command: str, names: tuple[str, ...] = ()) -> tuple[bool, str]:
    """Exit 2 with one ``mmssl COMMAND: error: ...`` line (naming one of ``names``), no traceback."""
    errors = error_lines(o.stderr, command)
    problems = []
    if o.rc != 2:
        problems.append(o.short())
    if "Traceback" in o.stderr or "Traceback" in o.stdout:
        problems.append("a traceback")
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines")
    elif names and not any(names_file(errors[0], Path(n)) for n in names):
        problems.append(f"does not name {Path(names[0]).name}")
    shown = errors[0] if errors else o.tail(2)
    return not problems, ("; ".join(problems) + ": " if problems else "") + shown[:260]


# ---- the files a run left ---------------------------------------------------------------------------


def tree_hashes(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under ``root`` (and each directory, as such), by path relative to it;
    names in ``skip`` are left out."""
    root = Path(root)
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        out[os.path.relpath(dirpath, root)] = "dir"
        for name in filenames:
            if name not in skip:
                p = Path(dirpath, name)
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "other"
    return out


def diff_hashes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    changes = [f"+{p}" for p in sorted(set(after) - set(before))]
    changes += [f"-{p}" for p in sorted(set(before) - set(after))]
    changes += [f"~{p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]]
    return changes


_TEMPORARY = re.compile(r"^\..+(\.tmp|\.old-\d+)$")


def temporaries(*roots: Path) -> list[str]:
    """Temporaries (``mmssl.io``'s ``.NAME.PID.*.tmp`` and ``.NAME.old-PID``) below ``roots`` and
    beside them."""
    found: set[str] = set()
    for root in map(Path, roots):
        places = [root.parent] + ([root] if root.is_dir() else [])
        for place in places:
            if not place.is_dir():
                continue
            walker = os.walk(place) if place == root else [(str(place), [], os.listdir(place))]
            for dirpath, dirnames, filenames in walker:
                for name in [*dirnames, *filenames]:
                    if _TEMPORARY.match(name):
                        found.add(str(Path(dirpath, name)))
    return sorted(found)


def copy_tree(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])


def training_losses(run: Path) -> list[tuple[int, float]]:
    """(step, loss) of every training record of ``RUN/metrics.jsonl``."""
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if "loss" in record:
                rows.append((record["step"], record["loss"]))
    return rows


def sqlite_items(index_dir: Path) -> dict:
    """Rows, distinct ids and distinct fingerprints of an index's ``meta.sqlite`` (read-only)."""
    conn = sqlite3.connect(f"file:{index_dir / 'meta.sqlite'}?mode=ro", uri=True)
    try:
        rows, ids, fps = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT id), COUNT(DISTINCT fingerprint) FROM items"
        ).fetchone()
    finally:
        conn.close()
    return {"rows": rows, "ids": ids, "fingerprints": fps}


# ---- checks that need torch or FAISS (run with Runner.call) -----------------------------------------


def probe_checkpoint(run_dir: str) -> dict:
    """Whether ``RUN/checkpoints/last`` reads back: its trainer state and its model."""
    from mmssl.engine.checkpoint import checkpoint_dir, read_trainer_state
    from mmssl.models import DualEncoder

    run = Path(run_dir)
    ckpt = checkpoint_dir(run)
    if not ckpt.exists():
        return {"exists": False}
    state = read_trainer_state(run)
    DualEncoder.from_pretrained(ckpt / "model")
    return {"exists": True, "step": int(state["step"])}


def probe_index(index_dir: str) -> dict:
    """Load an index with every file's sha256 checked; its manifest count, FAISS vectors and ids,
    and SQLite rows and ids."""
    import faiss
    import numpy as np

    from indexing.index import SearchIndex

    path = Path(index_dir)
    with SearchIndex.load(path, verify=True, use_gpu=False) as index:
        count, ntotal = index.manifest.count, int(index.index.ntotal)
        rows = index.store.count()
        store_ids = sorted(r[0] for r in index.store.conn.execute("SELECT id FROM items"))
    loaded = faiss.read_index(str(path / "index.faiss"))  # owns the index: keep it while its parts are read
    raw = faiss.downcast_index(loaded)
    faiss_ids = sorted(faiss.vector_to_array(raw.id_map).tolist()) if hasattr(raw, "id_map") else None
    del raw, loaded
    return {
        "count": count,
        "ntotal": ntotal,
        "rows": rows,
        "ids_agree": faiss_ids is None or bool(np.array_equal(faiss_ids, store_ids)),
    }


# ---- data -------------------------------------------------------------------------------------------

VERBS = "add remove parse load save sort merge split count find render encode decode compress validate".split()
VERBS += "format fetch update delete create".split()
NOUNS = "user file record image token matrix config message packet table list graph node cache queue".split()
NOUNS += "string number date path socket".split()


def code_records(n: int, seed: int = 0, tag: str = "") -> list[dict]:
    """tests/conftest.py's synthetic corpus: functions whose docstring words name their identifiers;
    every 10th record 'valid', every 10th (offset 1) 'test', the rest 'train'. ``tag`` makes the
    records' paths (and so the items) distinct from another set's."""
    rng = random.Random(seed)
    parts = ["valid", "test"] + ["train"] * 8
    out = []
    for i in range(n):
        verb, noun = rng.choice(VERBS), rng.choice(NOUNS)
        out.append(
            {
                "repo": f"repo{i % 25}",
                "path": f"pkg{tag}/mod{i}.py",
                "func_name": f"{verb}_{noun}",
                "original_string": "",
                "language": "python",
                "code": f"def {verb}_{noun}({noun}, options=None):\n    result = {verb}({noun})\n    return result",
                "code_tokens": [],
                "docstring": f"{verb.capitalize()} the {noun} given as input.",
                "docstring_tokens": [],
                "url": "",
                "partition": parts[i % 10],
            }
        )
    return out


def write_jsonl(records: list[dict], path: Path) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path
