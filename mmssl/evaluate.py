"""Retrieval and representation metrics: pure functions over arrays, no model objects.

- ``codesearchnet_mrr`` / ``codesearchnet_mrr_embeddings``: the CodeSearchNet MRR protocol
  (shuffled chunks of 1,000 pairs, each query ranks its own code among the chunk's codes).
- ``retrieval_ranks`` / ``recall_at_k`` / ``mrr_full``: ranks over the whole set (query i's positive
  is code i), computed in blocks of queries so no (N, N) matrix is ever held; ``*_from_scores_fn``
  variants for score functions such as BM25 (``mmssl.bm25.BM25Index.scores_fn``).
- ``zero_shot_accuracy`` and ``linear_probe`` for image classification with embeddings.
- ``embedding_geometry``: anisotropy, effective rank and per-dimension spread of a set of
  embeddings (collapse and "one common direction" diagnostics).

Shape legend: N pairs (query i's positive is code i), D embedding dim, B query block, C classes.

Conventions shared by every function here
- Rank of the positive = number of candidates scoring >= the positive's score, the positive itself
  included, so the best rank is 1 and ties count AGAINST the model (a constant scorer ranks every
  positive last). The positive's score is read from the same score matrix as the candidates', so
  rounding cannot break a tie in the model's favour.
- Embeddings are compared by dot product; pass L2-normalized embeddings for cosine similarity.
  Inputs may be numpy arrays or torch tensors (any device): tensor maths stays on the tensor's
  device and only ranks come back to the host. float16/bfloat16 inputs are scored in float32.
- ``scores_fn(query_idx, code_idx)`` takes two 1-D int arrays and returns a
  ``(len(query_idx), len(code_idx))`` array (or tensor) of scores, higher is better. NaN scores
  raise ``ValueError`` (a NaN would silently make a rank wrong).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ScoresFn = Callable[[np.ndarray, np.ndarray], Any]

# A score block holds at most this many entries (64 MiB in float32) unless block_size is given.
_BLOCK_ELEMENTS = 1 << 24


# ----------------------------------------------------------------------------------------------
# numpy / torch helpers (torch is never imported here unless the caller already passed a tensor)


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _to_numpy(x: Any) -> np.ndarray:
    if _is_tensor(x):
        x = x.detach()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _as_scoring_matrix(x: Any, name: str) -> Any:
    """A 2-D float matrix in the input's own library, half precision widened to float32."""
    if _is_tensor(x):
        if x.ndim != 2:
            raise ValueError(f"{name} must be (N, D); got {tuple(x.shape)}")
        if not x.is_floating_point() or str(x.dtype) in ("torch.float16", "torch.bfloat16"):
            x = x.float()
        return x.detach()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be (N, D); got {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    return x


def _check_embedding_pair(query_emb: Any, code_emb: Any) -> tuple[Any, Any]:
    q = _as_scoring_matrix(query_emb, "query_emb")
    c = _as_scoring_matrix(code_emb, "code_emb")
    if tuple(q.shape) != tuple(c.shape):
        raise ValueError(
            f"query_emb {tuple(q.shape)} and code_emb {tuple(c.shape)} must have the same shape (N, D): "
            "query i's positive is code i"
        )
    if q.shape[0] == 0:
        raise ValueError("need at least one pair; got N = 0")
    if _is_tensor(q) != _is_tensor(c):
        raise TypeError("query_emb and code_emb must both be numpy arrays or both be torch tensors")
    if _is_tensor(q):
        if q.device != c.device:
            raise ValueError(f"query_emb is on {q.device} but code_emb is on {c.device}")
        if q.dtype != c.dtype:
            q, c = q.double(), c.double()
    elif q.dtype != c.dtype:
        q, c = q.astype(np.float64), c.astype(np.float64)
    return q, c


def _rows(x: Any, idx: np.ndarray) -> Any:
    if _is_tensor(x):
        import torch  # already imported by the caller, who passed a tensor

        return x[torch.as_tensor(idx, device=x.device)]
    return x[idx]


def _ranks_of_positives(scores: Any, positive_col: np.ndarray) -> np.ndarray:
    """(B,) int64 rank of each row's positive: #entries >= the positive's score in that row.

    ``scores`` is (B, M), a numpy array or a tensor (ranked on its own device).
    """
    if _is_tensor(scores):
        import torch

        if torch.isnan(scores).any():
            raise ValueError("scores contain NaN")
        rows = torch.arange(scores.shape[0], device=scores.device)
        cols = torch.as_tensor(positive_col, device=scores.device)
        pos = scores[rows, cols]  # (B,)
        return (scores >= pos[:, None]).sum(1).cpu().numpy().astype(np.int64)
    scores = np.asarray(scores)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    pos = scores[np.arange(scores.shape[0]), positive_col]  # (B,)
    return (scores >= pos[:, None]).sum(1).astype(np.int64)


def _call_scores_fn(scores_fn: ScoresFn, q_idx: np.ndarray, c_idx: np.ndarray) -> Any:
    s = scores_fn(q_idx, c_idx)
    if not _is_tensor(s):
        s = np.asarray(s)
    if tuple(s.shape) != (len(q_idx), len(c_idx)):
        raise ValueError(
            f"scores_fn must return a (len(query_idx), len(code_idx)) = ({len(q_idx)}, {len(c_idx)}) "
            f"array; got {tuple(s.shape)}"
        )
    return s


# ----------------------------------------------------------------------------------------------
# CodeSearchNet MRR


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


def _default_block(n: int, block_size: int | None) -> int:
    if block_size is None:
        return max(1, min(n, _BLOCK_ELEMENTS // max(n, 1)))
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1; got {block_size}")
    return block_size


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


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive ints; got {ks}")
    return ks


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


# ----------------------------------------------------------------------------------------------
# Zero-shot classification and linear probe


def zero_shot_accuracy(
    image_emb: Any, class_text_emb: Any, labels: Any, ks: Sequence[int] = (1, 5), *, block_size: int | None = None
) -> dict[str, float]:
    """Top-k zero-shot accuracy: an image is right at k if its true class ranks <= k.

    Classes are scored by dot product with the image (pass normalized embeddings for CLIP's
    cosine); rank = #classes scoring >= the true class (ties against, as everywhere here; k above
    C gives 1.0). Returns ``{"top1": ..., "top5": ...}``.
    Shape: image_emb (N, D), class_text_emb (C, D), labels (N,) ints in [0, C).
    """
    ks = _check_ks(ks)
    x = _as_scoring_matrix(image_emb, "image_emb")
    w = _as_scoring_matrix(class_text_emb, "class_text_emb")
    if _is_tensor(x) != _is_tensor(w):
        raise TypeError("image_emb and class_text_emb must both be numpy arrays or both be torch tensors")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"image_emb {tuple(x.shape)} and class_text_emb {tuple(w.shape)} must share D")
    if _is_tensor(x) and x.dtype != w.dtype:
        x, w = x.double(), w.double()
    elif not _is_tensor(x) and x.dtype != w.dtype:
        x, w = x.astype(np.float64), w.astype(np.float64)
    y = _to_numpy(labels)
    n, n_classes = x.shape[0], w.shape[0]
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be (N,) ints with N={n}; got shape {y.shape}, dtype {y.dtype}")
    if n == 0:
        raise ValueError("need at least one image")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}); got [{y.min()}, {y.max()}]")
    bs = _default_block(n_classes, block_size)
    ranks = np.empty(n, dtype=np.int64)
    for start in range(0, n, bs):
        stop = min(start + bs, n)
        s = x[start:stop] @ w.T  # (B, C)
        ranks[start:stop] = _ranks_of_positives(s, y[start:stop])
    return {f"top{k}": float(np.mean(ranks <= k)) for k in ks}


