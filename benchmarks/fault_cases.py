"""Helpers of ``benchmarks/faults.py``: running real ``mmssl`` commands (killable, with their
output, exit status, wall time and peak RSS), making the tiny data it runs them on, and looking at
what a run left on disk (file hashes, temporaries, index contents).

Two ways to run a command (``Runner``):

- ``fork`` (the default): a child of this process, which has imported torch, transformers, FAISS
  and the commands' modules once, runs ``mmssl.cli.main(argv)`` with its stdout and stderr sent to
  files and exits with its status; an exception that escapes ``main`` prints its traceback and
  exits 1, as the real entry point would. It saves the ~6 s of imports each run would otherwise
  spend (on 2 loaded cores), which is what makes 20 kill points per kind fit in minutes. This
  process itself never computes with torch or FAISS (that could leave OpenMP threads that a forked
  child cannot use); checks that need them run in forked children too (``Runner.call``).
- ``spawn``: a fresh ``python -m mmssl.cli`` process per run, as a user starts it (slower; used for
  the memory case, whose peak RSS must not include this process's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
os.environ.update(OFFLINE_ENV)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked children tokenize
os.environ.setdefault("OMP_NUM_THREADS", "1")  # spawned runs: as forked ones (``_one_thread``)


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


# ---- running commands ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run of a command did."""

    argv: list[str]
    rc: int | None  # exit status; None when killed by a signal
    signal: int | None  # the signal that ended it (SIGKILL: ours)
    stdout: str
    stderr: str
    wall: float  # seconds from start to exit
    maxrss_mb: float  # peak resident set of the child (fork: includes the pages it shares with us)
    events: dict[str, float] = dataclasses.field(default_factory=dict)  # ``watch``: when each first held

    @property
    def killed(self) -> bool:
        return self.signal == signal.SIGKILL

    def short(self) -> str:
        if self.killed:
            return f"killed at {self.wall:.2f}s"
        if self.signal:
            return f"died of signal {self.signal} at {self.wall:.2f}s"
        return f"rc {self.rc} at {self.wall:.2f}s"

    def tail(self, n: int = 1) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return " / ".join(lines[-n:])[:300]


@dataclass
class Kill:
    """When to SIGKILL a run: ``delay`` seconds after ``when()`` first holds (polled every 2 ms), or
    after the start when ``when`` is None. ``label`` says where in the run that is."""

    label: str
    when: Callable[[], bool] | None = None
    delay: float = 0.0


def after_start(seconds: float, label: str = "") -> Kill:
    return Kill(label or f"{seconds:g}s after the start", None, seconds)


def exists(root: Path, pattern: str) -> Callable[[], bool]:
    """Something below ``root`` matches the glob ``pattern`` (``.idx.*.tmp/manifest.json``)."""
    return lambda: next(iter(Path(root).glob(pattern)), None) is not None


def fresh(path: Path) -> Callable[[], bool]:
    """``path`` was (re)written since now: it exists and is not the file that is there now."""

    def signature():
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    before = signature()
    return lambda: (now := signature()) is not None and now != before


def lines_at_least(path: Path, n: int) -> Callable[[], bool]:
    def holds() -> bool:
        try:
            return Path(path).read_bytes().count(b"\n") >= n
        except FileNotFoundError:
            return False

    return holds


def all_of(*conditions: Callable[[], bool]) -> Callable[[], bool]:
    return lambda: all(c() for c in conditions)


def pick(points: list, n: int) -> list[int]:
    """Indices of ``n`` of ``points`` spread evenly, first and last included (all when n >= len)."""
    if n >= len(points):
        return list(range(len(points)))
    if n == 1:
        return [0]
    return sorted({round(i * (len(points) - 1) / (n - 1)) for i in range(n)})


def preload() -> None:
    """Import what the commands import (fork mode: once, here, rather than in every child)."""
    import matplotlib

    matplotlib.use("Agg")
    import faiss  # noqa: F401
    import matplotlib.pyplot  # noqa: F401
    import safetensors.torch  # noqa: F401
    import tokenizers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import (  # noqa: F401  (the towers' model classes import most of transformers)
        AutoModel,
        AutoTokenizer,
        BertModel,
        GPT2Model,
        HfArgumentParser,
        PreTrainedTokenizerFast,
        RobertaModel,
        get_cosine_schedule_with_warmup,
    )

    import indexing.commands
    import indexing.create
    import indexing.index
    import indexing.update  # noqa: F401
    import mmssl.commands
    import mmssl.data.commands
    import mmssl.engine
    import mmssl.negatives.commands
    import mmssl.recipes.image_text
    import mmssl.recipes.text_code  # noqa: F401
    from mmssl import cli  # noqa: F401


def _one_thread() -> None:
    """One compute thread per run: on 2 loaded cores, OpenMP's threads waiting for each other at
    every op cost more than they bring (and every run, killed, resumed or reference, is alike)."""
    import torch

    torch.set_num_threads(1)


