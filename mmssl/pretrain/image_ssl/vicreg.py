"""VICReg (Bardes et al. 2022, "VICReg: Variance-Invariance-Covariance Regularization").

``VICRegConfig`` and ``VICReg``: BYOL's two views, a batch-normed MLP projector, and the variance,
invariance and covariance terms of the two projections (``mmssl.losses.VICRegLoss``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from mmssl.pretrain.image_ssl.twoview import TwoViewConfig, TwoViewTask


@dataclass(frozen=True)
class VICRegConfig(TwoViewConfig):
    """VICReg: variance, invariance, covariance of two views"""

    method: ClassVar[str] = "vicreg"


class VICReg(TwoViewTask):
    config_class = VICRegConfig

    def make_criterion(self) -> nn.Module:
        from mmssl.losses import VICRegLoss

        return VICRegLoss()
