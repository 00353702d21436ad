"""Retrieval metrics: the CodeSearchNet MRR protocol, ranks of positives over the whole set,
recall@k (also with groups of right answers), full MRR; each also for a ``scores_fn`` (BM25)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmssl.evaluate._arrays import (
    ScoresFn,
    _call_scores_fn,
    _check_embedding_pair,
    _check_ks,
    _default_block,
    _ranks_of_positives,
    _rows,
    _to_numpy,
)


@dataclass(frozen=True, eq=False)
class MRRResult:
    """The CodeSearchNet MRR and how it was obtained.

    ``mrr`` = mean of ``chunk_mrrs``; chunks have equal size, so it is also the mean of
    ``1 / ranks`` over every query used. ``query_indices[i]`` (an index into the caller's pairs)
    had rank ``ranks[i]`` among ``chunk_size`` candidates; both are in shuffled order, chunk by
    chunk. ``short_set`` is True when n < the requested chunk size, in which case one chunk of all
    n pairs was used (``chunk_size == n``): that number is NOT comparable with 1,000-candidate MRRs.
    """

    mrr: float
    n_queries_used: int
    n_chunks: int
    chunk_size: int
    chunk_mrrs: tuple[float, ...]
    n_pairs: int
    requested_chunk_size: int
    short_set: bool
    seed: int
    query_indices: np.ndarray
    ranks: np.ndarray

    @property
    def chunk_mrr_std(self) -> float:
        """Population standard deviation of the per-chunk MRRs (0.0 for a single chunk)."""
        return float(np.std(self.chunk_mrrs))


def codesearchnet_chunks(n: int, chunk_size: int = 1000, seed: int = 0) -> list[np.ndarray]:
    """The chunks of pair indices the CodeSearchNet protocol scores, in order.

    Exact RNG: ``perm = np.random.default_rng(seed).permutation(n)``; chunk j is
    ``perm[j * chunk_size:(j + 1) * chunk_size]`` for the ``n // chunk_size`` full chunks; the last
    partial chunk is dropped. When ``n < chunk_size`` the single chunk is ``perm`` (all n pairs).
    (The protocol's shuffle-and-chunk rule, with numpy's PCG64 generator; not a bit-for-bit replay
    of the original TensorFlow code's order.)
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
    perm = np.random.default_rng(seed).permutation(int(n))
    if n < chunk_size:
        return [perm]
    n_chunks = n // chunk_size
    return list(perm[: n_chunks * chunk_size].reshape(n_chunks, chunk_size))  # (n_chunks, chunk)


def codesearchnet_mrr(scores_fn: ScoresFn, n: int, *, chunk_size: int = 1000, seed: int = 0) -> MRRResult:
    """CodeSearchNet MRR over n (query, code) pairs, query i's positive being code i.

    Protocol (Husain et al. 2019, "CodeSearchNet Challenge"): shuffle the pair indices with
    ``np.random.default_rng(seed).permutation(n)``, cut them into consecutive chunks of
    ``chunk_size`` and drop the last partial chunk (see ``codesearchnet_chunks``; when
    n < chunk_size one chunk of all n pairs is used and ``short_set`` says so). In a chunk, query q
    ranks its own code among the chunk's codes:

        rank_q = #{c in chunk : s(q, c) >= s(q, code_q)}          (ties count against the model)
        MRR    = mean over chunks of mean_q(1 / rank_q)

    ``scores_fn(chunk, chunk)`` is called once per chunk and must return the (chunk, chunk) score
    matrix, rows = queries, columns = codes, in the order given.
    """
    chunks = codesearchnet_chunks(n, chunk_size, seed)
    ranks = []
    for idx in chunks:
        s = _call_scores_fn(scores_fn, idx, idx)  # (chunk, chunk)
        ranks.append(_ranks_of_positives(s, np.arange(len(idx))))
    chunk_mrrs = tuple(float(np.mean(1.0 / r)) for r in ranks)
    return MRRResult(
        mrr=float(np.mean(chunk_mrrs)),
        n_queries_used=sum(len(c) for c in chunks),
        n_chunks=len(chunks),
        chunk_size=len(chunks[0]),
        chunk_mrrs=chunk_mrrs,
        n_pairs=int(n),
        requested_chunk_size=int(chunk_size),
        short_set=n < chunk_size,
        seed=seed,
        query_indices=np.concatenate(chunks),
        ranks=np.concatenate(ranks),
    )


def embedding_scores_fn(query_emb: Any, code_emb: Any) -> ScoresFn:
    """``scores_fn`` for ``codesearchnet_mrr``: dot products of the selected rows.

    Shape: query_emb (N, D), code_emb (N, D) -> scores_fn(q_idx, c_idx) (len(q_idx), len(c_idx)),
    a tensor on the embeddings' device when they are tensors.
    """
    q, c = _check_embedding_pair(query_emb, code_emb)

    def scores_fn(q_idx: np.ndarray, c_idx: np.ndarray) -> Any:
        return _rows(q, q_idx) @ _rows(c, c_idx).T  # (len(q_idx), len(c_idx))

    return scores_fn


def codesearchnet_mrr_embeddings(query_emb: Any, code_emb: Any, *, chunk_size: int = 1000, seed: int = 0) -> MRRResult:
    """``codesearchnet_mrr`` with dot-product scores of (N, D) embeddings, one chunk at a time."""
    scores_fn = embedding_scores_fn(query_emb, code_emb)  # checks the shapes
    return codesearchnet_mrr(scores_fn, int(query_emb.shape[0]), chunk_size=chunk_size, seed=seed)


# ----------------------------------------------------------------------------------------------
# Whole-set ranks, recall@k, MRR


def retrieval_ranks(query_emb: Any, code_emb: Any, *, block_size: int | None = None) -> np.ndarray:
    """(N,) int64 rank of code i among all N codes for query i, by dot product, ties against.

    Computed in blocks of ``block_size`` queries (default: as many as keep a (B, N) block under
    2**24 scores), so memory is O(B * N), never O(N * N).
    Shape: query_emb (N, D), code_emb (N, D) -> (N,).
    """
    q, c = _check_embedding_pair(query_emb, code_emb)
    n = q.shape[0]
    bs = _default_block(n, block_size)
    out = np.empty(n, dtype=np.int64)
    for start in range(0, n, bs):
        stop = min(start + bs, n)
        s = q[start:stop] @ c.T  # (B, N)
        out[start:stop] = _ranks_of_positives(s, np.arange(start, stop))
    return out


def retrieval_ranks_from_scores_fn(scores_fn: ScoresFn, n: int, *, block_size: int | None = None) -> np.ndarray:
    """(N,) int64 rank of code i among all n codes for query i under ``scores_fn``, ties against.

    ``scores_fn(q_block, np.arange(n))`` is called once per block of queries.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    bs = _default_block(n, block_size)
    all_codes = np.arange(n)
    out = np.empty(n, dtype=np.int64)
    for start in range(0, n, bs):
        q_idx = np.arange(start, min(start + bs, n))
        s = _call_scores_fn(scores_fn, q_idx, all_codes)  # (B, N)
        out[q_idx] = _ranks_of_positives(s, q_idx)
    return out


def recall_from_ranks(ranks: Any, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"recall@k": fraction of queries with rank <= k}`` for each k (k above N gives 1.0)."""
    ranks = _to_numpy(ranks)
    ks = _check_ks(ks)
    return {f"recall@{k}": float(np.mean(ranks <= k)) for k in ks}


def recall_at_k(
    query_emb: Any, code_emb: Any, ks: Sequence[int] = (1, 5, 10), *, block_size: int | None = None
) -> dict[str, float]:
    """Recall@k over the whole set: the fraction of queries whose own code has rank <= k.

    Ranks as in ``retrieval_ranks`` (dot product, ties against, blocked). Returns ``{"recall@1": ...}``.
    To get recall and MRR from one pass, call ``retrieval_ranks`` once and ``recall_from_ranks``.
    """
    ks = _check_ks(ks)
    return recall_from_ranks(retrieval_ranks(query_emb, code_emb, block_size=block_size), ks)


def recall_at_k_from_scores_fn(
    scores_fn: ScoresFn, n: int, ks: Sequence[int] = (1, 5, 10), *, block_size: int | None = None
) -> dict[str, float]:
    """``recall_at_k`` for a score function over n pairs (e.g. BM25), in blocks of queries."""
    ks = _check_ks(ks)
    return recall_from_ranks(retrieval_ranks_from_scores_fn(scores_fn, n, block_size=block_size), ks)


def recall_at_k_groups(
    query_emb: Any,
    cand_emb: Any,
    query_groups: Any,
    cand_groups: Any,
    ks: Sequence[int] = (1, 5, 10),
    *,
    block_size: int | None = None,
) -> dict[str, float]:
    """Recall@k when a query may have several right candidates: those of its own group (every image
    of a caption that several images share, every copy of a repeated caption).

    rank = 1 + #wrong candidates scoring >= the best right one (ties against, as everywhere here).
    Shape: query_emb (Q, D), cand_emb (C, D), query_groups (Q,), cand_groups (C,) ints.
    """
    ks = _check_ks(ks)
    q, c = (_to_numpy(x).astype(np.float32) for x in (query_emb, cand_emb))
    qg, cg = _to_numpy(query_groups), _to_numpy(cand_groups)
    if q.ndim != 2 or c.ndim != 2 or q.shape[1] != c.shape[1]:
        raise ValueError(f"query_emb and cand_emb must be (Q, D) and (C, D); got {q.shape} and {c.shape}")
    if qg.shape != (q.shape[0],) or cg.shape != (c.shape[0],):
        raise ValueError(f"groups must be (Q,) and (C,); got {qg.shape} and {cg.shape}")
    missing = np.setdiff1d(qg, cg)
    if len(missing):
        raise ValueError(f"{len(missing)} query group(s) without any candidate, e.g. {missing[0]}")
    bs = _default_block(c.shape[0], block_size)
    ranks = np.empty(q.shape[0], dtype=np.int64)
    for start in range(0, q.shape[0], bs):
        s = q[start : start + bs] @ c.T  # (B, C)
        right = qg[start : start + bs, None] == cg[None, :]  # (B, C)
        best = np.where(right, s, -np.inf).max(1, keepdims=True)  # (B, 1)
        ranks[start : start + bs] = 1 + ((s >= best) & ~right).sum(1)
    return recall_from_ranks(ranks, ks)


def mrr_full(query_emb: Any, code_emb: Any, *, block_size: int | None = None) -> float:
    """Mean of 1 / rank over all N queries, each ranking its code among all N codes (ties against)."""
    return float(np.mean(1.0 / retrieval_ranks(query_emb, code_emb, block_size=block_size)))


def mrr_full_from_scores_fn(scores_fn: ScoresFn, n: int, *, block_size: int | None = None) -> float:
    """``mrr_full`` for a score function over n pairs."""
    return float(np.mean(1.0 / retrieval_ranks_from_scores_fn(scores_fn, n, block_size=block_size)))
