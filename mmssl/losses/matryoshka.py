"""Matryoshka Representation Learning's loss (Kusupati et al. 2022): a pair loss summed over the
embeddings' leading prefixes.

    loss = MatryoshkaLoss(InfoNCELoss(), dims=(512, 256, 128, 64))
    value = loss(a, b, logit_scale=s)                   # a, b: (B, 512) L2-normalized

    L = sum_k w_k * inner(normalize(a[:, :d_k]), normalize(b[:, :d_k]), **same keyword arguments)

Each prefix is L2-normalized again before the inner loss (a prefix of a unit vector is not one),
hard negatives (``negatives``, (M, D)) are cut and normalized the same way, and every other keyword
argument (``logit_scale``, ``pair_ids``, ...) reaches the inner loss unchanged. Weights default to
1 each (the paper's). With ``output_dict=True`` the sum is returned under the inner loss's own key.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MatryoshkaLoss(nn.Module):
    def __init__(self, loss: nn.Module, dims: Sequence[int], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not dims:
            raise ValueError("MatryoshkaLoss needs at least one prefix size")
        weights = [1.0] * len(dims) if weights is None else list(weights)
        if len(weights) != len(dims) or any(w < 0 for w in weights):
            raise ValueError(f"need one non-negative weight per size: sizes {list(dims)}, weights {weights}")
        self.loss, self.dims, self.weights = loss, [int(d) for d in dims], weights

    def forward(self, a: Tensor, b: Tensor, output_dict: bool = False, negatives: Tensor | None = None, **kwargs):
        from mmssl.matryoshka import truncate

        if max(self.dims) > a.shape[1]:
            raise ValueError(f"prefix size {max(self.dims)} exceeds the embeddings' {a.shape[1]}")
        total, key = a.new_zeros(()), "contrastive_loss"
        for d, w in zip(self.dims, self.weights):
            if not w:
                continue
            extra = {} if negatives is None else {"negatives": truncate(negatives, d)}
            out = self.loss(truncate(a, d), truncate(b, d), output_dict=True, **extra, **kwargs)
            key = next(iter(out))
            total = total + w * sum(out.values())
        return {key: total} if output_dict else total


__all__ = ["MatryoshkaLoss"]
