"""Write an index directory (layout in ``indexing.store``): ``build_index_dir`` trains and fills the FAISS index
from embedding shards, tunes its search parameters to a target recall, stores the items' texts and
payloads (SQLite) and BM25, and writes the manifest, atomically (``check_target``: never over an
index without ``overwrite``; over one, holding its write lock, ``indexing.lock``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from indexing.build import Filler, Shards, as_float32_matrix, as_ids, build_in_memory, build_ondisk
from indexing.lexical import LexicalIndex
from indexing.lock import write_lock
from indexing.plan import choose_index
from indexing.store import (
    INDEX_FILE,
    LEXICAL_DIR,
    MANIFEST,
    META_FILE,
    ONDISK_FILE,
    Manifest,
    MetadataStore,
    now,
    record_files,
    write_index_file,
)
from indexing.tune import Tuning, exact_neighbours, tune
from mmssl.console import get_logger
from mmssl.io import atomic_dir, check_output, model_fingerprint

log = get_logger("index")


def _versions() -> dict[str, str]:
    import faiss

    from mmssl import __version__

    return {"mmssl": __version__, "faiss": faiss.__version__}


def check_target(out: Path, overwrite: bool) -> None:
    """Refuse to replace a directory that is not an index, or an index unless ``overwrite`` (the
    rule of every command that writes: ``mmssl.io.check_output``)."""
    check_output(out, overwrite, "an index", (MANIFEST,))


def build_index_dir(
    out: str | Path,
    shards: Shards,
    items: tuple[Sequence[int], Sequence[str], Sequence[dict]] | None = None,
    *,
    memory_budget: int | None = None,
    index_type: str = "auto",
    factory: str | None = None,
    opq: bool = False,
    ondisk: bool = False,
    embedding_dtype: str = "auto",
    target_recall: float = 0.95,
    tune_queries: np.ndarray | Callable[[], np.ndarray | None] | None = None,
    n_tune: int = 1000,
    lexical: bool = False,
    model_path: str | None = None,
    model_sha256: str | None = None,
    modality: str | None = None,
    query_modality: str | None = None,
    collection: dict | None = None,
    embedding: dict | None = None,
    use_gpu: bool | None = None,
    overwrite: bool = False,
    seed: int = 0,
    filler: Filler | None = None,
) -> Manifest:
    """Choose, build, tune and write an index directory for ``shards`` (atomically).

    ``items`` = (ids, texts, payloads) fills the metadata store (ids must be the shards' ids);
    ``tune_queries`` (Q, D) are the held-out queries the search parameters are tuned on, or a
    function that embeds them, called only when there is something to tune (not for an exact
    float scan); default: a sample of the collection's own vectors. ``filler`` fills the trained
    index (default ``indexing.build.LocalFill``; ``indexing.spark.SparkFill``: a shard per Spark
    task). Returns the manifest written.
    """
    out = Path(out)
    check_target(out, overwrite)
    if not 0 < target_recall <= 1:
        raise ValueError(f"target recall must be in (0, 1], got {target_recall}")
    if lexical and items is None:
        raise ValueError("a lexical index needs the items' text")
    if model_path and not model_sha256:
        model_sha256 = model_fingerprint(model_path)
    with contextlib.ExitStack() as held:
        if (out / MANIFEST).is_file():  # over an index: an add or remove meanwhile fails instead of vanishing
            held.enter_context(write_lock(out))  # taken first: a busy index is refused before any work
        plan = choose_index(
            shards.count,
            shards.dim,
            memory_budget,
            index_type=index_type,
            factory=factory,
            opq=opq,
            ondisk=ondisk,
            embedding_dtype=embedding_dtype,
        )
        log.info("index for %s vectors of dim %d: %s (%s)", f"{shards.count:,}", shards.dim, plan.factory, plan.reason)
        started = time.perf_counter()
        with atomic_dir(out) as tmp:
            if plan.ondisk:
                index = build_ondisk(plan, shards, tmp, tmp / ONDISK_FILE, seed=seed, filler=filler)
            else:
                index = build_in_memory(plan, shards, use_gpu=use_gpu, seed=seed, workdir=tmp, filler=filler)
            if index.ntotal != shards.count:
                raise RuntimeError(f"index holds {index.ntotal} vectors, expected {shards.count}")
            exact = plan.index_type == "flat" and plan.embedding_dtype == "float32"  # nothing to measure
            reference = None if exact else _tune_reference(shards, tune_queries, n_tune, seed)
            tuning = tune(index, *reference, target_recall) if reference else Tuning(target=target_recall)
            if not tuning.reached and plan.index_type == "ivf_fastscan" and index_type == "auto" and not factory:
                # 4-bit codes too coarse for this data even with 64 x K candidates re-ranked: the
                # exact vectors fit, so scan them instead (slower, but it reaches the target)
                log.warning("%s: recall@10 %.3f at best; building IVF-Flat instead", plan.factory, tuning.recall)
                plan = replace(
                    choose_index(shards.count, shards.dim, memory_budget, index_type="ivf_flat"),
                    reason=f"fast-scan codes reached recall@10 {tuning.recall:.3f} < {target_recall}: exact vectors",
                )
                del index
                index = build_in_memory(plan, shards, use_gpu=use_gpu, seed=seed, filler=filler)
                tuning = tune(index, *reference, target_recall)
            if not tuning.reached:
                log.warning(
                    "%s reaches recall@10 %.3f at best (target %.2f): more memory (exact vectors) would be needed",
                    plan.factory,
                    tuning.recall,
                    target_recall,
                )
            build_seconds = time.perf_counter() - started
            names = [*write_index_file(index, tmp / INDEX_FILE), META_FILE] + ([ONDISK_FILE] if plan.ondisk else [])
            shard_ids = shards.all_ids()
            next_id = int(shard_ids.max()) + 1
            with MetadataStore(tmp / META_FILE) as store:
                if items is not None:
                    ids, texts, payloads = items
                    ids = as_ids(ids, len(texts))
                    if len(shard_ids) != len(ids) or not np.array_equal(np.sort(shard_ids), np.sort(ids)):
                        raise ValueError("the items' ids are not the embeddings' ids")
                    store.insert(ids, texts, payloads)
            lex_info = None
            if lexical:
                LexicalIndex.build(items[0], items[1]).save(tmp / LEXICAL_DIR)
                names.append(LEXICAL_DIR)
                lex_info = _lexical_info()
            manifest = Manifest(
                dim=shards.dim,
                count=int(index.ntotal),
                index_type=plan.index_type,
                factory=plan.factory,
                embedding_dtype=plan.embedding_dtype,
                search_params=tuning.params,
                tuning={**tuning.to_dict(), "build_seconds": round(build_seconds, 2), "reason": plan.reason},
                ondisk=plan.ondisk,
                model_path=str(Path(model_path).resolve()) if model_path else None,
                model_sha256=model_sha256,
                modality=modality,
                query_modality=query_modality,
                collection=collection or {},
                embedding=embedding or {},
                lexical=lex_info,
                files=record_files(tmp, names),
                next_id=next_id,
                created=now(),
                updated=now(),
                versions=_versions(),
            )
            (tmp / MANIFEST).write_text(manifest.to_json())
        log.info(
            "wrote %s: %s items, %s, %s", out, f"{manifest.count:,}", plan.factory, tuning.params or "exact search"
        )
    return manifest


def _lexical_info() -> dict:
    from mmssl.bm25 import K1, B

    return {"library": "bm25s", "method": "lucene", "k1": K1, "b": B, "tokenizer": "mmssl.bm25.code_search_tokens"}


def _tune_reference(shards: Shards, xq, n_tune: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out queries (Q, D), their exact top-10 ids over the collection (Q, 10)) for ``tune``."""
    xq = xq() if callable(xq) else xq
    xq = shards.sample(n_tune, seed + 1) if xq is None else as_float32_matrix(xq, "tune queries")
    if xq.shape[1] != shards.dim:
        raise ValueError(f"tune queries have dim {xq.shape[1]}, the collection {shards.dim}")
    return xq, exact_neighbours(xq, shards, 10)
