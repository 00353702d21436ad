"""Non-contrastive self-supervised losses: BYOL, Barlow Twins, VICReg.

Shape legend: B local batch, N global batch, D dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.distributed import all_gather_with_grad
from mmssl.losses._common import _check_pair


class BYOLLoss(nn.Module):
    """BYOL's regression loss (Grill et al. 2020): normalized MSE = 2 - 2 cos(p, z).

        L = mean_i || p_i/|p_i| - z_i/|z_i| ||^2 = mean_i (2 - 2 <p_i, z_i> / (|p_i| |z_i|))

    ``online`` is the online network's prediction q(f(x)), ``target`` the target network's
    projection of the other view. The target is detached here (the stop-gradient of BYOL), so no
    gradient reaches the target network even if the caller forgets ``no_grad``. Symmetrize by
    calling it for both views and adding.

    Shape: online (B, D), target (B, D) -> scalar.
    """

    def forward(self, online: Tensor, target: Tensor) -> Tensor:
        _check_pair(online, target, "online", "target")
        return (2.0 - 2.0 * F.cosine_similarity(online, target.detach(), dim=1)).mean()


def _standardize(z: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-dimension zero mean, unit (biased) variance over the batch: BatchNorm without affine."""
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins (Zbontar et al. 2021): push the cross-correlation matrix towards identity.

        C_ij = sum_b zA_bi zB_bj / N   (zA, zB standardized per dimension over the batch)
        L    = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2

    ``lambda_offdiag`` defaults to the paper's 5e-3. Distributed: embeddings are all-gathered,
    so the statistics are those of the global batch.

    Shape: a (B, D), b (B, D) -> scalar.
    """

    def __init__(self, lambda_offdiag: float = 5e-3, eps: float = 1e-5) -> None:
        super().__init__()
        self.lambda_offdiag, self.eps = lambda_offdiag, eps

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        _check_pair(a, b)
        a, b = all_gather_with_grad(a), all_gather_with_grad(b)
        n = a.shape[0]
        if n < 2:
            raise ValueError("Barlow Twins needs a batch of at least 2 to standardize")
        c = _standardize(a, self.eps).T @ _standardize(b, self.eps) / n  # (D, D)
        on_diag = (1 - torch.diagonal(c)).pow(2).sum()
        off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return on_diag + self.lambda_offdiag * off_diag


class VICRegLoss(nn.Module):
    """VICReg (Bardes, Ponce & LeCun 2022): invariance + variance + covariance terms.

        inv = mean_{b,d} (a_bd - b_bd)^2
        var = 1/2 * [ mean_d max(0, 1 - sqrt(Var(a_.d) + eps)) + same for b ]
        cov = sum_{i != j} Cov(a)_ij^2 / D + same for b
        L   = sim_weight * inv + var_weight * var + cov_weight * cov      (paper: 25, 25, 1)

    ``output_dict=True`` returns the three weighted terms as ``*_loss`` keys. Distributed:
    embeddings are all-gathered, so variance and covariance use the global batch.

    Shape: a (B, D), b (B, D) -> scalar.
    """

    def __init__(self, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0, eps: float = 1e-4):
        super().__init__()
        self.sim_weight, self.var_weight, self.cov_weight, self.eps = sim_weight, var_weight, cov_weight, eps

    def _var_cov(self, z: Tensor) -> tuple[Tensor, Tensor]:
        n, d = z.shape
        std = torch.sqrt(z.var(0) + self.eps)
        var = F.relu(1.0 - std).mean()
        zc = z - z.mean(0)
        cov = zc.T @ zc / (n - 1)  # (D, D)
        cov_loss = (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d
        return var, cov_loss

    def forward(self, a: Tensor, b: Tensor, output_dict: bool = False) -> Tensor | dict[str, Tensor]:
        _check_pair(a, b)
        a, b = all_gather_with_grad(a), all_gather_with_grad(b)
        if a.shape[0] < 2:
            raise ValueError("VICReg needs a batch of at least 2 for its variance term")
        inv = F.mse_loss(a, b)
        var_a, cov_a = self._var_cov(a)
        var_b, cov_b = self._var_cov(b)
        terms = {
            "invariance_loss": self.sim_weight * inv,
            "variance_loss": self.var_weight * 0.5 * (var_a + var_b),
            "covariance_loss": self.cov_weight * (cov_a + cov_b),
        }
        return terms if output_dict else sum(terms.values())
