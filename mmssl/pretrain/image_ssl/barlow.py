"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction").

``BarlowConfig`` (``--barlow-lambda``) and ``Barlow``: BYOL's two views, a batch-normed MLP projector,
and the two projections' cross-correlation driven to the identity (``mmssl.losses.BarlowTwinsLoss``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn

from mmssl.pretrain.image_ssl.twoview import TwoViewConfig, TwoViewTask


@dataclass(frozen=True)
class BarlowConfig(TwoViewConfig):
    """Barlow Twins: two views' cross-correlation to identity"""

    method: ClassVar[str] = "barlow"
    barlow_lambda: float = field(default=5e-3, metadata={"help": "barlow: off-diagonal weight"})


class Barlow(TwoViewTask):
    config_class = BarlowConfig

    def make_criterion(self) -> nn.Module:
        from mmssl.losses import BarlowTwinsLoss

        return BarlowTwinsLoss(lambda_offdiag=self.config.barlow_lambda)
