"""Build, load, search and update an index directory (layout in ``indexing.store``).

Shape legend: N items, Q queries, K results, D embedding size.

    from indexing import build_index_dir, SearchIndex
    build_index_dir("runs/idx", ArrayShards(xb, ids), items=(ids, texts, payloads), model_path="runs/model")
    index = SearchIndex.load("runs/idx")
    hits = index.search(["read a csv file"], k=10, mode="hybrid", where={"repo": "pandas"})

Dense search embeds queries with the model recorded in the manifest (its hash is checked first).
Filtered search (``where`` on payload fields, or ``ids``): a filter that keeps at most
``EXACT_FILTER_MAX`` items is answered exactly, by scoring the kept items' vectors (reconstructed
from the index); a wider one goes through FAISS's ``IDSelector`` on the CPU index, since FAISS
ignores selectors on GPU indexes. Adding and removing items is ``indexing.update``; the ids an
index cannot drop (tombstones: HNSW, fast-scan) are excluded here at search time.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from indexing.build import (
    Shards,
    as_float32_matrix,
    as_ids,
    build_in_memory,
    build_ondisk,
    choose_index,
    enable_id_lookup,
    gpu_count,
)
from indexing.lexical import LexicalIndex, reciprocal_rank_fusion
from indexing.store import (
    INDEX_FILE,
    LEXICAL_DIR,
    MANIFEST,
    META_FILE,
    ONDISK_FILE,
    IndexDirError,
    Manifest,
    MetadataStore,
    check_files,
    model_fingerprint,
    now,
    read_index_file,
    record_files,
    write_index_file,
)
from indexing.tune import Tuning, exact_neighbours, search_parameters, tune
from mmssl.console import get_logger
from mmssl.io import atomic_dir

log = get_logger("index")
Mode = Literal["dense", "lexical", "hybrid"]
EXACT_FILTER_MAX = 65_536
FUSION_DEPTH = 100  # candidates each side contributes to hybrid fusion


@dataclass(frozen=True)
class Hit:
    rank: int
    id: int
    score: float
    text: str
    payload: dict[str, Any]

    def to_dict(self) -> dict:
        return {"rank": self.rank, "id": self.id, "score": self.score, "text": self.text, "payload": self.payload}


def _versions() -> dict[str, str]:
    import faiss

    from mmssl import __version__

    return {"mmssl": __version__, "faiss": faiss.__version__}


def check_target(out: Path, overwrite: bool) -> None:
    """Refuse to replace a directory that is not an index, or an index unless ``overwrite``."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    if (out / MANIFEST).is_file():
        if not overwrite:
            raise ValueError(f"{out}: an index is already there; pass overwrite (--overwrite) to replace it")
    elif any(out.iterdir()):
        raise ValueError(f"{out}: a non-empty directory that is not an index; choose another path")


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
    target_recall: float = 0.95,
    tune_queries: np.ndarray | None = None,
    n_tune: int = 1000,
    lexical: bool = False,
    model_path: str | None = None,
    model_sha256: str | None = None,
    modality: str | None = None,
    query_modality: str | None = None,
    use_gpu: bool | None = None,
    overwrite: bool = False,
    seed: int = 0,
) -> Manifest:
    """Choose, build, tune and write an index directory for ``shards`` (atomically).

    ``items`` = (ids, texts, payloads) fills the metadata store (ids must be the shards' ids);
    ``tune_queries`` (Q, D) are the held-out queries the search parameters are tuned on (default:
    a sample of the collection's own vectors). Returns the manifest written.
    """
    out = Path(out)
    check_target(out, overwrite)
    if not 0 < target_recall <= 1:
        raise ValueError(f"target recall must be in (0, 1], got {target_recall}")
    if lexical and items is None:
        raise ValueError("a lexical index needs the items' text")
    if model_path and not model_sha256:
        model_sha256 = model_fingerprint(model_path)
    plan = choose_index(
        shards.count, shards.dim, memory_budget, index_type=index_type, factory=factory, opq=opq, ondisk=ondisk
    )
    log.info("index for %s vectors of dim %d: %s (%s)", f"{shards.count:,}", shards.dim, plan.factory, plan.reason)
    started = time.perf_counter()
    with atomic_dir(out) as tmp:
        if plan.ondisk:
            index = build_ondisk(plan, shards, tmp, tmp / ONDISK_FILE, seed=seed)
        else:
            index = build_in_memory(plan, shards, use_gpu=use_gpu, seed=seed)
        if index.ntotal != shards.count:
            raise RuntimeError(f"index holds {index.ntotal} vectors, expected {shards.count}")
        reference = None if plan.index_type == "flat" else _tune_reference(shards, tune_queries, n_tune, seed)
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
            index = build_in_memory(plan, shards, use_gpu=use_gpu, seed=seed)
            tuning = tune(index, *reference, target_recall)
        if not tuning.reached:
            log.warning(
                "%s reaches recall@10 %.3f at best (target %.2f): more memory (exact vectors) would be needed",
                plan.factory,
                tuning.recall,
                target_recall,
            )
        build_seconds = time.perf_counter() - started
        write_index_file(index, tmp / INDEX_FILE)
        names = [INDEX_FILE, META_FILE] + ([ONDISK_FILE] if plan.ondisk else [])
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
            search_params=tuning.params,
            tuning={**tuning.to_dict(), "build_seconds": round(build_seconds, 2), "reason": plan.reason},
            ondisk=plan.ondisk,
            model_path=str(Path(model_path).resolve()) if model_path else None,
            model_sha256=model_sha256,
            modality=modality,
            query_modality=query_modality,
            lexical=lex_info,
            files=record_files(tmp, names),
            next_id=next_id,
            created=now(),
            updated=now(),
            versions=_versions(),
        )
        (tmp / MANIFEST).write_text(manifest.to_json())
    log.info("wrote %s: %s items, %s, %s", out, f"{manifest.count:,}", plan.factory, tuning.params or "exact search")
    return manifest