def _child_exit(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


class Runner:
    """Runs ``mmssl ARGV`` (``run``), or a check function (``call``), in a child process."""

    def __init__(self, mode: str = "fork", workdir: Path | None = None) -> None:
        if mode not in ("fork", "spawn"):
            raise ValueError(f"mode {mode!r}: fork or spawn")
        self.mode = mode
        self.logs = Path(tempfile.mkdtemp(prefix="logs.", dir=workdir))
        self._n = 0
        if mode == "fork":
            preload()

    def _files(self) -> tuple[Path, Path]:
        self._n += 1
        return self.logs / f"{self._n}.out", self.logs / f"{self._n}.err"

    def start(self, argv: list[str], mode: str | None = None) -> tuple[int, Path, Path, float]:
        out, err = self._files()
        mode = mode or self.mode
        started = time.monotonic()
        if mode == "spawn":
            with open(out, "wb") as fo, open(err, "wb") as fe:
                import subprocess

                proc = subprocess.Popen(
                    [sys.executable, "-m", "mmssl.cli", *argv], stdout=fo, stderr=fe, cwd=REPO, env=os.environ.copy()
                )
            proc.returncode = 0  # we reap it ourselves (os.wait4): keep Popen from waiting on it again
            return proc.pid, out, err, started
        sys.stdout.flush()
        sys.stderr.flush()
        out.touch()  # here, not in the child: a kill that lands before the child opens them leaves them empty
        err.touch()
        pid = os.fork()
        if pid == 0:  # the child: the command, then _exit with its status
            code = 1
            try:
                fo = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                fe = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fo, 1)
                os.dup2(fe, 2)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                _one_thread()
                from mmssl import cli

                code = cli.main(list(argv))
            except SystemExit as e:
                code = _child_exit(e.code)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code if isinstance(code, int) else 1)
        return pid, out, err, started

    def wait(
        self,
        pid: int,
        out: Path,
        err: Path,
        started: float,
        argv: list[str],
        kill: Kill | None = None,
        timeout: float = 600,
        watch: dict[str, Callable[[], bool]] | None = None,
    ) -> Outcome:
        status, usage = None, None
        killed_at = event_at = None
        events: dict[str, float] = {}
        while True:
            got, status, usage = os.wait4(pid, os.WNOHANG)
            if got == pid:
                break
            now = time.monotonic()
            for name, holds in (watch or {}).items():
                if name not in events and holds():
                    events[name] = now - started
            due = now - started >= timeout
            if kill is not None and killed_at is None:
                if kill.when is None:
                    due = due or now - started >= kill.delay
                else:
                    if event_at is None and kill.when():
                        event_at = now
                    due = due or (event_at is not None and now - event_at >= kill.delay)
            if due and killed_at is None:
                os.kill(pid, signal.SIGKILL)
                killed_at = now - started
            time.sleep(0.002)
        wall = time.monotonic() - started
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        rc = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        return Outcome(
            list(argv),
            rc,
            sig,
            out.read_text(errors="replace"),
            err.read_text(errors="replace"),
            wall,
            usage.ru_maxrss / 1024 if usage else 0.0,
            events,
        )

    def run(
        self,
        argv: list[str],
        kill: Kill | None = None,
        timeout: float = 600,
        mode: str | None = None,
        watch: dict[str, Callable[[], bool]] | None = None,
    ) -> Outcome:
        """Run ``mmssl ARGV`` to its end, or SIGKILL it as ``kill`` says (or after ``timeout`` s);
        ``watch``: conditions whose first time to hold is recorded in ``Outcome.events``."""
        pid, out, err, started = self.start(argv, mode)
        return self.wait(pid, out, err, started, argv, kill, timeout, watch)

    def run_together(self, argvs: list[list[str]], offsets: list[float], timeout: float = 600) -> list[Outcome]:
        """Start each command ``offsets[i]`` seconds after the first, then wait for all of them."""
        t0, started = time.monotonic(), []
        for argv, offset in zip(argvs, offsets):
            time.sleep(max(0.0, t0 + offset - time.monotonic()))
            started.append((self.start(argv), argv))
        return [self.wait(*s, argv, None, timeout) for s, argv in started]

    def call(self, fn: Callable, *args, timeout: float = 300):
        """``fn(*args)`` in a forked child; its JSON-able result, or raises ``RuntimeError`` with the
        child's error (so that this process never runs torch or FAISS code itself)."""
        result = self.logs / f"call.{os.getpid()}.{self._n}.json"
        self._n += 1
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    value = {"ok": fn(*args)}
            except BaseException as e:
                value = {"error": f"{type(e).__name__}: {e}"[:500]}
            try:
                result.write_text(json.dumps(value, default=str))
            except BaseException:
                code = 1
            os._exit(code)
        started = time.monotonic()
        while True:
            got, status = os.waitpid(pid, os.WNOHANG)
            if got == pid:
                break
            if time.monotonic() - started > timeout:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
        if not result.is_file():
            raise RuntimeError(f"check {fn.__name__} died (status {status})")
        value = json.loads(result.read_text())
        result.unlink()
        if "error" in value:
            raise RuntimeError(value["error"])
        return value["ok"]


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
