"""In-batch contrastive losses: InfoNCE (CLIP, with a chunked form), NT-Xent (SimCLR), SigLIP.

Shape legend: B local batch, N global batch (B summed over ranks), D dim, C rows of one chunk.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.distributed import all_gather_with_grad, get_world_size, is_distributed, rank_offset
from mmssl.losses._common import MAX_LOGIT_SCALE, _check_pair, _Temperature


def _duplicate_mask(row_ids: Tensor | None, col_ids: Tensor | None, offset: int = 0) -> Tensor | None:
    """(R, N) True where two different items share an id (false negatives); None if no ids."""
    if row_ids is None or col_ids is None:
        return None
    same = row_ids[:, None] == col_ids[None, :]  # (R, N)
    rows = torch.arange(row_ids.shape[0], device=row_ids.device)
    same[rows, rows + offset] = False  # the positive itself stays
    return same if bool(same.any()) else None


def _block_logits(a: Tensor, b: Tensor, scale: Tensor, ids: Tensor | None, start: int, end: int):
    """Rows start:end of the scaled logits, duplicate positives masked to -inf: ((C, N), mask or None)."""
    logits = (a[start:end] @ b.T).mul_(scale)  # (C, N)
    mask = _duplicate_mask(ids[start:end] if ids is not None else None, ids, start)
    if mask is not None:
        logits.masked_fill_(mask, -math.inf)
    return logits, mask


class _ChunkedSymmetricInfoNCE(torch.autograd.Function):
    """Symmetric InfoNCE over the full (N, N) logits without ever holding them.

    Forward: for each block of C rows, logits (C, N) give the exact row log-sum-exp (image->text)
    and update a running column log-sum-exp (text->image). Backward: recompute each block and form
    d loss / d logits = (softmax_row + softmax_col - 2 * target) / (2N) for it. Peak memory is
    O(C * N) instead of O(N^2); compute is 4 matmuls of (C, D) x (D, N) per block instead of 3.
    """

    @staticmethod
    def forward(ctx, a, b, scale, ids, chunk_size: int, smoothing: float):  # a, b: (N, D)
        n = a.shape[0]
        row_lse = a.new_empty(n)
        col_lse = a.new_full((n,), -math.inf)
        row_sum = a.new_zeros(n) if smoothing else None
        col_sum = a.new_zeros(n) if smoothing else None
        row_valid = a.new_full((n,), float(n))
        col_valid = a.new_full((n,), float(n))
        for start in range(0, n, chunk_size):
            end = min(start + chunk_size, n)
            logits, mask = _block_logits(a, b, scale, ids, start, end)  # (C, N)
            if mask is not None:
                row_valid[start:end] -= mask.sum(1)
                col_valid -= mask.sum(0)
            row_lse[start:end] = torch.logsumexp(logits, dim=1)
            col_lse = torch.logaddexp(col_lse, torch.logsumexp(logits, dim=0))
            if smoothing:
                if mask is not None:
                    logits.masked_fill_(mask, 0.0)
                row_sum[start:end] = logits.sum(1)
                col_sum += logits.sum(0)
            del logits
        pos = scale * (a * b).sum(1)  # (N,)
        loss_row = row_lse - pos
        loss_col = col_lse - pos
        if smoothing:
            loss_row = loss_row - smoothing * (row_sum / row_valid - pos)
            loss_col = loss_col - smoothing * (col_sum / col_valid - pos)
        ctx.save_for_backward(a, b, scale, row_lse, col_lse, row_valid, col_valid)
        ctx.ids = ids
        ctx.chunk_size = chunk_size
        ctx.smoothing = smoothing
        return 0.5 * (loss_row.mean() + loss_col.mean())

    @staticmethod
    def backward(ctx, grad_out):
        a, b, scale, row_lse, col_lse, row_valid, col_valid = ctx.saved_tensors
        ids, chunk_size, eps = ctx.ids, ctx.chunk_size, ctx.smoothing
        n = a.shape[0]
        grad_a = torch.zeros_like(a)
        grad_b = torch.zeros_like(b)
        grad_scale = torch.zeros((), dtype=a.dtype, device=a.device)
        coef = grad_out / (2 * n)
        for start in range(0, n, chunk_size):
            end = min(start + chunk_size, n)
            # In place throughout: at most two (C, N) buffers are alive at once.
            logits, mask = _block_logits(a, b, scale, ids, start, end)  # (C, N)
            g = torch.sub(logits, row_lse[start:end, None]).exp_()  # row softmax
            g += logits.sub_(col_lse[None, :]).exp_()  # + column softmax
            del logits
            rows = torch.arange(end - start, device=a.device)
            g[rows, rows + start] -= 2.0 * (1.0 - eps)
            if eps:
                g -= eps / row_valid[start:end, None]
                g -= eps / col_valid[None, :]
                if mask is not None:
                    g.masked_fill_(mask, 0.0)
            g *= coef
            g_b = g @ b  # (C, D): d loss / d a, divided by the scale
            grad_a[start:end] = scale * g_b
            grad_b.addmm_(g.T, a[start:end], alpha=float(scale))  # (N, D)
            # d loss / d scale = sum_ij g_ij <a_i, b_j> = sum_i <a_i, (g b)_i>: no (C, N) sims kept.
            grad_scale += (g_b * a[start:end]).sum()
            del g
        return grad_a, grad_b, grad_scale.reshape(scale.shape), None, None, None


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE, the CLIP loss (Radford et al. 2021; van den Oord et al. 2018).

    With logits ``l_ij = s * <a_i, b_j>`` over the global batch and ``s = 1/T`` (clamped to 100):

        L = 1/2 * [ mean_i CE(l_i., i) + mean_j CE(l_.j, j) ]
        CE(l_i., i) = logsumexp_j l_ij - l_ii

    With label smoothing e the target is ``(1 - e) * onehot + e / N`` (torch's convention).
    ``pair_ids`` (optional, (B,)) marks items that are the same caption/docstring: off-diagonal
    pairs with equal ids are removed from the negatives (false negatives: their logits are masked to
    -inf). Inputs are used as given; pass L2-normalized embeddings for cosine logits.

    Distributed (``torch.distributed`` initialized): both sides are all-gathered with gradient.
    ``local_loss=False`` computes the full (N, N) loss on every rank; ``local_loss=True`` computes
    only this rank's rows and columns, (B, N) logits each, which is cheaper; the mean over ranks is
    the same global loss. The full loss runs through one custom autograd kernel that keeps no (N, N)
    tensor for backward (it recomputes the logits there): peak memory about 2 N^2 floats, against
    about 4 N^2 for open_clip's ``ClipLoss``. ``chunk_size`` splits it into blocks of rows: peak
    O(chunk_size * N) instead of O(N^2), same value and gradients to fp32 round-off.

    Hard negatives (``negatives``, (M, D), e.g. mined by ``mmssl.negatives``): extra candidates
    that are nobody's positive. They become M more columns of the a->b logits of every row,
    ``L_row,i = logsumexp([l_i., s <a_i, n_.>]) - l_ii`` (DPR's "in-batch + hard negatives"); the
    b->a direction is unchanged (a hard negative has no query). ``negative_ids`` (M,) are the ids of
    the pairs the negatives come from: a row whose own id equals one is not scored against it (it is
    that row's positive, or the positive of an identical query); ``negative_mask`` (M,) False marks
    placeholder columns (a pair with fewer mined negatives than asked for), scored by no row.
    Distributed, the negatives are all-gathered too, so every row sees the global batch's. This
    form keeps its logits for backward ((N, N + M) floats; no chunking).

    Shape: a (B, D), b (B, D), pair_ids (B,), negatives (M, D) -> scalar.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        learn_temperature: bool = False,
        max_logit_scale: float | None = MAX_LOGIT_SCALE,
        label_smoothing: float = 0.0,
        local_loss: bool = False,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
        if chunk_size is not None and local_loss:
            raise ValueError("chunk_size applies to the full loss; local_loss already holds only (B, N) logits")
        self.temperature = _Temperature(temperature, learn_temperature, max_logit_scale)
        self.label_smoothing = label_smoothing
        self.local_loss = local_loss
        self.chunk_size = chunk_size

    def forward(
        self,
        a: Tensor,
        b: Tensor,
        logit_scale: Tensor | float | None = None,
        pair_ids: Tensor | None = None,
        output_dict: bool = False,
        negatives: Tensor | None = None,
        negative_ids: Tensor | None = None,
        negative_mask: Tensor | None = None,
    ) -> Tensor | dict[str, Tensor]:
        _check_pair(a, b)
        if pair_ids is not None and pair_ids.shape != (a.shape[0],):
            raise ValueError(f"pair_ids must be (B,) with B={a.shape[0]}; got {tuple(pair_ids.shape)}")
        if negatives is not None:
            _check_negatives(a, negatives, negative_ids, negative_mask, pair_ids)
        scale = self.temperature.scale(logit_scale).to(a.dtype)
        local_a, local_b, local_ids = a, b, pair_ids
        if is_distributed():
            a, b = all_gather_with_grad(a), all_gather_with_grad(b)  # (N, D)
            if pair_ids is not None:
                pair_ids = all_gather_with_grad(pair_ids)
            if negatives is not None:
                negatives = all_gather_with_grad(negatives)  # (M W, D)
                negative_ids = all_gather_with_grad(negative_ids) if negative_ids is not None else None
                if negative_mask is not None:  # gloo gathers no bool tensors
                    negative_mask = all_gather_with_grad(negative_mask.to(torch.uint8))
        if negatives is not None:
            loss = self._with_negatives(
                local_a, local_b, a, b, scale, local_ids, pair_ids, negatives, negative_ids, negative_mask
            )
        elif self.local_loss:
            loss = self._local(local_a, local_b, a, b, scale, local_ids, pair_ids)
        else:
            # One custom-autograd kernel for both forms: the plain form is a single block of N rows
            # (peak 2 N^2 floats: forward and backward work in place, and backward recomputes the
            # logits rather than keeping them), the chunked form blocks of chunk_size rows. The
            # block loop accumulates log-sum-exps across blocks: keep it in fp32 under autocast.
            chunk = self.chunk_size or a.shape[0]
            dtype = torch.promote_types(a.dtype, torch.float32)
            with torch.autocast(device_type=a.device.type, enabled=False):
                loss = _ChunkedSymmetricInfoNCE.apply(
                    a.to(dtype), b.to(dtype), scale.to(dtype), pair_ids, chunk, self.label_smoothing
                )
        return {"contrastive_loss": loss} if output_dict else loss

    def _ce(self, logits: Tensor, labels: Tensor, mask: Tensor | None) -> Tensor:
        """Per-row cross-entropy (R,) of (R, N) logits; masked entries leave softmax and smoothing."""
        eps = self.label_smoothing
        if mask is None:
            return F.cross_entropy(logits, labels, label_smoothing=eps, reduction="none")
        logits = logits.masked_fill(mask, -math.inf)
        ce = F.cross_entropy(logits, labels, reduction="none")
        if eps:
            lse = torch.logsumexp(logits, dim=1)
            mean_valid = logits.masked_fill(mask, 0.0).sum(1) / (~mask).sum(1)
            ce = (1 - eps) * ce + eps * (lse - mean_valid)
        return ce

    def _with_negatives(self, la, lb, a, b, scale, local_ids, ids, neg, neg_ids, neg_mask) -> Tensor:
        """The loss with hard-negative columns, by plain autograd: rows are all N pairs, or this
        rank's B with ``local_loss`` (weighted as in ``_local``)."""
        offset = rank_offset(la.shape[0], la.device) if self.local_loss else 0
        ra, rb, row_ids = (la, lb, local_ids) if self.local_loss else (a, b, ids)
        labels = torch.arange(ra.shape[0], device=ra.device) + offset
        dup = _duplicate_mask(row_ids, ids, offset)  # (R, N) or None
        hidden = torch.zeros(ra.shape[0], neg.shape[0], dtype=torch.bool, device=ra.device)  # (R, M)
        if neg_mask is not None:
            hidden |= ~neg_mask.bool()[None, :]
        if row_ids is not None and neg_ids is not None:
            hidden |= row_ids[:, None] == neg_ids[None, :]
        in_batch = dup if dup is not None else hidden.new_zeros(ra.shape[0], b.shape[0])
        mask = torch.cat([in_batch, hidden], dim=1)  # (R, N + M)
        dtype = torch.promote_types(a.dtype, torch.float32)
        with torch.autocast(device_type=a.device.type, enabled=False):
            ra, rb, a, b, neg, scale = (t.to(dtype) for t in (ra, rb, a, b, neg, scale))
            row = self._ce(scale * (ra @ torch.cat([b, neg]).T), labels, mask if bool(mask.any()) else None)
            col = self._ce(scale * (rb @ a.T), labels, dup)  # (R,): b -> a, no negatives there
        if self.local_loss:
            return 0.5 * (row.sum() + col.sum()) * get_world_size() / a.shape[0]
        return 0.5 * (row.mean() + col.mean())

    def _local(self, la, lb, a, b, scale, local_ids, ids) -> Tensor:
        offset = rank_offset(la.shape[0], la.device)
        n_local, n_global = la.shape[0], a.shape[0]
        labels = torch.arange(n_local, device=la.device) + offset
        mask = _duplicate_mask(local_ids, ids, offset)
        row = self._ce(scale * (la @ b.T), labels, mask)  # a_local vs all b: (B, N) logits
        col = self._ce(scale * (lb @ a.T), labels, mask)  # b_local vs all a: (B, N) logits
        # Weighted so that the mean over ranks is the global mean, also for uneven batches.
        return 0.5 * (row.sum() + col.sum()) * get_world_size() / n_global


