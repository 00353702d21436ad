"""What every case of ``benchmarks/faults.py`` runs on: the tiny corpora, the uninterrupted reference
runs (a training run, an index build and its search results, an index to rebuild over, a 20,000-item
index two writers race on), each made on first use in the case's temporary directory.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_cases import code_records, write_jsonl  # noqa: E402
from fault_runner import Outcome, Runner  # noqa: E402

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
