"""Okapi BM25 over code tokens: the project's one BM25, behind the eval baseline (``mmssl eval
--bm25``), hard-negative mining (``mmssl.negatives``) and the lexical side of search indexes
(``indexing.lexical``).

For a query q and document d of length |d| (tokens) in a collection of N documents with mean
length avgdl, where tf(t, d) counts term t in d and df(t) counts the documents that hold t:

    score(q, d) = sum over query tokens t (repeats count) of
                  idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))                  (Lucene's idf, >= 0)

with k1 = 1.2, b = 0.75 by default. This is Lucene's BM25Similarity since Lucene 8, which dropped
Robertson's constant (k1 + 1) numerator factor (it rescales every score and changes no ranking);
unlike Lucene, document lengths are exact (Lucene stores them in one lossy byte). A document
without tokens has length 0 (and counts in avgdl); query tokens absent from the collection score 0.

The implementation is ``bm25s`` (``method="lucene"``): it computes each (term, document) weight
once, idf(t) * (tf / (tf + k1 * ...)) with idf by ``math.log(1 + x)``, and a query's scores against
every document as the sum of its tokens' weights in query order (``get_scores_from_ids``). That is
the formula above up to float rounding (about 1e-15 relative in float64; tests/test_evaluate.py
checks it against a term-by-term transcription). Eval and mining index in float64; search indexes
in float32, bm25s's default, which is what their directories hold.

The idf and avgdl always come from the whole collection the index was built on; ``scores`` then
scores any chosen subset of documents (a CodeSearchNet chunk) with those collection statistics.

Shape legend: N documents, B queries, M scored documents, K best kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

K1, B = 1.2, 0.75
_WORD = re.compile(r"[^\W_]+")  # runs of letters/digits: splits on '_', punctuation, whitespace
_ASCII_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")  # HTTPServer2 -> HTTP, Server, 2


def code_search_tokens(text: str | Sequence[str]) -> list[str]:
    """Lowercased identifier parts of code or text, punctuation dropped.

    ``text`` is a raw string or a list of tokens (CodeSearchNet ``code_tokens`` /
    ``docstring_tokens``); a list is tokenized item by item and concatenated. Rules:
    1. Runs of letters and digits are kept; everything else (punctuation, operators, whitespace,
       and ``_``) separates them, so snake_case splits into its words and ``->``, ``(`` vanish.
    2. An ASCII run splits at camelCase boundaries, keeping acronyms whole, and between letters and
       digits: ``getHTTPResponse2xx`` -> get, http, response, 2, xx.
       A run with non-ASCII characters is kept whole (lowercased).
    3. Everything is lowercased. Nothing else is dropped (no stop words, no stemming).

    >>> code_search_tokens("def get_user_ID(self): return self.userName")
    ['def', 'get', 'user', 'id', 'self', 'return', 'self', 'user', 'name']
    """
    pieces = [text] if isinstance(text, str) else text
    out: list[str] = []
    for piece in pieces:
        if not isinstance(piece, str):
            raise TypeError(f"text must be a str or a sequence of str; got an item of type {type(piece).__name__}")
        for run in _WORD.findall(piece):
            if run.isascii():
                out.extend(p.lower() for p in _ASCII_PART.findall(run))
            else:
                out.append(run.lower())
    return out


def _token_lists(seqs, what: str) -> None:
    if isinstance(seqs, str) or any(isinstance(s, str) for s in seqs):
        raise TypeError(f"{what} must be a sequence of token lists, not strings")


def _bm25s():
    """The bm25s module, its logger quieted: it sets itself to DEBUG on import and logs each build."""
    import logging

    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


class BM25Index:
    """A BM25 index over tokenized documents: a ``bm25s.BM25`` (Lucene variant) and its scoring.

    Build with ``BM25Index.from_documents(tokenized_docs)``; score with ``scores`` (then ``top_k``
    for each query's best documents) or plug ``scores_fn(queries)`` into
    ``mmssl.evaluate.codesearchnet_mrr``. ``save`` / ``load`` keep bm25s's own directory format.
    """

    def __init__(self, bm25) -> None:
        self.bm25 = bm25
        self._n_terms = len(bm25.scores["indptr"]) - 1  # terms with weights (bm25s may list "" beyond)

    @classmethod
    def from_documents(
        cls, documents: Sequence[Sequence[str]], *, k1: float = K1, b: float = B, dtype: str = "float64"
    ) -> BM25Index:
        """Index tokenized documents (e.g. ``[code_search_tokens(c) for c in codes]``)."""
        bm25s = _bm25s()
        _token_lists(documents, "documents")
        if len(documents) == 0:
            raise ValueError("need at least one document")
        if k1 < 0 or not 0.0 <= b <= 1.0:
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1; got k1={k1}, b={b}")
        bm25 = bm25s.BM25(method="lucene", k1=k1, b=b, dtype=dtype)
        with np.errstate(invalid="ignore", divide="ignore"):  # a collection without any token: avgdl 0
            bm25.index([list(d) for d in documents], create_empty_token=False, show_progress=False)
        return cls(bm25)

    def save(self, path: str | Path) -> None:
        self.bm25.save(str(path), show_progress=False)

    @classmethod
    def load(cls, path: str | Path) -> BM25Index:
        return cls(_bm25s().BM25.load(str(path), mmap=False, show_progress=False, verbosity=0))

    def __len__(self) -> int:
        return int(self.bm25.scores["num_docs"])

    def token_ids(self, tokens: Sequence[str]) -> list[int]:
        """The collection's term numbers of ``tokens`` (repeats kept); tokens it lacks are dropped."""
        vocab = self.bm25.vocab_dict
        return [vocab[t] for t in tokens if vocab.get(t, self._n_terms) < self._n_terms]

    def scores_of(self, token_ids: Sequence[int], weight_mask: np.ndarray | None = None) -> np.ndarray:
        """(N,) scores of one query (its ``token_ids``) against every document, times ``weight_mask``."""
        if len(token_ids) == 0:
            return np.zeros(len(self), dtype=self.bm25.dtype)
        return self.bm25.get_scores_from_ids(token_ids, weight_mask=weight_mask)

    def _score_ids(self, ids: Sequence[Sequence[int]], doc_indices=None) -> np.ndarray:
        docs = None if doc_indices is None else np.asarray(doc_indices, dtype=np.int64)
        out = np.empty((len(ids), len(self) if docs is None else len(docs)), dtype=self.bm25.dtype)  # (B, M)
        for r, q in enumerate(ids):
            s = self.scores_of(q)
            out[r] = s if docs is None else s[docs]
        return out

    def scores(
        self, query_tokens_batch: Sequence[Sequence[str]], doc_indices: Sequence[int] | np.ndarray | None = None
    ) -> np.ndarray:
        """(B, M) scores of B tokenized queries against documents ``doc_indices`` (default all).

        Collection statistics (idf, avgdl) are those of the whole index, whatever the subset.
        """
        _token_lists(query_tokens_batch, "queries")
        return self._score_ids([self.token_ids(q) for q in query_tokens_batch], doc_indices)

    def scores_fn(self, queries: Sequence[Sequence[str]]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """``scores_fn(query_idx, doc_idx)`` for ``mmssl.evaluate``: query i is ``queries[i]``.

        The queries are looked up in the vocabulary once; each call scores the selected ones
        against the selected documents.
        """
        _token_lists(queries, "queries")
        ids = [self.token_ids(q) for q in queries]

        def scores_fn(query_idx: np.ndarray, doc_idx: np.ndarray) -> np.ndarray:
            return self._score_ids([ids[i] for i in np.asarray(query_idx, dtype=np.int64)], doc_idx)

        return scores_fn


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` best of (B, N) ``scores``: (scores (B, K), columns (B, K)), K = min(k, N),
    ordered by score, equal scores by column number (the lower first). Of several columns tied at
    the cut, which get in is ``np.argpartition``'s choice (the same for the same scores)."""
    n = scores.shape[1]
    k = min(k, n)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(scores), 1))
    top_s = np.take_along_axis(scores, top, 1)
    order = np.lexsort((top, -top_s), axis=1)  # by score, then by column
    return np.take_along_axis(top_s, order, 1), np.take_along_axis(top, order, 1)


__all__ = ["B", "K1", "BM25Index", "code_search_tokens", "top_k"]
