"""Choosing, building and tuning a FAISS index, in the manner of autofaiss.

Shape legend: N database vectors (xb), Q queries (xq), D dimension, K neighbours.

The choice (``indexing.plan.choose_index``) from the collection size N, the dimension D and a memory budget:
1. N below ``flat_max`` (20,000): exact search, ``IDMap2,Flat``. Nothing to train or tune, and at
   this size a brute-force scan is a few milliseconds per query.
2. Otherwise an inverted file with ``nlist`` ~ 2 sqrt(N) lists (a power of two), trained by
   k-means on a sample. When the exact vectors fit the budget: ``IVF{nlist},PQ{D/2}x4fs,RFlat``
   ("ivf_fastscan"): each list holds 4-bit PQ codes that FAISS scans with SIMD in-register lookup
   tables (fast-scan), and the ``k_factor`` x K best candidates are re-ranked with the exact vectors
   kept beside them. It costs D/4 + 8 bytes a vector more than ``IVF{nlist},Flat`` (7 % at D = 256)
   and, on 1M x 256 on 2 cores, searched 14.6x as many queries/s at the same recall@10 (0.95;
   benchmarks/RESULTS.md): an IVF-Flat scan reads 1 KiB per candidate from memory, a fast-scan one
   64 bytes. ``IVF{nlist},Flat`` remains one ``index_type`` away (GPU search, on-disk lists).
3. When the exact vectors do not fit, ``IVF{nlist},PQ{m}np`` with the largest number of 8-bit sub-quantizers m that
   fits (m divides D; m bytes per vector), optionally behind an OPQ rotation (``opq=True``).
4. When not even the smallest PQ code fits, or ``ondisk=True``: the inverted lists go to disk
   (``IVF{nlist},Flat`` filled shard by shard and merged with FAISS's ``merge_ondisk``), and only
   the coarse centroids stay in memory; the lists are memory-mapped at search time.
HNSW (``HNSW32,Flat``) is never chosen automatically (its build is slow on few cores and it
cannot remove items) but is one ``index_type`` away; any FAISS factory string is accepted too.
Indexes that cannot drop items (HNSW, the re-ranked fast-scan) keep removed ids as tombstones
that search excludes (``supports_remove``).

Search parameters and their tuning to a target recall are ``indexing.tune``.

Why written here rather than with autofaiss: autofaiss (the peer) pins old faiss-cpu releases and
would replace the faiss-gpu wheel this project depends on; its rules are a page of code, and this
version plugs into the project's shard format, id handling and manifest.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from indexing.plan import IndexPlan
from mmssl.console import get_logger, progress

log = get_logger("index")


class Shards(Protocol):
    """Embeddings with their ids, in pieces that each fit in memory."""

    dim: int
    count: int

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # (ids (n,) int64, x (n, D) float32)
        ...

    def sample(self, m: int, seed: int = 0) -> np.ndarray:  # (min(m, N), D) float32, uniform rows
        ...

    def all_ids(self) -> np.ndarray:  # (N,) int64, in shard order, without reading the vectors
        ...


def sample_rows(count: int, m: int, seed: int = 0) -> np.ndarray:
    """The sorted positions of a seeded uniform ``m`` of ``count`` rows (a ``Shards.sample``'s rows)."""
    return np.sort(np.random.default_rng(seed).choice(count, m, replace=False))


class ArrayShards:
    """In-memory vectors as ``Shards`` (``shard_size`` rows at a time)."""

    def __init__(self, x: np.ndarray, ids: np.ndarray | None = None, shard_size: int = 100_000) -> None:
        self.x = as_float32_matrix(x, "x")
        self.ids = np.arange(len(x), dtype=np.int64) if ids is None else as_ids(ids, len(x))
        self.count, self.dim = self.x.shape
        self.shard_size = shard_size

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, self.count, self.shard_size):
            yield self.ids[start : start + self.shard_size], self.x[start : start + self.shard_size]

    def all_ids(self) -> np.ndarray:
        return self.ids

    def sample(self, m: int, seed: int = 0) -> np.ndarray:
        if m >= self.count:
            return self.x
        return self.x[sample_rows(self.count, m, seed)]


