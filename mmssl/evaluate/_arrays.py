"""Array helpers of the metrics: numpy or torch inputs, score matrices, ranks of positives (torch is
never imported here unless the caller already passed a tensor), block sizes and k checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ScoresFn = Callable[[np.ndarray, np.ndarray], Any]

# A score block holds at most this many entries (64 MiB in float32) unless block_size is given.
_BLOCK_ELEMENTS = 1 << 24


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


def _default_block(n: int, block_size: int | None) -> int:
    if block_size is None:
        return max(1, min(n, _BLOCK_ELEMENTS // max(n, 1)))
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1; got {block_size}")
    return block_size


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive ints; got {ks}")
    return ks
