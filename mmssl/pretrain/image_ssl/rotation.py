"""Rotation prediction (Gidaris et al. 2018, "Unsupervised Representation Learning by Predicting
Image Rotations").

``RotationConfig`` and ``Rotation``: every image of the batch at 0, 90, 180 and 270 degrees, a linear
classifier on the tower predicting which (4 classes). The view is a crop without flips (a flip would
blur the rotation classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from mmssl.pretrain.image_ssl.base import ImageSSLConfig, ImageSSLTask
from mmssl.pretrain.image_ssl.views import crop_view


@dataclass(frozen=True)
class RotationConfig(ImageSSLConfig):
    """rotation prediction: 0/90/180/270 degrees"""

    method: ClassVar[str] = "rotation"


class Rotation(ImageSSLTask):
    config_class = RotationConfig

    def view_transforms(self, size: int, mean, std) -> tuple:
        return crop_view(size, mean, std, self.config.crop_min, flip=False), None

    def heads(self, tower) -> dict[str, nn.Module]:
        return {"classifier": nn.Linear(tower.dim, 4)}

    def _loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        v1 = batch["v1"]
        views = torch.cat([torch.rot90(v1, k, dims=(2, 3)) for k in range(4)])  # (4B, 3, H, W)
        labels = torch.arange(4, device=v1.device).repeat_interleave(len(v1))
        h = self.model.tower(views)
        return self.criterion(self.model.classifier(h), labels), h[: len(v1)]