def as_float32_matrix(x: Any, name: str) -> np.ndarray:
    """``x`` as a C-contiguous float32 (N, D) matrix of finite values, or a ValueError naming ``name``.

    Cheap on the query path (a few numpy calls): a search of one query takes 0.1-1 ms.
    """
    if not (type(x) is np.ndarray and x.dtype == np.float32 and x.ndim == 2 and x.flags.c_contiguous):
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"{name}: expected a (N, D) matrix, got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{name}: expected floating-point vectors, got {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[1] == 0:
        raise ValueError(f"{name}: expected a (N, D) matrix, got shape {x.shape}")
    if not np.isfinite(x.sum()):  # NaN and inf propagate to the sum (a finite overflow is checked below)
        bad = np.argwhere(~np.isfinite(x))
        if len(bad):
            raise ValueError(f"{name}: row {int(bad[0][0])} holds NaN or inf")
    return x


def as_ids(ids: Any, n: int) -> np.ndarray:
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} vectors")
    if len(np.unique(ids)) != n:
        raise ValueError("ids must be unique")
    if n and ids.min() < 0:
        raise ValueError("ids must be non-negative")
    return ids


# ---- building ------------------------------------------------------------------------------------


def metric():
    import faiss

    return faiss.METRIC_INNER_PRODUCT


def new_index(plan: IndexPlan, d: int, workdir: Path | None = None):
    """An empty (untrained) CPU index for the plan; ids are the caller's (add_with_ids). A binary
    plan's float vectors for rescoring are written under ``workdir`` (``indexing.binary``)."""
    import faiss

    if plan.embedding_dtype == "binary":
        from indexing.binary import BinaryIndex

        return BinaryIndex.new(d, plan.nlist, workdir)
    try:
        index = faiss.index_factory(d, plan.factory, metric())
    except RuntimeError as e:
        raise ValueError(f"FAISS factory string {plan.factory!r}: {str(e).strip().splitlines()[-1]}") from None
    if faiss.try_extract_index_ivf(index) is None or isinstance(index, faiss.IndexRefine):
        index = faiss.IndexIDMap2(index)  # flat / HNSW / re-ranked: ids through a map (IVF stores them)
    return index


def refine_of(index):
    """The ``IndexRefine`` inside an ``IDMap2`` (the ivf_fastscan layout), or None."""
    import faiss

    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexRefine):
            return inner
    return None


def hnsw_of(index):
    """The ``IndexHNSW`` of an index (itself, or inside an ``IDMap2``), or None."""
    import faiss

    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def is_binary(index) -> bool:
    """A binary index with float rescoring (``indexing.binary``), not a FAISS ``Index``."""
    from indexing.binary import BinaryIndex

    return isinstance(index, BinaryIndex)


def try_ivf(index):
    """The IVF index inside a FAISS index (``faiss.try_extract_index_ivf``), or None (also for a binary one)."""
    import faiss

    return None if is_binary(index) else faiss.try_extract_index_ivf(index)


def supports_remove(index) -> bool:
    """Whether FAISS can drop items from this index (else removed ids become tombstones)."""
    return not is_binary(index) and hnsw_of(index) is None and refine_of(index) is None


def gpu_count() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def train_index(index, plan: IndexPlan, shards: Shards, *, use_gpu: bool, seed: int = 0) -> float:
    """Train on a uniform sample of ``plan.train_size`` vectors; returns seconds spent."""
    if index.is_trained:
        return 0.0
    import faiss

    start = time.perf_counter()
    xt = shards.sample(max(plan.train_size, 1), seed)
    ivf = try_ivf(index)
    if ivf is not None:
        ivf.cp.seed = seed
    if is_binary(index) and index.ivf is not None:
        index.ivf.cp.seed = seed
    if use_gpu and ivf is not None:
        # Train the coarse quantizer's k-means on the GPU (the expensive part); codes stay CPU-side.
        clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(ivf.d))
        ivf.clustering_index = clustering_index
    log.info("training %s on %s vectors", plan.factory, f"{len(xt):,}")
    index.train(xt)
    if ivf is not None:
        ivf.clustering_index = None
    return time.perf_counter() - start


ADD_GROUP_BYTES = 1 << 30  # vectors handed to FAISS per add call


def grouped(shards: Iterable[tuple[np.ndarray, np.ndarray]], max_bytes: int = ADD_GROUP_BYTES):
    """Consecutive shards joined into groups of up to ``max_bytes`` of vectors.

    Fewer, larger add calls: a fast-scan list packs 32 codes to a block, and every add that starts
    mid-block packs its codes one by one (13 % of the build time at 1M x 256 with 10 adds).
    """
    group: list[tuple[np.ndarray, np.ndarray]] = []
    size = 0
    for ids, x in shards:
        if group and size + x.nbytes > max_bytes:
            yield _joined(group)
            group, size = [], 0
        group.append((ids, x))
        size += x.nbytes
    if group:
        yield _joined(group)


