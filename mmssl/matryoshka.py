"""Nested (Matryoshka) embeddings: a model trained so that each leading prefix of its embedding is
itself a good embedding (Kusupati et al. 2022, "Matryoshka Representation Learning").

``parse_dims("512,256,128,64", embed_dim)`` checks a list of prefix sizes; ``truncate(x, d)`` keeps
the first ``d`` dimensions of embeddings and L2-normalizes them again (numpy arrays or torch
tensors, (N, D) -> (N, d)); ``PrefixEncoder(model, d)`` is a model whose embeddings are truncated so
(``mmssl eval --dims``); the index layer truncates with ``truncate`` too (``mmssl index build --dim``).
The loss is ``mmssl.losses.MatryoshkaLoss``.

``principal_rotation(x)`` and ``rotate_outputs(model, R)`` start Matryoshka training from a
pretrained tower's principal axes (``mmssl train --matryoshka-init pca``, and ``auto``, the default,
on pretrained ``transformers`` towers): the towers' projections
are turned by one orthogonal matrix so that each leading prefix is the best linear subspace of that
size for the embeddings of a sample of the training pairs. Full-size cosines are unchanged (an
orthogonal map keeps them); the prefixes start from what PCA keeps instead of from arbitrary
coordinates, which a short fine-tune cannot reorder.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def parse_dims(spec: str | None, embed_dim: int | None = None, option: str = "--matryoshka") -> tuple[int, ...]:
    """ "512,256,128,64" -> (512, 256, 128, 64), largest first; each a whole number >= 1 and, with
    ``embed_dim``, at most it; () for None or ""."""
    if not spec:
        return ()
    dims = []
    for part in str(spec).split(","):
        try:
            d = int(part.strip())
        except ValueError:
            raise ValueError(f"{option} {spec!r}: {part.strip()!r} is not a whole number") from None
        if d < 1:
            raise ValueError(f"{option} {spec!r}: sizes must be >= 1, got {d}")
        if embed_dim is not None and d > embed_dim:
            raise ValueError(f"{option} {spec!r}: {d} exceeds the embedding size {embed_dim}")
        dims.append(d)
    if len(set(dims)) != len(dims):
        raise ValueError(f"{option} {spec!r}: a size is given twice")
    return tuple(sorted(dims, reverse=True))


def parse_weights(spec: str | None, dims: tuple[int, ...]) -> tuple[float, ...] | None:
    """ "1,1,0.5,0.5" -> one non-negative weight per size (in the order the sizes were given)."""
    if not spec:
        return None
    try:
        weights = tuple(float(w) for w in str(spec).split(","))
    except ValueError:
        raise ValueError(f"--matryoshka-weights {spec!r}: not a comma list of numbers") from None
    if len(weights) != len(dims) or any(not w >= 0 for w in weights) or not any(weights):
        raise ValueError(f"--matryoshka-weights {spec!r}: give {len(dims)} non-negative weights, not all 0")
    return weights


def truncate(x, dim: int):
    """The first ``dim`` dimensions of (N, D) embeddings, L2-normalized again (numpy or torch)."""
    if dim < 1 or dim > x.shape[-1]:
        raise ValueError(f"cannot keep {dim} of {x.shape[-1]} dimensions")
    head = x[..., :dim]
    torch = sys.modules.get("torch")  # not imported: x is no tensor (the torch-free query path stays so)
    if torch is not None and isinstance(head, torch.Tensor):
        return torch.nn.functional.normalize(head, dim=-1)
    import numpy as np

    norms = np.linalg.norm(head, axis=-1, keepdims=True)
    return (head / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


PCA_SAMPLE = 1024  # training pairs whose embeddings (both sides) give the principal axes


def principal_rotation(embeddings):
    """(D, D) orthogonal matrix whose rows are the principal axes of (N, D) ``embeddings`` (a torch
    tensor), the largest variance first: ``x @ R.T`` keeps every cosine and puts the most variance in
    each leading prefix. Needs N >= 2; with N < D the axes past N - 1 are an arbitrary completion."""
    import torch

    if embeddings.ndim != 2 or len(embeddings) < 2:
        raise ValueError(f"principal axes need at least 2 embeddings of shape (N, D), got {tuple(embeddings.shape)}")
    x = embeddings.double()
    x = x - x.mean(0)
    _, vectors = torch.linalg.eigh(x.T @ x / len(x))  # (D, D), columns by ascending eigenvalue
    return vectors.flip(-1).T.contiguous().float()


def rotate_outputs(model, rotation) -> None:
    """Turn every tower's output by ``rotation`` (D, D), folded into its bias-free projection
    (a shared tower once), so that ``embed`` then returns ``embeddings @ rotation.T``."""
    import torch

    towers = {id(t): (m, t) for m, t in model.towers.items()}.values()  # a shared tower once
    for modality, tower in towers:
        proj = getattr(tower, "proj", None)
        if not isinstance(proj, torch.nn.Linear) or proj.bias is not None:
            raise ValueError(
                f"--matryoshka-init pca: the {modality} tower's output is not a bias-free linear projection "
                f"({type(proj).__name__}); use --matryoshka-init none"
            )
        with torch.no_grad():
            proj.weight.copy_(rotation.to(proj.weight) @ proj.weight)


def wants_pca(choice: str, model) -> bool:
    """``--matryoshka-init``: pca, none, or auto (pca where every tower of ``model`` is a pretrained
    ``transformers`` tower: their coordinates are the ones a short fine-tune cannot reorder; a
    tower from scratch has no axes worth keeping, and an open_clip tower may have no projection)."""
    if choice != "auto":
        return choice == "pca"
    from mmssl.models.text import TextTower

    return all(isinstance(t, TextTower) and bool(t.config.init) for t in model.towers.values())


def pca_init(model, pairs, batch_size: int = 64) -> torch.Tensor:
    """Rotate ``model`` (a ``DualEncoder``) to the principal axes of its own embeddings of
    ``pairs`` (both sides, queries and candidates together); returns the rotation."""
    import torch

    first, second = model.config.modalities
    embeddings = torch.cat([
        model.embed(first, pairs.queries, batch_size), model.embed(second, pairs.candidates, batch_size)
    ])  # fmt: skip
    rotation = principal_rotation(embeddings)
    rotate_outputs(model, rotation)
    return rotation


class PrefixEncoder:
    """A model (``DualEncoder`` or ``OnnxEncoder``) whose ``embed`` keeps the first ``dim``
    dimensions, renormalized. ``cache``: a dict shared by several of them, so that one model's
    embeddings are computed once for every size."""

    def __init__(self, model, dim: int, cache: dict | None = None) -> None:
        self.model, self.dim = model, dim
        self.cache = {} if cache is None else cache
        self.config = replace(model.config, embed_dim=dim)
        self.device = model.device

    def is_image(self, modality: str) -> bool:
        return self.model.is_image(modality)

    def embed(self, modality: str, items: list, *args, **kwargs):
        key = (modality, tuple(map(id, items)) if self.model.is_image(modality) else tuple(items))
        if key not in self.cache:
            self.cache[key] = self.model.embed(modality, items, *args, **kwargs)
        return truncate(self.cache[key], self.dim)