def _check_negatives(a: Tensor, neg: Tensor, neg_ids: Tensor | None, neg_mask: Tensor | None, ids) -> None:
    if neg.ndim != 2 or neg.shape[1] != a.shape[1]:
        raise ValueError(f"negatives must be (M, D) with D={a.shape[1]}; got {tuple(neg.shape)}")
    for name, t in (("negative_ids", neg_ids), ("negative_mask", neg_mask)):
        if t is not None and t.shape != (neg.shape[0],):
            raise ValueError(f"{name} must be (M,) with M={neg.shape[0]}; got {tuple(t.shape)}")
    if (ids is None) != (neg_ids is None):
        raise ValueError("give pair_ids and negative_ids together (false negatives are masked by id)")


# --------------------------------------------------------------------------------------------------
# NT-Xent (SimCLR)
# --------------------------------------------------------------------------------------------------


class NTXentLoss(nn.Module):
    """NT-Xent, the normalized temperature-scaled cross-entropy of SimCLR (Chen et al. 2020).

    The 2N views z = [a; b] are L2-normalized; view k's positive is its pair, its negatives the
    other 2N - 2 views:

        L = 1/(2N) * sum_k -log( exp(sim(z_k, z_pos(k)) / T) / sum_{m != k} exp(sim(z_k, z_m) / T) )

    Distributed: views are all-gathered, so N is the global batch.

    Shape: a (B, D), b (B, D) -> scalar.
    """

    def __init__(self, temperature: float = 0.5, learn_temperature: bool = False) -> None:
        super().__init__()
        self.temperature = _Temperature(temperature, learn_temperature, max_scale=None)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        _check_pair(a, b)
        a, b = all_gather_with_grad(a), all_gather_with_grad(b)
        n = a.shape[0]
        z = F.normalize(torch.cat([a, b]), dim=1)  # (2N, D)
        logits = self.temperature.scale(None).to(z.dtype) * (z @ z.T)  # (2N, 2N)
        logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), -math.inf)
        idx = torch.arange(n, device=z.device)
        labels = torch.cat([idx + n, idx])  # view k of a pairs with k of b, and back
        return F.cross_entropy(logits, labels)


