"""The joint-embedding methods' common part: two augmented views of each image, one projector.

``TwoViewConfig``: the projection head's sizes (``--proj-dim``, ``--hidden-dim``). ``TwoViewTask``:
both views through the tower and the MLP projector (``base.mlp``), then the method's ``_pair_loss``
of the two projections; the views default to BYOL's asymmetric pair (``views.byol_views``). SimCLR,
BYOL, Barlow Twins and VICReg build on it.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field

from torch import Tensor, nn

from mmssl.pretrain.image_ssl.base import ImageSSLConfig, ImageSSLTask, mlp
from mmssl.pretrain.image_ssl.views import byol_views


@dataclass(frozen=True)
class TwoViewConfig(ImageSSLConfig):
    """Options of the two-view (joint-embedding) methods."""

    proj_dim: int = field(default=128, metadata={"help": "projection head output (Z)"})
    hidden_dim: int = field(default=512, metadata={"help": "projection / predictor hidden size"})


class TwoViewTask(ImageSSLTask):
    """A joint-embedding method: its ``criterion`` compares the two views' projections."""

    projector_batch_norm = True

    @abstractmethod
    def make_criterion(self) -> nn.Module:
        """The loss of (z1, z2) projections (BYOL: of a prediction and a target projection)."""

    def view_transforms(self, size: int, mean, std) -> tuple:
        return byol_views(size, mean, std, self.config.crop_min)

    def heads(self, tower) -> dict[str, nn.Module]:
        c = self.config
        return {"projector": mlp(tower.dim, c.hidden_dim, c.proj_dim, batch_norm=self.projector_batch_norm)}

    def _loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        m = self.model
        h1, h2 = m.tower(batch["v1"]), m.tower(batch["v2"])  # (B, D) each
        z1, z2 = m.projector(h1), m.projector(h2)  # (B, Z)
        return self._pair_loss(z1, z2, batch), h1

    def _pair_loss(self, z1: Tensor, z2: Tensor, batch: dict) -> Tensor:
        return self.criterion(z1, z2)
