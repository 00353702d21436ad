"""Embedding a collection on Spark (``--engine spark``): each Spark task embeds one part of the
collection and writes its shard; the driver numbers the items and writes the embeddings directory
that ``indexing.embed.ShardDir`` reads, so the index is built from it as a local build's is.

Parts (``collection_parts``): the files a collection is made of, the ``.jsonl``/``.jsonl.gz``
shards of a folder of records or the ``.tar`` shards of a WebDataset folder; a single file, or an
image folder with its metadata file, is one part. A task reads its part with the model's recipe
(the reader of a local build), so item i of part p is the local build's item ``offset(p) + i``:
the same ids, the same order.

Per part, in the embeddings directory (each file written to a temporary name and renamed):
    shard-00003.npy             (n, D) embeddings
    shard-00003.items.jsonl.gz  one line per item: its text, payload and tuning query
    shard-00003.part.json       written last: source file, model hash, settings, count, the
                                task's seconds (model load, read + embed, write). A part with it
                                is finished and a rerun skips it; one made with another model or
                                settings is made again
The driver then writes ``shard-00003.ids.npy`` (its ids: offset .. offset + n) and
``embeddings.json`` (every part's count): a ``ShardDir``.

Faults: a task that fails is retried by Spark (``spark.task.maxFailures``; ``local[N,F]`` in local
mode). A retry rewrites the same files, and ids come from the parts' order and counts, so a retried
part cannot add an id twice; a part without its ``part.json`` never enters the index. For fault
tests, ``MMSSL_SPARK_FAULT=PART:FLAG_FILE`` makes the first attempt at part PART write half its
shard and kill its Python worker (the flag file records that it did).

Filling the index (``SparkFill``, the way autofaiss does it): an inverted-file index is trained
once on the driver, on a sample; a task per shard adds that shard's vectors to a copy of the
trained index and writes it; the driver moves the parts' inverted lists into one index in shard
order (``merge_from``), so its lists are those a local fill makes. An on-disk index
(``--ondisk``) is filled the same way and its parts' lists merged into the on-disk file by FAISS's
``merge_ondisk``, so the lists never sit in the driver's memory. Other kinds (exact scans, the
re-ranked fast-scan, binary codes) are filled on the driver: there is no encoding to spread.
The parts are written beside the index being built: on a cluster that is storage every executor
reaches (as the embeddings directory is).

Threads: a task computes on ``spark.task.cpus`` threads (1 by default, so ``local[N]`` runs N
tasks on N cores without oversubscribing them). GPUs: with ``spark.task.resource.gpu.amount`` set,
a task embeds on the GPU that Spark assigned it (``TaskContext.resources()["gpu"].addresses``), not
on GPU 0.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from indexing.embed import SPEC, EmbeddingSpec, PrefixShards, ShardDir, shard_name, truncate
from mmssl.console import get_logger
from mmssl.io import atomic_file

log = get_logger("index.spark")
FAULT_ENV = "MMSSL_SPARK_FAULT"
_MODELS: dict[tuple[str, str], object] = {}  # per Python worker: a model is loaded once, not per task


def collection_parts(data: str | Path) -> list[Path]:
    """The files of a collection, one Spark task each (see the module docstring)."""
    from mmssl.data.code_search import shard_files

    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_file():
        return [path]
    tars = sorted(path.glob("*.tar"))
    if tars:
        return tars
    if any((path / name).is_file() for name in ("metadata.jsonl", "metadata.csv", "dataset_info.json")):
        return [path]  # an image folder with its metadata (or a saved dataset): read whole
    return shard_files(path)


@dataclass(frozen=True)
class PartTask:
    """What one Spark task embeds and where it writes (pickled to the executor)."""

    part: int
    source: str
    model: str
    model_sha256: str
    modality: str
    text_field: str | None
    partition: str | None
    out: str
    batch_size: int = 128
    dtype: str = "float32"

    def stamp(self) -> dict:
        """The settings a finished part was made with (its ``part.json`` without the count)."""
        return {k: v for k, v in asdict(self).items() if k not in ("out", "batch_size", "part")}


def part_done(task: PartTask) -> dict | None:
    """The ``part.json`` of a finished part made with ``task``'s settings, or None."""
    marker = Path(task.out) / f"{shard_name(task.part)}.part.json"
    if not marker.is_file():
        return None
    try:
        done = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return None
    return done if {k: done.get(k) for k in task.stamp()} == task.stamp() else None


