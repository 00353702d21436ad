"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

``SimCLRConfig`` (``--temperature``) and ``SimCLR``: two views from the same augmentation (crop, flip,
colour jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale p 0.2, blur p 0.5), an MLP projector without
batch norm, and NT-Xent over the 2B views (``mmssl.losses.NTXentLoss``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn

from mmssl.pretrain.image_ssl.twoview import TwoViewConfig, TwoViewTask
from mmssl.pretrain.image_ssl.views import blur, crop, to_tensor


@dataclass(frozen=True)
class SimCLRConfig(TwoViewConfig):
    """SimCLR: two views, projection head, NT-Xent"""

    method: ClassVar[str] = "simclr"
    temperature: float = field(default=0.2, metadata={"help": "simclr: NT-Xent temperature"})


class SimCLR(TwoViewTask):
    """Both views from one augmentation; the projector has no batch norm (the paper's)."""

    config_class = SimCLRConfig
    projector_batch_norm = False

    def make_criterion(self) -> nn.Module:
        from mmssl.losses import NTXentLoss

        return NTXentLoss(temperature=self.config.temperature)

    def view_transforms(self, size: int, mean, std) -> tuple:
        from torchvision import transforms as T

        jitter = T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)
        flip, gray = T.RandomHorizontalFlip(), T.RandomGrayscale(p=0.2)
        one = T.Compose([crop(size, self.config.crop_min), flip, jitter, gray, blur(size, 0.5), *to_tensor(mean, std)])
        return one, one
