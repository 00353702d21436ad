"""Load and search an index directory (``SearchIndex``; built by ``indexing.create``, layout in
``indexing.store``).

Shape legend: N items, Q queries, K results, D embedding size.

    from indexing import build_index_dir, SearchIndex
    build_index_dir("runs/idx", ArrayShards(xb, ids), items=(ids, texts, payloads), model_path="runs/model")
    index = SearchIndex.load("runs/idx")
    hits = index.search(["read a csv file"], k=10, mode="hybrid", where={"repo": "pandas"})

Loading checks the directory first (``indexing.verify``: cheap checks always, every file's sha256
with ``verify=True``). Dense search embeds queries with the model recorded in the manifest (its
hash is checked first).
Filtered search (``where`` on payload fields, or ``ids``): a filter that keeps at most
``EXACT_FILTER_MAX`` items is answered exactly, by scoring the kept items' vectors (reconstructed
from the index); a wider one goes through FAISS's ``IDSelector`` on the CPU index, since FAISS
ignores selectors on GPU indexes. Adding and removing items is ``indexing.update``; the ids an
index cannot drop (tombstones: HNSW, fast-scan) are excluded here at search time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from indexing.build import as_float32_matrix, enable_id_lookup, gpu_count, is_binary
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
    read_index_file,
)
from indexing.tune import search_parameters
from indexing.verify import check_files, check_index, check_manifest
from mmssl.console import get_logger
from mmssl.io import Closable

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


class SearchIndex(Closable):
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
    def load(cls, path: str | Path, *, verify: bool = False, use_gpu: bool | None = None) -> SearchIndex:
        """Open an index directory: manifest first, then each file checked against it, then what was
        read against both (``indexing.verify``); ``verify``: also every file's sha256."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such index directory")
        manifest = Manifest.from_file(path / MANIFEST)
        check_manifest(path, manifest)
        check_files(path, manifest, verify=verify)
        index = read_index_file(path / INDEX_FILE, manifest)
        store = MetadataStore(path / META_FILE, readonly=True)
        try:
            lexical = _load_lexical(path / LEXICAL_DIR) if manifest.lexical else None
            check_index(path, manifest, index, store, lexical)
        except BaseException:
            store.close()
            raise
        self = cls(path, manifest, index, store, lexical)
        use_gpu = gpu_count() > 0 if use_gpu is None else use_gpu
        gpu_kind = manifest.index_type in ("ivf_flat", "ivf_pq") and manifest.embedding_dtype == "float32"
        if use_gpu and not manifest.ondisk and gpu_kind:
            self._to_gpu()
        return self

    def close(self) -> None:
        self.store.close()

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
        return np.array(self.store.tombstones(), dtype=np.int64)

    def __len__(self) -> int:
        return self.manifest.count - len(self._removed)

    # ---- the model ------------------------------------------------------------------------------

    def model(self, path: str | None = None, device: str = "cpu"):
        """The encoder of queries: the manifest's model (or ``path``), checked by hash; an fp32 ONNX
        export of the index's model stands for it (equal to 1e-4: ``mmssl.export.onnx``)."""
        if self._model is None:
            from mmssl.export.onnx_encoder import load_encoder, same_model

            path = path or self.manifest.model_path
            if not path:
                raise ValueError(f"{self.path}: the index records no model; search with vectors or mode=lexical")
            if self.manifest.model_sha256 and not same_model(path, self.manifest.model_sha256):
                raise IndexDirError(
                    f"{path}: not the model this index was built with ({MANIFEST} records another hash); "
                    "rebuild the index with this model"
                )
            model = load_encoder(path, device)
            for name in ("modality", "query_modality"):
                value = getattr(self.manifest, name)
                if value is not None and value not in model.config.modalities:
                    raise IndexDirError(
                        f"{self.path / MANIFEST}: field {name!r} is {value!r}; the model embeds "
                        f"{' and '.join(model.config.modalities)}"
                    )
            indexed = self.manifest.embedding.get("model_dim", self.manifest.dim)  # a prefix: the model's size
            if model.config.embed_dim != indexed or self.manifest.dim > model.config.embed_dim:
                raise IndexDirError(
                    f"{path}: embeds in dim {model.config.embed_dim}, the index holds {self.manifest.dim}"
                    + (f" of {indexed}" if indexed != self.manifest.dim else "")
                )
            self._model = model
        return self._model

    def embed_queries(self, queries: Sequence) -> np.ndarray:
        """Query texts, or images for an index whose queries are images (paths, bytes, PIL images)."""
        model = self.model()
        return self.embed(self.manifest.query_modality or model.config.modalities[0], queries)

    def embed(self, modality: str, items: Sequence, batch_size: int = 128) -> np.ndarray:
        """Items embedded with the index's model, cut to the index's size (a Matryoshka prefix, L2-normalized
        again) when the model's embeddings are longer."""
        from indexing.embed import embed_texts
        from mmssl.matryoshka import truncate

        x = embed_texts(self.model(), modality, list(items), batch_size)
        return truncate(x, self.manifest.dim) if x.shape[1] > self.manifest.dim else x

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
        k = min(k, max(1, self.index.ntotal))  # FAISS allocates (Q, k): never more than the index holds
        if is_binary(self.index):
            return self._search_binary(xq, k, ids)
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

    def _search_binary(self, xq: np.ndarray, k: int, ids) -> tuple[np.ndarray, np.ndarray]:
        """A binary index filters its candidates itself (FAISS's binary indexes take no selector); a
        narrow filter is answered exactly from the float vectors, as for the other indexes."""
        allowed = None if ids is None else np.setdiff1d(np.asarray(ids, dtype=np.int64), self._removed)
        if allowed is not None and len(allowed) <= EXACT_FILTER_MAX:
            return self._exact_among(xq, k, allowed)
        return self.index.search(xq, k, self._params, allowed=allowed, excluded=self._removed)

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
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        k = min(k, max(1, self.manifest.count))  # no more hits than items (k = 10**9 allocates nothing)
        depth = min(max(k, fusion_depth), max(1, self.manifest.count)) if mode == "hybrid" else k
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
            "embedding": m.embedding,  # the model's size and the Matryoshka prefix indexed
            "index_type": m.index_type,
            "factory": m.factory,
            "embedding_dtype": m.embedding_dtype,
            "bytes_per_item": bytes_per_item(m),
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


def _load_lexical(path: Path) -> LexicalIndex:
    try:
        return LexicalIndex.load(path)
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise IndexDirError(f"{path}: not a readable lexical index ({e})") from None


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


def bytes_per_item(m: Manifest) -> dict[str, float]:
    """What an item costs: in memory (the index file, read whole; a binary index's id array too) and
    on disk beside it (a binary index's float vectors for rescoring, on-disk inverted lists)."""
    from indexing.binary import IDS_FILE, VECTORS_FILE

    beside = {VECTORS_FILE, ONDISK_FILE}
    memory = sum(f.bytes for name, f in m.files.items() if name in (INDEX_FILE, IDS_FILE))
    disk = sum(f.bytes for name, f in m.files.items() if name in beside)
    n = max(m.count, 1)
    return {"memory": round(memory / n, 1), "disk": round(disk / n, 1)}
