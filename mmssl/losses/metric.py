"""Metric-learning losses over labelled batches or pairs: pair-contrastive, triplet with miners,
N-pair, lifted structured, soft nearest neighbours, and NCE.

Shape legend: B batch, D dim, K noise samples per data sample.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.losses._common import _check_labels, _check_pair, _Temperature


def pairwise_distance(x: Tensor, y: Tensor | None = None, metric: str = "euclidean", squared: bool = False) -> Tensor:
    """(B, M) distances between the rows of x (B, D) and y (M, D); the gradient is finite at 0.

    ``euclidean``: ||x - y||_2 (or its square); ``cosine``: 1 - cos(x, y).
    """
    y = x if y is None else y
    if metric == "cosine":
        return 1.0 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
    if metric != "euclidean":
        raise ValueError(f"metric must be 'euclidean' or 'cosine'; got {metric!r}")
    sq = (x * x).sum(1, keepdim=True) - 2.0 * (x @ y.T) + (y * y).sum(1)[None, :]  # (B, M)
    sq = sq.clamp_min(0.0)
    if squared:
        return sq
    # sqrt has an infinite derivative at 0 (an item with itself, or a duplicate): keep it finite.
    zero = sq <= 1e-16
    return torch.sqrt(sq.masked_fill(zero, 1.0)).masked_fill(zero, 0.0)


def pairwise_distance_rows(x1: Tensor, x2: Tensor) -> Tensor:
    """(B,) Euclidean distance between matching rows, with a finite gradient at 0."""
    sq = ((x1 - x2) ** 2).sum(1)
    zero = sq <= 1e-16
    return torch.sqrt(sq.masked_fill(zero, 1.0)).masked_fill(zero, 0.0)


class PairContrastiveLoss(nn.Module):
    """Margin contrastive loss over pairs (Hadsell, Chopra & LeCun 2006).

        L = mean_pairs [ y * d^p + (1 - y) * max(0, m - d)^p ],  d = ||x1 - x2||,  p = 2 (or 1)

    ``same`` (y) is 1 for a similar pair, 0 for a dissimilar one.

    Shape: x1 (B, D), x2 (B, D), same (B,) -> scalar.
    """

    def __init__(self, margin: float = 1.0, squared: bool = True, metric: str = "euclidean") -> None:
        super().__init__()
        self.margin, self.squared, self.metric = margin, squared, metric

    def forward(self, x1: Tensor, x2: Tensor, same: Tensor) -> Tensor:
        _check_pair(x1, x2, "x1", "x2")
        if same.shape != (x1.shape[0],):
            raise ValueError(f"same must be (B,) with B={x1.shape[0]}; got {tuple(same.shape)}")
        if self.metric == "cosine":
            d = 1.0 - F.cosine_similarity(x1, x2, dim=1)
        else:
            d = pairwise_distance_rows(x1, x2)
        y = same.to(x1.dtype)
        power = 2 if self.squared else 1
        return (y * d.pow(power) + (1 - y) * F.relu(self.margin - d).pow(power)).mean()


Miner = Literal["all", "hard", "semi_hard", "batch_hard"]


def mine_triplets(dist: Tensor, labels: Tensor, miner: Miner, margin: float) -> tuple[Tensor, Tensor, Tensor]:
    """Indices (anchor, positive, negative) of the triplets a miner keeps, from (B, B) distances.

    - ``all``: every valid triplet: label[a] == label[p], a != p, label[n] != label[a].
    - ``hard``: those whose negative is no farther than the positive, d_an <= d_ap.
    - ``semi_hard``: negative farther than the positive but inside the margin,
      d_ap < d_an <= d_ap + margin (FaceNet's semi-hard band, pytorch-metric-learning's definition).
    - ``batch_hard``: per anchor, the farthest positive and the nearest negative (Hermans et al. 2017).
    """
    same = labels[:, None] == labels[None, :]  # (B, B)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos, neg = same & ~eye, ~same
    with torch.no_grad():
        if miner == "batch_hard":
            valid = pos.any(1) & neg.any(1)
            hardest_pos = dist.masked_fill(~pos, -math.inf).argmax(1)
            hardest_neg = dist.masked_fill(~neg, math.inf).argmin(1)
            anchors = torch.nonzero(valid).squeeze(1)
            return anchors, hardest_pos[anchors], hardest_neg[anchors]
        triplet = pos[:, :, None] & neg[:, None, :]  # (B, B, B): a, p, n
        gap = dist[:, None, :] - dist[:, :, None]  # d_an - d_ap, (B, B, B)
        if miner == "hard":
            triplet &= gap <= 0
        elif miner == "semi_hard":
            triplet &= (gap > 0) & (gap <= margin)
        elif miner != "all":
            raise ValueError(f"miner must be one of all, hard, semi_hard, batch_hard; got {miner!r}")
        a, p, n = torch.nonzero(triplet, as_tuple=True)
    return a, p, n


class TripletLoss(nn.Module):
    """Triplet margin loss with hard-negative mining (Schroff et al. 2015; Hermans et al. 2017).

        L = mean_{(a, p, n) mined} max(0, d(a, p) - d(a, n) + m)

    By default the mean runs over triplets with a non-zero loss (``reduction="mean_nonzero"``,
    Hermans' batch-all and pytorch-metric-learning's default); ``"mean"`` averages over all mined.
    Distances are Euclidean (optionally squared) or cosine, over the embeddings as given.

    Shape: embeddings (B, D), labels (B,) -> scalar (0 when no triplet is mined).
    """

    def __init__(
        self,
        margin: float = 0.2,
        miner: Miner = "semi_hard",
        metric: str = "euclidean",
        squared: bool = False,
        reduction: Literal["mean_nonzero", "mean"] = "mean_nonzero",
    ) -> None:
        super().__init__()
        if miner not in ("all", "hard", "semi_hard", "batch_hard"):
            raise ValueError(f"miner must be one of all, hard, semi_hard, batch_hard; got {miner!r}")
        self.margin, self.miner, self.metric, self.squared, self.reduction = margin, miner, metric, squared, reduction

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        _check_labels(embeddings, labels)
        dist = pairwise_distance(embeddings, metric=self.metric, squared=self.squared)  # (B, B)
        a, p, n = mine_triplets(dist, labels, self.miner, self.margin)
        losses = F.relu(dist[a, p] - dist[a, n] + self.margin)
        if self.reduction == "mean_nonzero":
            losses = losses[losses > 0]
        if losses.numel() == 0:
            return embeddings.sum() * 0.0  # keeps the graph, so backward() works on empty batches
        return losses.mean()


class NPairLoss(nn.Module):
    """Multi-class N-pair loss (Sohn 2016): one positive and N - 1 negatives per anchor.

        L = mean_i log(1 + sum_{j != i} exp(<f_i, f_j+> - <f_i, f_i+>)) + l2 * mean_i (|f_i|^2 + |f_i+|^2)

    which is cross-entropy over the logits <f_i, f_j+> with target i. The paper uses l2 = 0.002
    on unnormalized embeddings. Anchors must come from N different classes.

    Shape: anchors (N, D), positives (N, D) -> scalar.
    """

    def __init__(self, l2_reg: float = 0.0) -> None:
        super().__init__()
        self.l2_reg = l2_reg

    def forward(self, anchors: Tensor, positives: Tensor) -> Tensor:
        _check_pair(anchors, positives, "anchors", "positives")
        logits = anchors @ positives.T  # (N, N)
        loss = F.cross_entropy(logits, torch.arange(anchors.shape[0], device=anchors.device))
        if self.l2_reg:
            loss = loss + self.l2_reg * ((anchors**2).sum(1) + (positives**2).sum(1)).mean()
        return loss


class LiftedStructuredLoss(nn.Module):
    """Lifted structured embedding loss (Oh Song et al. 2016), its smooth form.

    For every positive pair (i, j) of the batch, with all negatives of both ends:

        J_ij = log( sum_{k: y_k != y_i} exp(m - D_ik) + sum_{l: y_l != y_j} exp(m - D_jl) ) + D_ij
        L    = 1 / (2 |P|) * sum_{(i, j) in P} max(0, J_ij)^2

    P holds unordered pairs i < j; D is Euclidean distance.

    Shape: embeddings (B, D), labels (B,) -> scalar (0 without positive pairs).
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        _check_labels(embeddings, labels)
        dist = pairwise_distance(embeddings)  # (B, B)
        same = labels[:, None] == labels[None, :]
        i, j = torch.nonzero(torch.triu(same, diagonal=1), as_tuple=True)
        if i.numel() == 0:
            return embeddings.sum() * 0.0
        neg_term = (self.margin - dist).masked_fill(same, -math.inf)  # (B, B): m - D_ik on negatives
        both = torch.cat([neg_term[i], neg_term[j]], dim=1)  # (|P|, 2B)
        j_ij = torch.logsumexp(both, dim=1) + dist[i, j]
        return F.relu(j_ij).pow(2).sum() / (2 * i.numel())


