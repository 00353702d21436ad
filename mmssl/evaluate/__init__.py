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

from mmssl.evaluate._arrays import ScoresFn
from mmssl.evaluate.representation import embedding_geometry, linear_probe, zero_shot_accuracy
from mmssl.evaluate.retrieval import (
    MRRResult,
    codesearchnet_chunks,
    codesearchnet_mrr,
    codesearchnet_mrr_embeddings,
    embedding_scores_fn,
    mrr_full,
    mrr_full_from_scores_fn,
    recall_at_k,
    recall_at_k_from_scores_fn,
    recall_at_k_groups,
    recall_from_ranks,
    retrieval_ranks,
    retrieval_ranks_from_scores_fn,
)

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
