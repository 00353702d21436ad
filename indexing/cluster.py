"""k-means over embeddings with FAISS: pseudo-labels for DeepCluster-style pretraining.

Shape legend: N vectors, D their dimension, P the PCA dimension, K clusters.

``kmeans(x, k)`` follows DeepCluster's recipe (Caron et al. 2018, "Deep Clustering for Unsupervised
Learning of Visual Features"): PCA-whitening to ``pca_dim`` (FAISS ``PCAMatrix`` with eigen power
-0.5), L2 normalization, then FAISS ``Kmeans`` (on the GPUs when FAISS sees any). It returns the
assignment of every vector and a function that assigns new vectors to the same centroids (held-out
images), so both go through the same PCA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from indexing.build import as_float32_matrix, gpu_count


@dataclass
class Clustering:
    labels: np.ndarray  # (N,) int64, in [0, K)
    centroids: np.ndarray  # (K, P) float32, in the PCA-whitened, normalized space
    sizes: np.ndarray  # (K,) vectors per cluster (FAISS splits empty clusters, so none is 0 for N >= K)
    assign: Callable[[np.ndarray], np.ndarray]  # (M, D) -> (M,) int64, nearest centroid


def kmeans(
    x, k: int, *, pca_dim: int | None = 64, niter: int = 20, seed: int = 0, min_points_per_centroid: int = 39
) -> Clustering:
    """Cluster the rows of ``x`` (N, D) into ``k`` groups (see the module docstring).
    ``min_points_per_centroid``: below this many vectors per cluster FAISS warns (its default, 39;
    1 for small clusters on purpose)."""
    import faiss

    x = as_float32_matrix(x, "x")
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means: k={k} clusters for {n} vectors (need 1 <= k <= N)")
    pca = None
    if pca_dim is not None and pca_dim < d:
        pca = faiss.PCAMatrix(d, pca_dim, -0.5)  # whitening
        pca.train(x)

    def project(v: np.ndarray) -> np.ndarray:
        v = as_float32_matrix(v, "x")
        v = pca.apply(v) if pca is not None else v.copy()  # (M, P)
        faiss.normalize_L2(v)
        return v

    xp = project(x)
    km = faiss.Kmeans(
        xp.shape[1], k, niter=niter, seed=seed, gpu=gpu_count() > 0, verbose=False,
        min_points_per_centroid=min_points_per_centroid,
    )  # fmt: skip
    km.train(xp)
    _, labels = km.index.search(xp, 1)
    labels = labels[:, 0].astype(np.int64)

    def assign(v: np.ndarray) -> np.ndarray:
        return km.index.search(project(v), 1)[1][:, 0].astype(np.int64)

    return Clustering(labels, km.centroids.copy(), np.bincount(labels, minlength=k), assign)
