"""Okapi BM25 over code tokens: the lexical baseline for code search.

For a query q and document d of length |d| (tokens) in a collection of N documents with mean
length avgdl, where tf(t, d) counts term t in d and df(t) counts the documents that hold t:

    score(q, d) = sum over query tokens t (repeats count) of
                  idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))                  (Lucene's idf, >= 0)

with k1 = 1.2, b = 0.75 by default. This is Lucene's BM25Similarity since Lucene 8, which dropped
Robertson's constant (k1 + 1) numerator factor (it rescales every score and changes no ranking),
and is what ``bm25s.BM25(method="lucene")`` computes; unlike Lucene, document lengths are exact
(Lucene stores them in one lossy byte). Query tokens absent from the collection score 0.

The idf and avgdl always come from the whole collection the index was built on; ``scores`` then
scores any chosen subset of documents (a CodeSearchNet chunk) with those collection statistics.

Why hand-written (scipy.sparse) rather than a library: the evaluation scores a batch of queries
against a chosen subset of documents (a 1,000-code chunk) many times. ``bm25s`` (well kept, same
formula, tested against here when installed) scores one query against the whole collection per
call, in float32; ``rank_bm25`` uses a different idf (with a negative-idf floor) and pure-Python
loops. Here the collection is one CSR matrix W of per-(document, term) weights, built once, and a
batch of queries against documents ``idx`` is one sparse product ``Q @ W[idx].T`` in float64.

Shape legend: N documents, V vocabulary, B queries, M scored documents.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

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


@dataclass(frozen=True, eq=False)
class BM25Index:
    """A BM25 index: the (N, V) CSR matrix of per-(document, term) BM25 weights and its vocabulary.

    Build with ``BM25Index.from_documents(tokenized_docs)``; score with ``scores`` or plug
    ``scores_fn(queries)`` into ``mmssl.evaluate.codesearchnet_mrr``.
    """

    vocab: dict[str, int]
    weights: sp.csr_matrix  # (N, V): idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl))
    idf: np.ndarray  # (V,)
    doc_len: np.ndarray  # (N,)
    avgdl: float
    k1: float
    b: float

    @property
    def n_docs(self) -> int:
        return self.weights.shape[0]

    @classmethod
    def from_documents(cls, documents: Sequence[Sequence[str]], *, k1: float = 1.2, b: float = 0.75) -> BM25Index:
        """Index tokenized documents (e.g. ``[code_search_tokens(c) for c in codes]``)."""
        if isinstance(documents, str) or any(isinstance(d, str) for d in documents):
            raise TypeError("documents must be a sequence of token lists, not strings")
        if len(documents) == 0:
            raise ValueError("need at least one document")
        if k1 < 0 or not 0.0 <= b <= 1.0:
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1; got k1={k1}, b={b}")
        vocab: dict[str, int] = {}
        lens = np.fromiter((len(d) for d in documents), dtype=np.int64, count=len(documents))
        term_ids = np.fromiter(
            (vocab.setdefault(t, len(vocab)) for d in documents for t in d), dtype=np.int64, count=int(lens.sum())
        )
        doc_ids = np.repeat(np.arange(len(documents)), lens)
        n, v = len(documents), max(len(vocab), 1)
        tf = sp.csr_matrix((np.ones(len(term_ids)), (doc_ids, term_ids)), shape=(n, v))  # (N, V) counts
        tf.sum_duplicates()
        tf.sort_indices()
        df = np.bincount(tf.indices, minlength=v)  # (V,)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        avgdl = float(lens.mean()) if lens.sum() > 0 else 1.0
        norm = k1 * (1.0 - b + b * lens / avgdl)  # (N,)
        row = np.repeat(np.arange(n), np.diff(tf.indptr))  # document of each stored entry
        data = idf[tf.indices] * tf.data / (tf.data + norm[row])
        weights = sp.csr_matrix((data, tf.indices, tf.indptr), shape=(n, v))
        return cls(vocab=vocab, weights=weights, idf=idf, doc_len=lens, avgdl=avgdl, k1=k1, b=b)

    def query_matrix(self, queries: Sequence[Sequence[str]]) -> sp.csr_matrix:
        """(B, V) CSR of query term counts; tokens outside the vocabulary are dropped."""
        if isinstance(queries, str) or any(isinstance(q, str) for q in queries):
            raise TypeError("queries must be a sequence of token lists, not strings")
        ids = [[self.vocab[t] for t in q if t in self.vocab] for q in queries]
        lens = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        cols = np.fromiter((t for i in ids for t in i), dtype=np.int64, count=int(lens.sum()))
        rows = np.repeat(np.arange(len(ids)), lens)
        q = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(ids), self.weights.shape[1]))
        q.sum_duplicates()
        return q

    def scores_from_matrix(
        self, query_matrix: sp.csr_matrix, doc_indices: Sequence[int] | np.ndarray | None = None
    ) -> np.ndarray:
        """(B, M) float64 BM25 scores of ``query_matrix`` rows against documents ``doc_indices``."""
        w = self.weights if doc_indices is None else self.weights[np.asarray(doc_indices, dtype=np.int64)]  # (M, V)
        return np.asarray((query_matrix @ w.T).toarray(), dtype=np.float64)  # (B, M)

    def scores(
        self, query_tokens_batch: Sequence[Sequence[str]], doc_indices: Sequence[int] | np.ndarray | None = None
    ) -> np.ndarray:
        """(B, M) float64 scores of B tokenized queries against documents ``doc_indices`` (default all).

        Collection statistics (idf, avgdl) are those of the whole index, whatever the subset.
        """
        return self.scores_from_matrix(self.query_matrix(query_tokens_batch), doc_indices)

    def scores_fn(self, queries: Sequence[Sequence[str]]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """``scores_fn(query_idx, doc_idx)`` for ``mmssl.evaluate``: query i is ``queries[i]``.

        The queries are encoded once; each call scores the selected rows against the selected docs.
        """
        q = self.query_matrix(queries)

        def scores_fn(query_idx: np.ndarray, doc_idx: np.ndarray) -> np.ndarray:
            return self.scores_from_matrix(q[np.asarray(query_idx, dtype=np.int64)], doc_idx)

        return scores_fn


__all__ = ["BM25Index", "code_search_tokens"]
