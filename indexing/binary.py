"""Binary embeddings with float rescoring: sign-bit codes searched by Hamming distance with FAISS,
the best candidates re-ranked by inner product with the float vectors kept on disk (the
quantize-and-rescore of sentence-transformers; FAISS's ``knn_inner_products_by_idx`` rescores).

Shape legend: N items, Q queries, K results, C candidates, D embedding size, B = ceil(D / 8) bytes.

An item's code is the sign of each dimension, eight to a byte. A search takes the C = ``rescore`` x K
codes nearest the query's code in Hamming distance and scores those candidates by inner product of
the float query with their float32 vectors. Two structures hold the codes:
    flat  ``IndexBinaryFlat``: every code, exact Hamming. Codes are ``binary_codes`` (1 where > 0,
          first dimension in the highest bit: ``numpy.packbits``).
    IVF   ``IndexIVFSpectralHash`` with an identity transform and a global threshold at 0: inverted
          lists assigned by float k-means centroids (inner product), each holding its items' sign
          bits (FAISS's layout: 1 where < 0, first dimension in the lowest bit; Hamming distances are
          the same), scanned in the ``nprobe`` lists nearest the float query. Float centroids
          partition the space as finely as a float IVF's, so nprobe stays near a float IVF's where
          k-means over the codes themselves (``IndexBinaryIVF``) needs about 12x more lists.
The vectors are memory-mapped from ``vectors.f32``, so what the index holds in memory is the codes
(B bytes an item, with 8 bytes of list id in an IVF), the id array (8) and an IVF's centroids, and a
query reads C rows through the page cache.

Files of an index directory (``indexing.store``) with ``embedding_dtype`` binary:
    index.faiss   the FAISS index (binary flat, or float IVF of sign codes); its ids are positions 0..N-1
    vectors.f32   (N, D) float32, row-major, no header (the manifest holds N and D), position order
    ids.npy       (N,) int64: the item id at each position

Filters and tombstones are applied to the candidates here (FAISS's binary indexes take no id
selector), with as many more candidates as the filter leaves out. Items are never dropped from the
codes: removed ids are tombstones (``indexing.update``).
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
# IndexIVFSpectralHash's bit is floor(x * 2 / period) & 1: with a period far above any coordinate
# it is the sign (1 where x < 0); 1e20 keeps x * 2e-20 a normal float down to |x| ~ 1e-18.
SIGN_PERIOD = 1e20


def binary_codes(x: np.ndarray) -> np.ndarray:
    """(N, B) uint8: the sign bits of ``x`` (N, D), 1 where > 0, packed eight to a byte."""
    return np.packbits(np.asarray(x) > 0, axis=1)


def _float32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


@dataclass(frozen=True)
class BinaryParams:
    """Search parameters: candidates per result, and lists visited (IVF)."""

    rescore: int = RESCORE_FACTOR
    nprobe: int = 1


class BinaryIndex:
    """Sign codes (a FAISS ``IndexBinaryFlat``, or an ``IndexIVFSpectralHash`` of sign bits; an
    ``IndexBinaryIVF`` written by earlier versions still loads) with float32 vectors for rescoring;
    the index surface the layer uses (``d``, ``ntotal``, ``train``, ``add_with_ids``, ``search``,
    ``reconstruct_batch``)."""

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
        self.ivf = codes if isinstance(codes, faiss.IndexBinaryIVF | faiss.IndexIVF) else None
        # FAISS's binary indexes take packed codes; the IVF of sign bits takes the float vectors
        self._encode = binary_codes if isinstance(codes, faiss.IndexBinary) else _float32

    @classmethod
    def new(cls, d: int, nlist: int = 0, workdir: Path | None = None) -> BinaryIndex:
        """An empty index: exact Hamming search (``nlist`` 0) or ``nlist`` float-centroid lists of sign
        codes; its float vectors go to a scratch file in ``workdir`` (the directory being written)
        until saved."""
        import faiss

        if nlist:
            quantizer = faiss.IndexFlatIP(d)
            codes = faiss.IndexIVFSpectralHash(quantizer, d, nlist, d, SIGN_PERIOD)
            identity = faiss.LinearTransform(d, d, False)
            faiss.copy_array_to_vector(np.eye(d, dtype=np.float32).ravel(), identity.A)
            identity.is_trained = True
            codes.replace_vt(identity, True)
            identity.thisown = False  # the index owns it now
            codes.threshold_type = faiss.IndexIVFSpectralHash.Thresh_global  # 0: the sign
        else:
            codes = faiss.IndexBinaryFlat(8 * math.ceil(d / 8))
        fd, scratch = tempfile.mkstemp(prefix="vectors-", suffix=".f32", dir=workdir)
        os.close(fd)
        index = cls(codes, d, np.zeros(0, dtype=np.int64), Path(scratch), owns_file=True)
        index._keep = quantizer if nlist else None  # SWIG: the IVF holds its quantizer by pointer
        return index

    @classmethod
    def load(cls, path: Path, count: int, d: int) -> BinaryIndex:
        """The index written to ``path`` (index.faiss) and its sibling files; ``count`` and ``d`` from the
        manifest, checked against the files (a ValueError naming the file: ``indexing.store`` makes it
        an ``IndexDirError``)."""
        import faiss

        with open(path, "rb") as f:
            binary = f.read(2) == b"IB"  # the fourcc of FAISS's binary indexes (IBxF flat, IBwF IVF)
        try:
            codes = faiss.read_index_binary(str(path)) if binary else faiss.read_index(str(path))
        except RuntimeError as e:
            why = str(e).strip().splitlines()[-1]
            raise ValueError(f"{path}: FAISS cannot read it as a binary index ({why})") from None
        if not binary and not isinstance(codes, faiss.IndexIVFSpectralHash):
            raise ValueError(f"{path}: a {type(codes).__name__}, not sign codes (IndexIVFSpectralHash)")
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
        """``indexing.plan``'s structure: flat (exact Hamming) or ivf_flat (inverted lists of codes)."""
        return "ivf_flat" if self.ivf is not None else "flat"

    @property
    def nlist(self) -> int:
        return self.ivf.nlist if self.ivf is not None else 0

    def bytes_read(self, params: BinaryParams, k: int) -> int:
        """Bytes one query reads (the cost tuning weighs): the codes and list ids of the lists it scans
        (every code, exact), and the float rows it rescores."""
        if self.ivf is None:
            scan = self.ntotal * self.codes.code_size
        else:  # an IVF's lists hold each code's 8-byte id beside it
            scan = self.ntotal * min(params.nprobe, self.nlist) / self.nlist * (self.codes.code_size + 8)
        return int(scan + params.rescore * k * 4 * self.d)

    def train(self, x: np.ndarray) -> None:
        self.codes.train(self._encode(x))

    def add_with_ids(self, x: np.ndarray, ids: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        positions = np.arange(self.ntotal, self.ntotal + len(x), dtype=np.int64)
        if self.ivf is not None:
            self.codes.add_with_ids(self._encode(x), positions)
        else:
            self.codes.add(self._encode(x))
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
        _, cand = self.codes.search(self._encode(xq), n_cand, params=search_params)  # (Q, C) positions
        valid = cand >= 0
        if allowed is not None or extra:
            item = np.where(valid, self.ids[np.maximum(cand, 0)], -1)
            if allowed is not None:
                valid &= np.isin(item, allowed)
            if extra:
                valid &= ~np.isin(item, excluded)
            # FAISS's rescoring reads a row's candidates up to its first -1: the kept ones go first
            order = np.argsort(~valid, axis=1, kind="stable")
            cand = np.take_along_axis(np.where(valid, cand, -1), order, axis=1)
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        cand = np.ascontiguousarray(cand, dtype=np.int64)
        vectors = self.vectors()
        top_s = np.empty((len(xq), k), dtype=np.float32)
        top_p = np.empty((len(xq), k), dtype=np.int64)
        faiss.knn_inner_products_by_idx(  # the top K by inner product among each query's candidates
            faiss.swig_ptr(xq), faiss.swig_ptr(vectors), faiss.swig_ptr(cand), self.d, len(xq), self.ntotal,
            cand.shape[1], k, faiss.swig_ptr(top_s), faiss.swig_ptr(top_p), cand.shape[1],
        )  # fmt: skip
        hit = top_p >= 0
        scores[:, :k] = np.where(hit, top_s, -np.inf)
        found[:, :k] = np.where(hit, self.ids[np.maximum(top_p, 0)], -1)
        return scores, found

    # ---- files ------------------------------------------------------------------------------------

    def write(self, path: Path) -> list[str]:
        """Write index.faiss at ``path`` and its sibling files; returns the files' names."""
        import faiss

        if isinstance(self.codes, faiss.IndexBinary):
            faiss.write_index_binary(self.codes, str(path))
        else:
            faiss.write_index(self.codes, str(path))
        np.save(path.parent / IDS_FILE, self.ids, allow_pickle=False)
        target = path.parent / VECTORS_FILE
        if self.vectors_path.resolve() != target.resolve():
            self._vectors = None  # the map of the scratch file, before it moves
            shutil.move(self.vectors_path, target)
            self.vectors_path, self._owns_file = target, False
        return [path.name, VECTORS_FILE, IDS_FILE]