class NCELoss(nn.Module):
    """Noise-contrastive estimation (Gutmann & Hyvarinen 2010; Mnih & Teh 2012).

    Each data sample comes with K noise samples drawn from a known noise distribution q. With the
    model's unnormalized log-density s(x), the classifier logit "data, not noise" is
    ``Delta(x) = s(x) - log(K q(x))``, and

        L = mean_batch [ -log sigmoid(Delta(x)) - sum_{k=1..K} log(1 - sigmoid(Delta(x~_k))) ]

    At the optimum s(x) = log p_data(x): the model learns a self-normalized density.
    ``data_log_q`` / ``noise_log_q`` are log q of the data and noise samples; leave them out when
    the scores already include the correction.

    Shape: data_scores (B,), noise_scores (B, K), data_log_q (B,), noise_log_q (B, K) -> scalar.
    """

    def forward(
        self,
        data_scores: Tensor,
        noise_scores: Tensor,
        data_log_q: Tensor | None = None,
        noise_log_q: Tensor | None = None,
    ) -> Tensor:
        if data_scores.ndim != 1 or noise_scores.ndim != 2 or noise_scores.shape[0] != data_scores.shape[0]:
            raise ValueError(
                f"data_scores must be (B,) and noise_scores (B, K); got {tuple(data_scores.shape)}"
                f" and {tuple(noise_scores.shape)}"
            )
        log_k = math.log(noise_scores.shape[1])
        delta_data = data_scores - log_k - (data_log_q if data_log_q is not None else 0.0)
        delta_noise = noise_scores - log_k - (noise_log_q if noise_log_q is not None else 0.0)
        # log(1 - sigmoid(x)) = logsigmoid(-x), stable for large |x|.
        return -(F.logsigmoid(delta_data) + F.logsigmoid(-delta_noise).sum(1)).mean()


