"""Search parameters for a built index, and their tuning to a target recall@K.

Shape legend: Q queries, K neighbours, D dimension.

Tuning (``tune``): held-out queries, their exact top-K over the whole collection as the reference,
and the smallest ``nprobe`` (IVF) or ``efSearch`` (HNSW) whose recall@K reaches the target (the
re-ranked fast-scan also raises its ``k_factor``, a binary index its rescoring depth ``rescore``).
Recall here is the overlap of the approximate and exact top-K (|A ∩ E| / K), averaged over queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from indexing.binary import BinaryParams
from indexing.build import Shards, hnsw_of, is_binary, metric, refine_of

REFINE_K_FACTOR = 8  # fast-scan candidates re-ranked per result (k_factor x K)
RESCORE_MAX = 256  # binary candidates rescored per result, at most (tuning doubles from 2)


def search_parameters(index, params: dict[str, int] | None = None, selector=None):
    """A FAISS ``SearchParameters`` object for this index (nprobe / efSearch, optional id selector)."""
    import faiss

    params = params or {}
    if is_binary(index):  # its candidates are filtered by indexing.binary itself, not by a selector
        return BinaryParams(int(params.get("rescore", BinaryParams.rescore)), int(params.get("nprobe", 1)))
    ivf = faiss.try_extract_index_ivf(index)
    if refine_of(index) is not None:
        # IndexRefine hands only base_index_params down (it ignores a selector on itself), and the
        # base index sees IDMap2's internal ids: the selector goes there, translated.
        sel = faiss.IDSelectorTranslated(index.id_map, selector) if selector is not None else None
        base = faiss.SearchParametersIVF(nprobe=int(params.get("nprobe", ivf.nprobe)), sel=sel)
        out = faiss.IndexRefineSearchParameters(
            k_factor=float(params.get("k_factor", REFINE_K_FACTOR)), base_index_params=base
        )
        out.referenced_objects = [base, sel, selector]  # SWIG holds raw pointers: keep them alive
        return out
    if ivf is not None:
        return faiss.SearchParametersIVF(nprobe=int(params.get("nprobe", ivf.nprobe)), sel=selector)
    if hnsw_of(index) is not None:
        return faiss.SearchParametersHNSW(
            efSearch=int(params.get("efSearch", hnsw_of(index).hnsw.efSearch)), sel=selector
        )
    return faiss.SearchParameters(sel=selector) if selector is not None else None


def exact_neighbours(xq: np.ndarray, shards: Shards, k: int) -> np.ndarray:
    """(Q, K) ids of the exact top-K by inner product, streaming over the shards."""
    import faiss

    k = min(k, shards.count)
    best_d = np.full((len(xq), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(xq), k), -1, dtype=np.int64)
    for ids, x in shards:
        dist, pos = faiss.knn(xq, np.ascontiguousarray(x, dtype=np.float32), min(k, len(x)), metric=metric())
        cand_d = np.concatenate([best_d, dist], axis=1)
        cand_i = np.concatenate([best_i, ids[pos]], axis=1)
        top = np.argsort(-cand_d, axis=1, kind="stable")[:, :k]
        best_d = np.take_along_axis(cand_d, top, axis=1)
        best_i = np.take_along_axis(cand_i, top, axis=1)
    return best_i


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |found ∩ exact| / K (the K of ``exact``)."""
    k = exact.shape[1]
    hits = [len(np.intersect1d(f[f >= 0], e)) for f, e in zip(found[:, :k], exact)]
    return float(np.mean(hits) / k)


@dataclass
class Tuning:
    params: dict[str, int] = field(default_factory=dict)
    recall: float = 1.0
    target: float = 0.0
    k: int = 10
    queries: int = 0
    curve: list[tuple[int, float]] = field(default_factory=list)  # (parameter value, recall)
    reached: bool = True

    def to_dict(self) -> dict:
        return {
            "target_recall": self.target,
            "k": self.k,
            "queries": self.queries,
            "recall": round(self.recall, 4),
            "reached": self.reached,
            "curve": [[v, round(r, 4)] for v, r in self.curve],
        }