# --------------------------------------------------------------------------------------------------
# SigLIP
# --------------------------------------------------------------------------------------------------


class SigLIPLoss(nn.Module):
    """Pairwise sigmoid loss of SigLIP (Zhai et al. 2023), with learnable scale and bias.

        L = -1/N * sum_{i,j} log sigmoid( y_ij * (s * <a_i, b_j> + t) ),  y_ij = +1 if i == j else -1

    ``s`` and ``t`` start at 10 and -10 as in the paper; callers may pass their own (open_clip's
    ``SigLipLoss`` convention: ``logit_scale`` already exponentiated). Distributed: ``b`` is
    all-gathered, each rank scores its own rows against every column; the mean over ranks is
    the global loss.

    Shape: a (B, D), b (B, D) -> scalar.
    """

    def __init__(self, init_scale: float = 10.0, init_bias: float = -10.0, learnable: bool = True) -> None:
        super().__init__()
        self.temperature = _Temperature(1.0 / init_scale, learnable, max_scale=None)
        bias = torch.tensor(float(init_bias))
        if learnable:
            self.logit_bias = nn.Parameter(bias)
        else:
            self.register_buffer("logit_bias", bias)

    def forward(
        self,
        a: Tensor,
        b: Tensor,
        logit_scale: Tensor | float | None = None,
        logit_bias: Tensor | float | None = None,
        output_dict: bool = False,
    ) -> Tensor | dict[str, Tensor]:
        _check_pair(a, b)
        scale = self.temperature.scale(logit_scale).to(a.dtype)
        bias = self.logit_bias if logit_bias is None else torch.as_tensor(logit_bias, device=a.device)
        n_local = a.shape[0]
        offset = rank_offset(n_local, a.device)
        b_all = all_gather_with_grad(b)  # (N, D)
        logits = scale * (a @ b_all.T) + bias.to(a.dtype)  # (B, N)
        signs = -torch.ones_like(logits)
        rows = torch.arange(n_local, device=a.device)
        signs[rows, rows + offset] = 1.0
        loss = -F.logsigmoid(signs * logits).sum() * get_world_size() / b_all.shape[0]
        return {"contrastive_loss": loss} if output_dict else loss