def linear_probe(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    *,
    C: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
) -> float:
    """Test accuracy of a multinomial logistic regression fit on frozen features.

    scikit-learn's ``LogisticRegression(C=C, max_iter=max_iter, random_state=seed)`` with its
    default L-BFGS solver and L2 penalty (C = inverse regularization strength, CLIP's linear-probe
    setup; CLIP sweeps C on a validation split, which the caller does by calling this per C).
    Features are used as given (no scaling). Deterministic for fixed inputs.
    Shape: train_x (N, D), train_y (N,), test_x (M, D), test_y (M,).
    """
    # sklearn is a heavy import: only here, where it is needed.
    from sklearn.linear_model import LogisticRegression

    xtr, xte = _to_numpy(train_x), _to_numpy(test_x)
    ytr, yte = _to_numpy(train_y), _to_numpy(test_y)
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"train_x and test_x must be (N, D) and (M, D); got {xtr.shape} and {xte.shape}")
    if ytr.shape != (xtr.shape[0],) or yte.shape != (xte.shape[0],):
        raise ValueError(f"labels must match features: {xtr.shape}/{ytr.shape}, {xte.shape}/{yte.shape}")
    if len(np.unique(ytr)) < 2:
        raise ValueError("train_y must hold at least two classes")
    if xte.shape[0] == 0:
        raise ValueError("need at least one test example")
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    clf.fit(xtr, ytr)
    return float(np.mean(clf.predict(xte) == yte))


def embedding_geometry(x: Any) -> dict[str, float]:
    """How spread out N embeddings are. Shape: x (N, D), N >= 2; computed in float64 on the host.

    - ``anisotropy``: mean cosine between two different rows (0 for isotropic random vectors, 1 when
      all point the same way; the "common direction" of under-trained language models).
    - ``effective_rank``: exp of the entropy of the normalized singular values of the centered rows
      (Roy & Vetterli 2007): about D for isotropic data, k for data spread over k equal directions,
      1 for data on a line; 0 when all rows are equal.
    - ``std_mean``: mean over dimensions of each dimension's standard deviation of the L2-normalized
      rows (the collapse monitor of SimSiam / VICReg: 0 when collapsed, about 1/sqrt(D) when spread).
    """
    a = _to_numpy(x).astype(np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"x must be (N, D) with N >= 2; got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("x holds NaN or infinite values")
    n = a.shape[0]
    unit = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    total = unit.sum(0)
    # sum over i != j of cos(i, j) = |sum of unit rows|^2 - sum of |unit row|^2 (no (N, N) matrix).
    anisotropy = (total @ total - (unit * unit).sum()) / (n * (n - 1))
    s = np.linalg.svd(a - a.mean(0), compute_uv=False)
    if s.sum() <= 1e-12 * max(1.0, np.abs(a).max()):
        rank = 0.0
    else:
        p = s[s > 0] / s.sum()
        rank = float(np.exp(-(p * np.log(p)).sum()))
    return {"anisotropy": float(anisotropy), "effective_rank": rank, "std_mean": float(unit.std(0).mean())}


__all__ = [
    "MRRResult",
    "ScoresFn",
    "codesearchnet_chunks",
    "codesearchnet_mrr",
    "codesearchnet_mrr_embeddings",
    "embedding_geometry",
    "embedding_scores_fn",
    "linear_probe",
    "mrr_full",
    "mrr_full_from_scores_fn",
    "recall_at_k",
    "recall_at_k_from_scores_fn",
    "recall_at_k_groups",
    "recall_from_ranks",
    "retrieval_ranks",
    "retrieval_ranks_from_scores_fn",
    "zero_shot_accuracy",
]