def tune(index, xq: np.ndarray, exact: np.ndarray, target: float = 0.95) -> Tuning:
    """The cheapest nprobe (IVF) or efSearch (HNSW) whose recall@K on ``xq`` reaches ``target``.

    Doubles the parameter until the target is reached, then bisects between the last two values.
    If the index cannot reach it (PQ codes are lossy), it keeps the smallest value within 0.005 of
    the best recall seen and says ``reached=False``. The re-ranked fast-scan also raises its
    ``k_factor`` (8, 16, 32, 64) until the target is within reach.
    """
    import faiss

    k = exact.shape[1]
    if is_binary(index):
        return _tune_binary(index, xq, exact, target)
    ivf = faiss.try_extract_index_ivf(index)
    if refine_of(index) is not None:
        # Re-ranked fast-scan: recall is capped by how many candidates are re-ranked, so the
        # smallest k_factor (then nprobe) that reaches the target; 4-bit codes of some data need more.
        best = None
        for k_factor in (REFINE_K_FACTOR, 2 * REFINE_K_FACTOR, 4 * REFINE_K_FACTOR, 8 * REFINE_K_FACTOR):
            t = _tune_one(index, xq, exact, target, "nprobe", ivf.nlist, 1, {"k_factor": k_factor})
            if best is None or t.recall > best.recall + 0.005:
                best = t
            if t.reached:
                return t
        return best
    if ivf is not None:
        return _tune_one(index, xq, exact, target, "nprobe", ivf.nlist, 1)
    if hnsw_of(index) is not None:
        return _tune_one(index, xq, exact, target, "efSearch", 4096, max(16, k))
    # nothing to tune (a custom factory such as PQ16): measure what it gives
    _, found = index.search(xq, k)
    recall = recall_at(found, exact)
    return Tuning(recall=recall, target=target, k=k, queries=len(xq), reached=recall >= target)


def _tune_binary(index, xq, exact, target: float) -> Tuning:
    """The cheapest rescoring depth and nprobe (an IVF of sign codes) that reach ``target``. The
    Hamming ranking decides which candidates reach the float vectors, so depth caps recall: the
    smallest depth is tuned with every list probed (the IVF then ranks as the exact Hamming scan
    does). A deeper rescoring lets fewer lists reach the same recall, so nprobe is tuned at 1, 2 and
    4 times that depth and the pair that reads the fewest bytes a query (``BinaryIndex.bytes_read``)
    is kept."""
    probe_all = {"nprobe": index.nlist} if index.ivf is not None else {}
    depth = _tune_one(index, xq, exact, target, "rescore", RESCORE_MAX, 2, probe_all)
    if index.ivf is None:
        return depth
    goal = min(target, depth.recall)  # the target, or the best that every list gives
    k = exact.shape[1]
    best = None
    for factor in (1, 2, 4):
        fixed = {"rescore": min(depth.params["rescore"] * factor, RESCORE_MAX)}
        t = _tune_one(index, xq, exact, goal, "nprobe", index.nlist, 1, fixed)
        cost = index.bytes_read(search_parameters(index, t.params), k)
        if t.recall >= goal and (best is None or cost < best[0]):
            best = (cost, t)
    t = best[1] if best is not None else t
    return replace(t, target=target, reached=t.recall >= target)


def _tune_one(index, xq, exact, target: float, name: str, values_max: int, start: int, fixed=None) -> Tuning:
    """Doubling then bisection of one parameter ``name`` (the others ``fixed``)."""
    k = exact.shape[1]
    fixed = fixed or {}
    cache: dict[int, float] = {}

    def measure(v: int) -> float:
        if v not in cache:
            _, found = index.search(xq, k, params=search_parameters(index, {name: v, **fixed}))
            cache[v] = recall_at(found, exact)
        return cache[v]

    v = start
    while measure(v) < target and v < values_max:
        v = min(v * 2, values_max)
    if measure(v) >= target:
        lo, hi = v // 2, v  # measure(lo) < target <= measure(hi), unless v == start
        while v > start and hi - lo > max(1, hi // 16):
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if measure(mid) >= target else (mid, hi)
        chosen, reached = (hi if v > start else v), True
    else:
        best = max(cache.values())
        chosen, reached = min(x for x, r in cache.items() if r >= best - 0.005), False
    curve = sorted(cache.items())
    return Tuning({name: int(chosen), **fixed}, cache[chosen], target, k, len(xq), curve, reached)