def _joined(group: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One (ids, x) of several; a single shard as it is, without a copy."""
    if len(group) == 1:
        return group[0]
    return np.concatenate([ids for ids, _ in group]), np.concatenate([x for _, x in group])


def fill_index(index, shards: Iterable[tuple[np.ndarray, np.ndarray]], total: int | None = None) -> None:
    """Add every shard's vectors with their ids (grouped: see ``grouped``)."""
    for ids, x in progress(grouped(shards), total=total, description="adding"):
        index.add_with_ids(np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))


def fill_part(trained: Path, ids: np.ndarray, x: np.ndarray, out: Path) -> Path:
    """A copy of the trained index in ``trained`` holding (ids, x), written to ``out`` (atomically)."""
    import faiss

    from mmssl.io import atomic_file

    part = faiss.read_index(str(trained))
    part.add_with_ids(np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    with atomic_file(out) as f:
        f.write(faiss.serialize_index(part).tobytes())
    return out


class Filler(Protocol):
    """How a trained index gets its vectors: in place (``fill``), or as one filled copy of the trained
    index per shard (``fill_parts``, in shard order) whose lists an on-disk build merges.
    ``LocalFill`` here; ``indexing.spark.SparkFill`` fills a shard per Spark task."""

    def fill(self, index, shards: Shards) -> None: ...

    def fill_parts(self, trained: Path, shards: Shards, workdir: Path) -> list[Path]: ...


class LocalFill:
    """Filling in this process, a shard at a time."""

    def fill(self, index, shards: Shards) -> None:
        fill_index(index, shards)

    def fill_parts(self, trained: Path, shards: Shards, workdir: Path) -> list[Path]:
        return [
            fill_part(trained, ids, x, workdir / f"part-{i:05d}.faiss")
            for i, (ids, x) in enumerate(progress(shards, description="filling shards"))
        ]


def enable_id_lookup(index) -> None:
    """Make ``reconstruct(id)`` work on IVF indexes (a hash-table direct map; flat/HNSW use IDMap2).

    Done on a loaded index the first time a filter needs it, not at build time: the map costs build
    time and memory (about 16 bytes an item) that unfiltered search never uses.
    """
    import faiss

    if isinstance(index, faiss.IndexIDMap2) or is_binary(index):  # looks ids up itself
        return
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and ivf.direct_map.type != faiss.DirectMap.Hashtable:
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)


def build_in_memory(
    plan: IndexPlan,
    shards: Shards,
    *,
    use_gpu: bool | None = None,
    seed: int = 0,
    workdir: Path | None = None,
    filler: Filler | None = None,
):
    """Train and fill a CPU index for ``plan`` (on the GPU when FAISS sees one and the index allows);
    ``workdir``: where a binary index writes its float vectors (the directory being built); ``filler``:
    how it is filled on the CPU (default ``LocalFill``; ``indexing.spark.SparkFill``: per partition)."""
    import faiss

    use_gpu = gpu_count() > 0 if use_gpu is None else use_gpu
    index = new_index(plan, shards.dim, workdir)
    train_index(index, plan, shards, use_gpu=use_gpu, seed=seed)
    if use_gpu and plan.embedding_dtype == "float32" and plan.index_type in ("ivf_flat", "ivf_pq", "flat"):
        try:
            gpu = faiss.index_cpu_to_all_gpus(index)
        except RuntimeError as e:  # e.g. a PQ size the GPU kernels do not support
            log.warning("building on the CPU: the GPU cannot hold %s (%s)", plan.factory, e)
        else:
            fill_index(gpu, shards)
            return faiss.index_gpu_to_cpu(gpu)
    (filler or LocalFill()).fill(index, shards)
    return index


def build_ondisk(
    plan: IndexPlan, shards: Shards, workdir: Path, ondisk_path: Path, *, seed: int = 0, filler: Filler | None = None
):
    """Train once, fill one small index per shard (``filler.fill_parts``), merge their inverted lists
    into ``ondisk_path``.

    Memory: the training sample and one shard at a time; the merged lists never sit in RAM.
    """
    import faiss
    from faiss.contrib.ondisk import merge_ondisk

    trained = new_index(plan, shards.dim)
    train_index(trained, plan, shards, use_gpu=gpu_count() > 0, seed=seed)
    trained_path = workdir / "trained.faiss"
    faiss.write_index(trained, str(trained_path))
    del trained
    parts = (filler or LocalFill()).fill_parts(trained_path, shards, workdir)
    index = faiss.read_index(str(trained_path))
    merge_ondisk(index, [str(p) for p in parts], str(ondisk_path))
    for p in [*parts, trained_path]:
        Path(p).unlink()
    return index
