"""Representation metrics: zero-shot classification accuracy, linear probes and the geometry of a
set of embeddings (collapse diagnostics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmssl.evaluate._arrays import (
    _as_scoring_matrix,
    _check_ks,
    _default_block,
    _is_tensor,
    _ranks_of_positives,
    _to_numpy,
)


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
