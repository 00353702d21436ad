"""Top-K neighbours of many queries in one collection of vectors, through this layer's index choice.

Shape legend: N collection vectors, Q queries, K neighbours, D dimension.

``knn(xb, xq, k)`` is for jobs that search a whole collection with many queries once (hard-negative
mining: every training query against every training candidate) rather than serve an index: it
picks the index with ``choose_index`` (exact up to ``flat_max`` vectors, IVF beyond, within a memory
budget), builds it in memory (on the GPU when FAISS sees one), and for an approximate index tunes
``nprobe`` on a sample of the queries to reach ``target_recall`` against exact search, as
``indexing.tune`` does for a saved index. Inner product, as everywhere in ``indexing``.
"""

from __future__ import annotations

import numpy as np

from indexing.build import ArrayShards, as_float32_matrix, build_in_memory
from indexing.plan import choose_index
from indexing.tune import exact_neighbours, search_parameters, tune

TUNE_QUERIES = 500  # queries whose exact top-K is the tuning reference


def knn(
    xb,
    xq,
    k: int,
    *,
    flat_max: int = 200_000,
    memory_budget: int | None = None,
    target_recall: float = 0.95,
    use_gpu: bool | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores (Q, K) float32, ids (Q, K) int64 row numbers of ``xb``), best first; -1 ids pad rows
    when K exceeds N. Exact when N <= ``flat_max`` (ties in the order FAISS returns them)."""
    xb, xq = as_float32_matrix(xb, "xb"), as_float32_matrix(xq, "xq")
    if xb.shape[1] != xq.shape[1]:
        raise ValueError(f"xb has dim {xb.shape[1]}, xq {xq.shape[1]}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    shards = ArrayShards(xb)
    plan = choose_index(len(xb), xb.shape[1], memory_budget, flat_max=flat_max)
    index = build_in_memory(plan, shards, use_gpu=use_gpu, seed=seed)
    params = None
    if plan.index_type != "flat" or plan.embedding_dtype != "float32":  # approximate: tuned
        rng = np.random.default_rng(seed)
        sample = xq[np.sort(rng.choice(len(xq), min(TUNE_QUERIES, len(xq)), replace=False))]
        tuning = tune(index, sample, exact_neighbours(sample, shards, k), target_recall)
        params = search_parameters(index, tuning.params)
    scores, ids = index.search(xq, k, params=params)
    return scores, ids