class SoftNearestNeighborLoss(nn.Module):
    """Soft nearest neighbour loss (Frosst, Papernot & Hinton 2019).

        L = -1/|A| * sum_{i in A} log( sum_{j != i, y_j = y_i} exp(-d_ij / T)  /  sum_{k != i} exp(-d_ik / T) )

    with d the squared Euclidean distance (the paper's) or cosine distance, and A the anchors that
    have at least one positive in the batch. Low when classes form tight, separated clusters.

    Shape: embeddings (B, D), labels (B,) -> scalar.
    """

    def __init__(self, temperature: float = 1.0, learn_temperature: bool = False, metric: str = "euclidean") -> None:
        super().__init__()
        self.temperature = _Temperature(temperature, learn_temperature, max_scale=None)
        self.metric = metric

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        _check_labels(embeddings, labels)
        d = pairwise_distance(embeddings, metric=self.metric, squared=True)  # (B, B); cosine ignores squared
        logits = -d * self.temperature.scale(None).to(d.dtype)
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        logits = logits.masked_fill(eye, -math.inf)
        pos = (labels[:, None] == labels[None, :]) & ~eye
        anchors = pos.any(1)
        if not bool(anchors.any()):
            return embeddings.sum() * 0.0
        log_pos = torch.logsumexp(logits.masked_fill(~pos, -math.inf), dim=1)
        log_all = torch.logsumexp(logits, dim=1)
        return -(log_pos - log_all)[anchors].mean()
