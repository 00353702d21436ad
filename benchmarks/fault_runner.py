"""Running real ``mmssl`` commands for ``benchmarks/faults.py``: killable, with their output, exit
status, wall time and peak RSS (``Runner``), and the conditions a kill waits for (``Kill``).

Two ways to run a command:

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
import io
import json
import os
import signal
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
