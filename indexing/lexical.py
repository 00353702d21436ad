"""The lexical side of an index: BM25 over the items' text, and reciprocal rank fusion.

BM25 is ``mmssl.bm25`` (the project's one BM25: bm25s's Lucene variant, k1 = 1.2, b = 0.75, over
``code_search_tokens``: identifier parts, camelCase and snake_case split, lowercased), so code
identifiers such as ``parseHTTPHeader`` match a query saying "parse http header", with the scores
of ``mmssl eval --bm25`` (held in float32 here, as the index directory stores them).

bm25s builds a static index: adding or removing items rebuilds it from the metadata store's text
(seconds per 100,000 items); rows map to item ids through ``ids.npy``.

Reciprocal rank fusion (Cormack, Clarke & Buettcher, SIGIR 2009): each list contributes
1 / (c + rank) for every item it ranks (rank from 1), c = 60; items are sorted by the sum. It needs
no score calibration between the dense and the lexical side, which live on unrelated scales.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mmssl.bm25 import BM25Index, code_search_tokens, top_k

RRF_C = 60


class LexicalIndex:
    """BM25 over tokenized texts, searched by query text, returning item ids."""

    def __init__(self, bm25: BM25Index, ids: np.ndarray) -> None:
        self.bm25 = bm25
        self.ids = ids

    @classmethod
    def build(cls, ids: Sequence[int], texts: Iterable[str]) -> LexicalIndex:
        tokens = [code_search_tokens(t) for t in texts]
        if not tokens:
            raise ValueError("cannot build a lexical index over no items")
        return cls(BM25Index.from_documents(tokens, dtype="float32"), np.asarray(ids, dtype=np.int64))

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.bm25.save(path)
        np.save(path / "ids.npy", self.ids)

    @classmethod
    def load(cls, path: Path) -> LexicalIndex:
        return cls(BM25Index.load(path), np.load(path / "ids.npy"))

    def __len__(self) -> int:
        return len(self.ids)

    def search(
        self, queries: Sequence[str], k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores (Q, K), ids (Q, K)), best first (equal scores in row order); -1 ids where fewer
        than K items match. ``allowed``: item ids."""
        k = min(k, max(1, len(self.ids)))  # (Q, k) arrays: never wider than the collection
        k_eff = k
        mask = None
        if allowed is not None:
            mask = np.isin(self.ids, allowed).astype(np.float32)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for qi, query in enumerate(queries):
            tokens = self.bm25.token_ids(code_search_tokens(query))
            if not tokens or k_eff == 0:
                continue  # nothing in common with the collection: no lexical evidence
            top_s, top = top_k(self.bm25.scores_of(tokens, weight_mask=mask)[None], k_eff)
            keep = top_s[0] > 0
            n = int(keep.sum())
            scores[qi, :n] = top_s[0][keep]
            ids[qi, :n] = self.ids[top[0][keep]]
        return scores, ids


def reciprocal_rank_fusion(
    ranked: Sequence[np.ndarray], k: int, c: int = RRF_C, weights: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse ranked id lists (each (Q, K_i), -1 = empty) into (scores (Q, k), ids (Q, k)).

    score(item) = sum over lists i of weights[i] / (c + rank_i(item)) (Cormack et al. 2009, with
    a weight per list; all 1 by default).
    """
    weights = [1.0] * len(ranked) if weights is None else list(weights)
    if len(weights) != len(ranked) or any(w < 0 for w in weights):
        raise ValueError(f"need one non-negative weight per ranked list, got {weights}")
    n_queries = len(ranked[0])
    out_scores = np.zeros((n_queries, k), dtype=np.float32)
    out_ids = np.full((n_queries, k), -1, dtype=np.int64)
    for q in range(n_queries):
        fused: dict[int, float] = {}
        for lists, w in zip(ranked, weights):
            for rank, item in enumerate(lists[q], start=1):
                if item >= 0:
                    fused[int(item)] = fused.get(int(item), 0.0) + w / (c + rank)
        best = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        for j, (item, score) in enumerate(best):
            out_ids[q, j], out_scores[q, j] = item, score
    return out_scores, out_ids
