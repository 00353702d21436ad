"""Binary embeddings with float rescoring: sign-bit codes searched by Hamming distance with FAISS's
binary indexes, the best candidates re-ranked by inner product with the float vectors kept on disk
(the quantize-and-rescore of sentence-transformers).

Shape legend: N items, Q queries, K results, C candidates, D embedding size, B = ceil(D / 8) bytes.

An item's code is the sign of each dimension (1 where the value is > 0), eight to a byte, first
dimension in the highest bit (``numpy.packbits``). A search takes the C = ``rescore`` x K codes
nearest the query's code in Hamming distance, over every code (``IndexBinaryFlat``: exact) or over
the lists of the ``nprobe`` nearest of ``nlist`` binary centroids (``IndexBinaryIVF``), and scores
those candidates by inner product of the float query with their float32 vectors. The vectors are
memory-mapped from ``vectors.f32``, so what the index holds in memory is the codes (B bytes an item)
and the id array (8), and a query reads C rows through the page cache.

Files of an index directory (``indexing.store``) with ``embedding_dtype`` binary:
    index.faiss   the binary FAISS index; its ids are positions 0..N-1
    vectors.f32   (N, D) float32, row-major, no header (the manifest holds N and D), position order
    ids.npy       (N,) int64: the item id at each position

FAISS's binary IVF takes no id selector, so filters and tombstones are applied to the candidates
here, with as many more candidates as the filter leaves out. Items are never dropped from the codes:
removed ids are tombstones (``indexing.update``).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VECTORS_FILE = "vectors.f32"
IDS_FILE = "ids.npy"
RESCORE_FACTOR = 4  # candidates rescored per result, before tuning
QUERY_CHUNK = 256  # queries rescored at a time: C x D floats each


def binary_codes(x: np.ndarray) -> np.ndarray:
    """(N, B) uint8: the sign bits of ``x`` (N, D), 1 where > 0, packed eight to a byte."""
    return np.packbits(np.asarray(x) > 0, axis=1)


@dataclass(frozen=True)
class BinaryParams:
    """Search parameters: candidates per result, and lists visited (binary IVF)."""

    rescore: int = RESCORE_FACTOR
    nprobe: int = 1


class BinaryIndex:
    """Binary codes (a FAISS ``IndexBinaryFlat`` or ``IndexBinaryIVF``) with float32 vectors for
    rescoring; the index surface the layer uses (``d``, ``ntotal``, ``train``, ``add_with_ids``,
    ``search``, ``reconstruct_batch``)."""

    def __init__(self, codes, d: int, ids: np.ndarray, vectors_path: Path, owns_file: bool = False) -> None:
        import faiss

        self.codes = codes
        self.d = d
        self.metric_type = faiss.METRIC_INNER_PRODUCT
        self.ids = ids
        self.vectors_path = vectors_path
        self._owns_file = owns_file  # a scratch file of a new index, removed if it is never written
        self._vectors: np.ndarray | None = None
        self._order: np.ndarray | None = None
        self.ivf = codes if isinstance(codes, faiss.IndexBinaryIVF) else None

    @classmethod
    def new(cls, d: int, nlist: int = 0, workdir: Path | None = None) -> BinaryIndex:
        """An empty index: exact Hamming search (``nlist`` 0) or a binary IVF of ``nlist`` lists; its
        float vectors go to a scratch file in ``workdir`` (the directory being written) until saved."""
        import faiss

        bits = 8 * math.ceil(d / 8)
        codes = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, nlist) if nlist else faiss.IndexBinaryFlat(bits)
        fd, scratch = tempfile.mkstemp(prefix="vectors-", suffix=".f32", dir=workdir)
        os.close(fd)
        index = cls(codes, d, np.zeros(0, dtype=np.int64), Path(scratch), owns_file=True)
        index._keep = codes.quantizer if nlist else None  # SWIG: the IVF holds its quantizer by pointer
        return index

    @classmethod
    def load(cls, path: Path, count: int, d: int) -> BinaryIndex:
        """The index written to ``path`` (index.faiss) and its sibling files; ``count`` and ``d`` from the
        manifest, checked against the files (a ValueError naming the file: ``indexing.store`` makes it
        an ``IndexDirError``)."""
        import faiss

        try:
            codes = faiss.read_index_binary(str(path))
        except RuntimeError as e:
            why = str(e).strip().splitlines()[-1]
            raise ValueError(f"{path}: FAISS cannot read it as a binary index ({why})") from None
        ids_path, vectors_path = path.parent / IDS_FILE, path.parent / VECTORS_FILE
        try:
            ids = np.load(ids_path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"{ids_path}: not a readable id array ({e})") from None
        if ids.dtype != np.int64 or ids.shape != (count,):
            raise ValueError(f"{ids_path}: {ids.dtype} array of shape {ids.shape}, expected int64 ({count},)")
        size = vectors_path.stat().st_size if vectors_path.is_file() else -1
        if size != count * d * 4:
            raise ValueError(f"{vectors_path}: {size} bytes, expected {count} x {d} float32 ({count * d * 4})")
        return cls(codes, d, ids, vectors_path)  # read_index_binary gives the subclass (a downcast would not own it)

    def __del__(self) -> None:
        if getattr(self, "_owns_file", False):
            self.vectors_path.unlink(missing_ok=True)

    # ---- the surface of a FAISS index ---------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        return len(self.ids)

    @property
    def is_trained(self) -> bool:
        return self.codes.is_trained

    @property
    def kind(self) -> str:
        """``indexing.plan``'s structure: flat (exact Hamming) or ivf_flat (binary IVF)."""
        return "ivf_flat" if self.ivf is not None else "flat"

    @property
    def nlist(self) -> int:
        return self.ivf.nlist if self.ivf is not None else 0

    def train(self, x: np.ndarray) -> None:
        self.codes.train(binary_codes(x))

    def add_with_ids(self, x: np.ndarray, ids: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        positions = np.arange(self.ntotal, self.ntotal + len(x), dtype=np.int64)
        if self.ivf is not None:
            self.codes.add_with_ids(binary_codes(x), positions)
        else:
            self.codes.add(binary_codes(x))
        with open(self.vectors_path, "ab") as f:
            f.write(x.tobytes())
        self.ids = np.concatenate([self.ids, np.asarray(ids, dtype=np.int64)])
        self._vectors = self._order = None

    def vectors(self) -> np.ndarray:
        """(N, D) float32, memory-mapped (read-only)."""
        if self._vectors is None:
            n = self.ntotal
            self._vectors = (
                np.memmap(self.vectors_path, dtype=np.float32, mode="r", shape=(n, self.d))
                if n
                else np.zeros((0, self.d), np.float32)
            )
        return self._vectors

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """The positions of item ``ids``; a RuntimeError (as FAISS raises) for an id not held."""
        if self._order is None:
            self._order = np.argsort(self.ids, kind="stable")
        ids = np.asarray(ids, dtype=np.int64)
        at = np.searchsorted(self.ids, ids, sorter=self._order)
        at = np.minimum(at, max(self.ntotal - 1, 0))
        pos = self._order[at] if self.ntotal else at
        if not self.ntotal or not np.array_equal(self.ids[pos], ids):
            raise RuntimeError("id not found in the binary index")
        return pos

    def reconstruct_batch(self, ids: np.ndarray) -> np.ndarray:
        """The float vectors of item ``ids`` (what filtered exact search scores)."""
        return np.asarray(self.vectors()[self.positions(ids)])

    def search(
        self,
        xq: np.ndarray,
        k: int,
        params: BinaryParams | None = None,
        *,
        allowed: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores (Q, K), ids (Q, K)) by inner product among the Hamming-nearest candidates; -1 ids
        pad. ``allowed`` / ``excluded``: item ids to keep / to leave out (filters, tombstones)."""
        import faiss

        params = params or BinaryParams()
        widen = 1.0
        extra = 0
        if allowed is not None:
            widen = self.ntotal / max(len(allowed), 1)
        if excluded is not None and len(excluded):
            extra = len(excluded)
        n_cand = min(self.ntotal, math.ceil(k * params.rescore * widen) + extra)
        scores = np.full((len(xq), k), -np.inf, dtype=np.float32)
        found = np.full((len(xq), k), -1, dtype=np.int64)
        if n_cand <= 0:
            return scores, found
        search_params = None
        if self.ivf is not None:
            search_params = faiss.SearchParametersIVF(nprobe=int(min(self.nlist, math.ceil(params.nprobe * widen))))
        _, cand = self.codes.search(binary_codes(xq), n_cand, params=search_params)  # (Q, C) positions
        vectors = self.vectors()
        for start in range(0, len(xq), QUERY_CHUNK):
            pos = cand[start : start + QUERY_CHUNK]
            valid = pos >= 0
            item = np.where(valid, self.ids[np.maximum(pos, 0)], -1)
            if allowed is not None:
                valid &= np.isin(item, allowed)
            if extra:
                valid &= ~np.isin(item, excluded)
            rows = vectors[np.maximum(pos, 0).ravel()].reshape(*pos.shape, self.d)  # (q, C, D)
            sims = np.einsum("qcd,qd->qc", rows, xq[start : start + QUERY_CHUNK])
            sims[~valid] = -np.inf
            top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            top_s = np.take_along_axis(sims, top, axis=1)
            top_i = np.where(np.isfinite(top_s), np.take_along_axis(item, top, axis=1), -1)
            n = top.shape[1]
            scores[start : start + len(pos), :n] = top_s
            found[start : start + len(pos), :n] = top_i
        return scores, found

    # ---- files ------------------------------------------------------------------------------------

    def write(self, path: Path) -> list[str]:
        """Write index.faiss at ``path`` and its sibling files; returns the files' names."""
        import faiss

        faiss.write_index_binary(self.codes, str(path))
        np.save(path.parent / IDS_FILE, self.ids, allow_pickle=False)
        target = path.parent / VECTORS_FILE
        if self.vectors_path.resolve() != target.resolve():
            self._vectors = None  # the map of the scratch file, before it moves
            shutil.move(self.vectors_path, target)
            self.vectors_path, self._owns_file = target, False
        return [path.name, VECTORS_FILE, IDS_FILE]