def _lexical_info() -> dict:
    from mmssl.bm25 import K1, B

    return {"library": "bm25s", "method": "lucene", "k1": K1, "b": B, "tokenizer": "mmssl.bm25.code_search_tokens"}


def _tune_reference(shards: Shards, xq, n_tune: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out queries (Q, D), their exact top-10 ids over the collection (Q, 10)) for ``tune``."""
    xq = shards.sample(n_tune, seed + 1) if xq is None else as_float32_matrix(xq, "tune queries")
    if xq.shape[1] != shards.dim:
        raise ValueError(f"tune queries have dim {xq.shape[1]}, the collection {shards.dim}")
    return xq, exact_neighbours(xq, shards, 10)


class SearchIndex:
    """A loaded index directory: dense, lexical and hybrid search."""

    def __init__(self, path: Path, manifest: Manifest, index, store: MetadataStore, lexical: LexicalIndex | None):
        self.path = path
        self.manifest = manifest
        self.index = index
        self.store = store
        self.lexical = lexical
        self._model = None
        self._gpu_index = None
        self._removed = self._tombstones()
        self._params = search_parameters(index, manifest.search_params)  # built once: per-query cost

    # ---- loading --------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True, use_gpu: bool | None = None) -> SearchIndex:
        """Open an index directory: manifest first, then each file checked against it."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such index directory")
        manifest = Manifest.from_file(path / MANIFEST)
        check_files(path, manifest, verify=verify)
        index = read_index_file(path / INDEX_FILE, manifest.ondisk)
        if index.d != manifest.dim:
            raise IndexDirError(f"{path / INDEX_FILE}: dimension {index.d}, {MANIFEST} says {manifest.dim}")
        if index.ntotal != manifest.count:
            raise IndexDirError(f"{path / INDEX_FILE}: {index.ntotal} vectors, {MANIFEST} says {manifest.count}")
        store = MetadataStore(path / META_FILE, readonly=True)
        lexical = LexicalIndex.load(path / LEXICAL_DIR) if manifest.lexical else None
        self = cls(path, manifest, index, store, lexical)
        use_gpu = gpu_count() > 0 if use_gpu is None else use_gpu
        if use_gpu and not manifest.ondisk and manifest.index_type in ("ivf_flat", "ivf_pq"):
            self._to_gpu()
        return self

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> SearchIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _to_gpu(self) -> None:
        import faiss

        try:
            gpu = faiss.index_cpu_to_all_gpus(self.index)
            _set_gpu_params(gpu, self.manifest.search_params)
        except RuntimeError as e:
            log.warning("searching on the CPU: %s", e)
        else:
            self._gpu_index = gpu

    def _tombstones(self) -> np.ndarray:
        try:
            rows = self.store.conn.execute("SELECT id FROM removed").fetchall()
        except sqlite3.OperationalError:  # no such table: nothing removed
            return np.zeros(0, dtype=np.int64)
        return np.array([r[0] for r in rows], dtype=np.int64)

    def __len__(self) -> int:
        return self.manifest.count - len(self._removed)

    # ---- the model ------------------------------------------------------------------------------

    def model(self, path: str | None = None, device: str = "cpu"):
        """The dual encoder that embeds queries: the manifest's model, checked by hash."""
        if self._model is None:
            from mmssl.models import DualEncoder

            path = path or self.manifest.model_path
            if not path:
                raise ValueError(f"{self.path}: the index records no model; search with vectors or mode=lexical")
            if self.manifest.model_sha256 and model_fingerprint(path) != self.manifest.model_sha256:
                raise IndexDirError(
                    f"{path}: not the model this index was built with ({MANIFEST} records another hash); "
                    "rebuild the index with this model"
                )
            model = DualEncoder.from_pretrained(path, device=device)
            if model.config.embed_dim != self.manifest.dim:
                raise IndexDirError(
                    f"{path}: embeds in dim {model.config.embed_dim}, the index holds {self.manifest.dim}"
                )
            self._model = model.eval()
        return self._model

    def embed_queries(self, queries: Sequence) -> np.ndarray:
        """Query texts, or images for an index whose queries are images (paths, bytes, PIL images)."""
        from indexing.embed import embed_texts

        model = self.model()
        modality = self.manifest.query_modality or model.config.modalities[0]
        return embed_texts(model, modality, list(queries))

    # ---- search ---------------------------------------------------------------------------------

    def search_vectors(
        self, xq: np.ndarray, k: int = 10, *, ids: Sequence[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores (Q, K), ids (Q, K)) by inner product; -1 ids pad rows with fewer than K results.

        ``ids``: search only among these item ids.
        """
        xq = as_float32_matrix(xq, "queries")
        if xq.shape[1] != self.manifest.dim:
            raise ValueError(f"queries have dim {xq.shape[1]}, the index {self.manifest.dim}")
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if ids is None and not len(self._removed):  # the common case: no selector to build
            if self._gpu_index is not None:
                return self._gpu_index.search(xq, k)
            return self.index.search(xq, k, params=self._params)
        import faiss

        if ids is not None:
            allowed = np.setdiff1d(np.asarray(ids, dtype=np.int64), self._removed)
            if len(allowed) <= EXACT_FILTER_MAX:
                exact = self._exact_among(xq, k, allowed)
                if exact is not None:
                    return exact
            selector = faiss.IDSelectorBatch(allowed)
            params = widened(self.manifest.search_params, self.index.ntotal / max(len(allowed), 1))
        else:
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(self._removed))
            params = self.manifest.search_params
        return self.index.search(xq, k, params=search_parameters(self.index, params, selector))

    def _exact_among(self, xq: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Exact top-K among ``allowed`` from reconstructed vectors; None if the index cannot reconstruct."""
        scores = np.full((len(xq), k), -np.inf, dtype=np.float32)
        found = np.full((len(xq), k), -1, dtype=np.int64)
        if len(allowed) == 0:
            return scores, found
        try:
            enable_id_lookup(self.index)
            vectors = self.index.reconstruct_batch(allowed)  # (M, D)
        except RuntimeError:
            return None
        sims = xq @ vectors.T  # (Q, M)
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        n = top.shape[1]
        scores[:, :n] = np.take_along_axis(sims, top, axis=1)
        found[:, :n] = allowed[top]
        return scores, found

    def filter_ids(self, where: dict[str, Any]) -> np.ndarray:
        return np.asarray(self.store.ids_where(where), dtype=np.int64)

    def search(
        self,
        queries: Sequence,
        k: int = 10,
        *,
        mode: Mode = "dense",
        where: dict[str, Any] | None = None,
        ids: Sequence[int] | None = None,
        fusion_depth: int = FUSION_DEPTH,
        lexical_weight: float = 1.0,
    ) -> list[list[Hit]]:
        """Ranked hits for each query (dense, lexical BM25, or both fused by RRF); queries are texts,
        or images (paths, bytes, PIL images) for an index of texts searched by image (dense only).

        ``lexical_weight``: BM25's weight in the fusion against the dense ranking's 1 (hybrid).
        """
        if mode not in ("dense", "lexical", "hybrid"):
            raise ValueError(f"mode {mode!r}: choose dense, lexical or hybrid")
        if lexical_weight < 0:
            raise ValueError(f"lexical weight must be >= 0, got {lexical_weight}")
        if mode != "dense" and self.manifest.query_modality == "image":
            raise ValueError(f"mode={mode}: image queries search by embedding only (mode=dense)")
        if mode != "dense" and self.lexical is None:
            raise ValueError(f"{self.path}: built without a lexical index (rebuild with --lexical) for mode={mode}")
        allowed = None
        if where:
            allowed = self.filter_ids(where)
        if ids is not None:
            ids = np.asarray(ids, dtype=np.int64)
            allowed = ids if allowed is None else np.intersect1d(allowed, ids)
        queries = list(queries)
        depth = max(k, fusion_depth) if mode == "hybrid" else k
        if mode in ("dense", "hybrid"):
            d_scores, d_ids = self.search_vectors(self.embed_queries(queries), depth, ids=allowed)
        if mode in ("lexical", "hybrid"):
            l_scores, l_ids = self.lexical.search(queries, depth, allowed=allowed)
        if mode == "dense":
            scores, found = d_scores[:, :k], d_ids[:, :k]
        elif mode == "lexical":
            scores, found = l_scores, l_ids
        else:
            scores, found = reciprocal_rank_fusion([d_ids, l_ids], k, weights=[1.0, lexical_weight])
        return self._hits(scores, found)

    def _hits(self, scores: np.ndarray, found: np.ndarray) -> list[list[Hit]]:
        meta = self.store.get([int(i) for i in np.unique(found) if i >= 0])
        out = []
        for row_s, row_i in zip(scores, found):
            hits = []
            for s, i in zip(row_s, row_i):
                if i < 0 or int(i) not in meta:
                    continue
                text, payload = meta[int(i)]
                hits.append(Hit(len(hits) + 1, int(i), float(s), text, payload))
            out.append(hits)
        return out

    # ---- about the index ------------------------------------------------------------------------

    def info(self) -> dict:
        m = self.manifest
        return {
            "path": str(self.path),
            "count": len(self),
            "dim": m.dim,
            "index_type": m.index_type,
            "factory": m.factory,
            "search_params": m.search_params,
            "tuning": m.tuning,
            "ondisk": m.ondisk,
            "model_path": m.model_path,
            "modality": m.modality,
            "query_modality": m.query_modality,
            "lexical": m.lexical is not None,
            "removed_tombstones": len(self._removed),
            "created": m.created,
            "updated": m.updated,
            "versions": m.versions,
            "bytes": sum(f.bytes for f in m.files.values()),
        }


def widened(params: dict[str, int], factor: float) -> dict[str, int]:
    """Search parameters for a filter that keeps 1/``factor`` of the items: FAISS filters inside the
    lists (or graph) it visits, so it visits ``factor`` times as many to find as many kept items
    as the tuned parameters find unfiltered (FAISS caps nprobe at nlist)."""
    out = dict(params)
    for name, cap in (("nprobe", 1 << 20), ("efSearch", 4096)):
        if name in out:
            out[name] = int(min(cap, math.ceil(out[name] * factor)))
    return out


def _set_gpu_params(index, params: dict[str, int]) -> None:
    import faiss

    ps = faiss.GpuParameterSpace()
    ps.initialize(index)
    for name, value in params.items():
        ps.set_index_parameter(index, name, value)
