"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent").

``BYOLConfig`` (``--ema``) and ``BYOL``: an online tower + projector + predictor regresses a target
tower + projector (``mmssl.losses.BYOLLoss``, both view orders) on BYOL's asymmetric views. The target
is a frozen copy that ``after_step`` moves towards the online network (an exponential moving
average), its momentum from ``--ema`` to 1 on a cosine schedule over ``--max-steps``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from mmssl.pretrain.image_ssl.base import mlp
from mmssl.pretrain.image_ssl.twoview import TwoViewConfig, TwoViewTask


@dataclass(frozen=True)
class BYOLConfig(TwoViewConfig):
    """BYOL: online network + predictor against an EMA target"""

    method: ClassVar[str] = "byol"
    ema: float = field(default=0.99, metadata={"help": "byol: target momentum at the start (cosine to 1)"})


class BYOL(TwoViewTask):
    """``model.predictor`` after the online projector; ``model.target``: the EMA tower and projector
    (``target.tower``, ``target.projector``), never trained by the optimizer."""

    config_class = BYOLConfig

    def make_criterion(self) -> nn.Module:
        from mmssl.losses import BYOLLoss

        return BYOLLoss()

    def heads(self, tower) -> dict[str, nn.Module]:
        heads = super().heads(tower)
        c = self.config
        heads["predictor"] = mlp(c.proj_dim, c.hidden_dim, c.proj_dim)
        # the target: frozen, a child of the model, so in the online network's train/eval mode
        target = nn.ModuleDict({"tower": copy.deepcopy(tower), "projector": copy.deepcopy(heads["projector"])})
        heads["target"] = target.requires_grad_(False)
        return heads

    def _pair_loss(self, z1: Tensor, z2: Tensor, batch: dict) -> Tensor:
        m = self.model
        with torch.no_grad():
            t1 = m.target["projector"](m.target["tower"](batch["v1"]))
            t2 = m.target["projector"](m.target["tower"](batch["v2"]))
        return self.criterion(m.predictor(z1), t2) + self.criterion(m.predictor(z2), t1)

    def after_step(self, step: int) -> bool:
        """The target moves towards the online network: t = tau t + (1 - tau) o."""
        m, c = self.model, self.config
        tau = 1 - (1 - c.ema) * (math.cos(math.pi * step / max(1, c.max_steps)) + 1) / 2
        online = [*m.tower.parameters(), *m.projector.parameters()]
        target = [*m.target["tower"].parameters(), *m.target["projector"].parameters()]
        with torch.no_grad():
            for t, o in zip(target, online):
                t.lerp_(o, 1 - tau)
        return False