def _device() -> str:
    """The GPU Spark assigned this task (its task resources), else the CPU."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    gpus = ctx.resources().get("gpu") if ctx is not None else None
    return f"cuda:{gpus.addresses[0]}" if gpus is not None and gpus.addresses else "cpu"


def _model(path: str, device: str):
    """The model on this task's device, computing on the task's CPUs (``spark.task.cpus``, 1 by default)."""
    from pyspark import TaskContext

    from mmssl.export.onnx_encoder import load_encoder

    ctx = TaskContext.get()
    cpus = ctx.cpus() if ctx is not None else None
    if (path, device) not in _MODELS:
        _MODELS[(path, device)] = load_encoder(path, device, threads=cpus)
    return _MODELS[(path, device)]


def _fault_now(part: int) -> bool:
    """Whether this attempt at ``part`` is the one ``MMSSL_SPARK_FAULT`` kills (the first)."""
    which, _, flag = os.environ.get(FAULT_ENV, "").partition(":")
    if which != str(part) or not flag or Path(flag).exists():
        return False
    Path(flag).write_text(f"part {part} killed once\n")
    return True


def _save(path: Path, write) -> None:
    with atomic_file(path) as f:
        write(f)


def embed_part(task: PartTask) -> dict:
    """Embed one part into its shard files (skipped when already finished); its ``part.json``."""
    from indexing.embed import embed_texts, read_items

    done = part_done(task)
    if done is not None:
        return {**done, "skipped": True}
    out, base = Path(task.out), shard_name(task.part)
    started = time.perf_counter()
    model = _model(task.model, _device())
    loaded = time.perf_counter()
    collection = read_items(model, task.source, task.modality, task.text_field, task.partition)
    x = embed_texts(model, task.modality, collection.items, task.batch_size).astype(task.dtype)
    embedded = time.perf_counter()
    _save(out / f"{base}.npy", lambda f: np.save(f, x))
    fail_at = len(x) // 2 if _fault_now(task.part) else -1
    queries = collection.queries or [None] * len(collection.texts)

    def items(f) -> None:
        with gzip.open(f, "wt", encoding="utf-8") as z:
            for i, (text, payload, query) in enumerate(zip(collection.texts, collection.payloads, queries)):
                if i == fail_at:  # the fault test: killed half way through the shard's last file
                    z.flush()
                    os._exit(1)
                query = query if isinstance(query, str) else None  # image queries: tuning samples the items
                z.write(json.dumps({"text": text, "payload": payload, "query": query}, ensure_ascii=False) + "\n")

    _save(out / f"{base}.items.jsonl.gz", items)
    seconds = {"load": loaded - started, "embed": embedded - loaded, "write": time.perf_counter() - embedded}
    record = {**task.stamp(), "count": len(x), "dim": int(x.shape[1]), "available": collection.available,
              "seconds": {k: round(v, 3) for k, v in seconds.items()}}  # fmt: skip
    _save(out / f"{base}.part.json", lambda f: f.write(json.dumps(record, indent=2).encode()))
    return {**record, "skipped": False}


def spark_session(master: str | None, app: str = "mmssl"):
    """(the SparkSession, whether it was made here): the active one (``spark-submit``, a notebook), or
    a new one on ``master`` (``local[N]``, ``local[N,F]``, ``spark://HOST:PORT``, ``yarn``; None: ``local[*]``)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise RuntimeError("--engine spark needs pyspark and a Java runtime: pip install 'mmssl[spark]'") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    builder = SparkSession.builder.appName(app).config("spark.ui.showConsoleProgress", "false")
    builder = builder.master(master or "local[*]")
    if (master or "local").startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the workers run this environment
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session, True


@dataclass(frozen=True)
class SparkEmbedding:
    """A finished Spark embedding: its directory (a ``ShardDir``), every item's text, payload and
    query in id order, and how many parts were embedded now (the others were finished before)."""

    path: Path
    texts: list[str]
    payloads: list[dict]
    queries: list | None
    embedded_parts: int
    available: int


def embed_on_spark(
    model_path: str,
    data: str,
    out_dir: str | Path,
    *,
    modality: str,
    model_sha256: str,
    text_field: str | None = None,
    partition: str | None = None,
    master: str | None = None,
    batch_size: int = 128,
    dtype: str = "float32",
) -> SparkEmbedding:
    """Embed ``data`` on Spark into ``out_dir`` (resumable: finished parts are skipped), in the active
    Spark session or one made on ``master`` for this call."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = collection_parts(data)
    tasks = [
        PartTask(i, str(p.resolve()), str(Path(model_path).resolve()), model_sha256, modality, text_field, partition,
                 str(out.resolve()), batch_size, dtype)
        for i, p in enumerate(parts)
    ]  # fmt: skip
    todo = [t for t in tasks if part_done(t) is None]
    log.info("%d part(s), %d to embed (%d finished before)", len(tasks), len(todo), len(tasks) - len(todo))
    if todo:
        session, own = spark_session(master)
        try:
            rdd = session.sparkContext.parallelize(todo, len(todo))
            rdd.map(embed_part).collect()
        finally:
            if own:
                session.stop()
    return finish(out, tasks, len(todo))


def finish(out: Path, tasks: Sequence[PartTask], embedded: int) -> SparkEmbedding:
    """Number the finished parts' items, write their id files and ``embeddings.json``; read their items."""
    records = []
    for t in tasks:
        done = part_done(t)
        if done is None:
            raise RuntimeError(f"{out / shard_name(t.part)}: part {t.part} ({t.source}) did not finish")
        records.append(done)
    counts = [r["count"] for r in records]
    if not sum(counts):
        raise ValueError(f"{tasks[0].source if tasks else out}: nothing to embed: the collection is empty")
    texts, payloads, queries, start = [], [], [], 0
    for t, n in zip(tasks, counts):
        base = out / shard_name(t.part)
        with atomic_file(Path(f"{base}.ids.npy")) as f:
            np.save(f, np.arange(start, start + n, dtype=np.int64))
        with gzip.open(f"{base}.items.jsonl.gz", "rt", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                texts.append(row["text"])
                payloads.append(row["payload"])
                queries.append(row["query"])
        start += n
    first = records[0]
    spec = EmbeddingSpec(first["model_sha256"], first["modality"], first["dim"], first["dtype"], max(counts),
                         sum(counts), content_sha256="", counts=tuple(counts))  # fmt: skip
    with atomic_file(out / SPEC, "w") as f:
        f.write(json.dumps(asdict(spec), indent=2) + "\n")
    has_queries = any(q is not None for q in queries)
    available = sum(r.get("available", r["count"]) for r in records)
    return SparkEmbedding(out, texts, payloads, queries if has_queries else None, embedded, available)


def _fill_part(job: tuple[str, str, int | None, int, str]) -> str:
    """Add shard ``i`` of the embeddings directory (cut to ``dim``: a Matryoshka prefix) to a copy of
    the trained index; the part's file (a task)."""
    from indexing.build import fill_part

    trained, shards_dir, dim, i, out = job
    ids, x = ShardDir(shards_dir).shard(i)
    return str(fill_part(Path(trained), ids, truncate(x, dim) if dim else x, Path(out)))


def _spread_source(shards) -> tuple[ShardDir, int | None] | None:
    """(the embeddings directory, the prefix ``dim`` or None) tasks can read ``shards`` from, a shard
    each; None for vectors only this process holds, or a single shard (nothing to spread)."""
    if isinstance(shards, ShardDir):
        source = shards, None
    elif isinstance(shards, PrefixShards):
        source = shards.shards, shards.dim
    else:
        return None
    return source if source[0].spec.n_shards >= 2 else None


@dataclass(frozen=True)
class SparkFill:
    """An ``indexing.build.Filler`` that fills a shard per Spark task (the module docstring), in the
    active Spark session or one made on ``master``; ``workdir`` must be on storage the executors share."""

    workdir: Path
    master: str | None = None

    def fill_parts(self, trained: Path, shards, workdir: Path) -> list[Path]:
        from indexing.build import LocalFill

        source = _spread_source(shards)
        if source is None:
            return LocalFill().fill_parts(trained, shards, workdir)
        shard_dir, dim = source
        jobs = [(str(trained), str(shard_dir.path), dim, i, str(workdir / f"part-{i:05d}.faiss"))
                for i in range(shard_dir.spec.n_shards)]  # fmt: skip
        session, own = spark_session(self.master)
        try:
            parts = session.sparkContext.parallelize(jobs, len(jobs)).map(_fill_part).collect()
        finally:
            if own:
                session.stop()
        log.info("filled %d shards on Spark", len(parts))
        return [Path(p) for p in parts]

    def fill(self, index, shards) -> None:
        import tempfile

        import faiss

        from indexing.build import fill_index, is_binary, refine_of

        ivf = None if is_binary(index) or refine_of(index) is not None else faiss.try_extract_index_ivf(index)
        if ivf is None or _spread_source(shards) is None:
            # an exact scan, binary codes, a re-ranked fast-scan: nothing to encode; or nothing to spread
            fill_index(index, shards)
            return
        work = Path(tempfile.mkdtemp(prefix="fill-", dir=self.workdir))
        trained = work / "trained.faiss"
        faiss.write_index(index, str(trained))
        parts = self.fill_parts(trained, shards, work)
        for path in parts:  # in shard order: the lists a local fill makes
            part = faiss.read_index(str(path))
            index.merge_from(part, 0)
            del part
            path.unlink()
        trained.unlink()
        work.rmdir()
        log.info("filled %s from %d shards", type(ivf).__name__, len(parts))
