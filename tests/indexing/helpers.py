"""Vectors and items the index-layer tests build on, and the exact search they are checked against."""

from __future__ import annotations

import numpy as np


def clustered(n: int, d: int, centers: int = 50, seed: int = 0) -> np.ndarray:
    """Unit vectors from a Gaussian mixture (what embeddings look like), not uniform noise."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(centers, d))
    x = mu[rng.integers(0, centers, n)] + 0.35 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(xq, xb, ids, k):
    s = xq @ xb.T
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, top, axis=1), ids[top]


def items_for(ids):
    texts = [f"def func_{i}(x):\n    return compute_value_{i}(x)" for i in ids]
    payloads = [{"repo": f"repo{i % 7}", "path": f"mod{i}.py"} for i in ids]
    return ids, texts, payloads
