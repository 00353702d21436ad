"""Pieces shared by the losses: input checks and the (learnable) temperature."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

MAX_LOGIT_SCALE = 100.0  # CLIP clamps the learnable temperature so that 1/T <= 100.


def _check_pair(a: Tensor, b: Tensor, name_a: str = "a", name_b: str = "b") -> None:
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"{name_a} and {name_b} must be (B, D); got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape")


def _check_labels(x: Tensor, labels: Tensor) -> None:
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (B, D); got {tuple(x.shape)}")
    if labels.ndim != 1 or labels.shape[0] != x.shape[0]:
        raise ValueError(f"labels must be (B,) with B={x.shape[0]}; got {tuple(labels.shape)}")


class _Temperature(nn.Module):
    """A fixed or learnable ``logit_scale = 1 / temperature``, stored as its log (CLIP's form)."""

    def __init__(self, temperature: float, learn: bool, max_scale: float | None) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        init = torch.tensor(math.log(1.0 / temperature))
        if learn:
            self.log_logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_logit_scale", init)
        self.max_scale = max_scale

    def scale(self, logit_scale: Tensor | float | None) -> Tensor:
        """The multiplier to use: the caller's if given, else our own, clamped to ``max_scale``."""
        if logit_scale is None:
            log_scale = self.log_logit_scale
            if self.max_scale is not None:
                log_scale = log_scale.clamp(max=math.log(self.max_scale))
            return log_scale.exp()
        # The caller's scale is used as given: a model that owns it clamps its own parameter.
        s = logit_scale if isinstance(logit_scale, Tensor) else torch.tensor(float(logit_scale))
        return s.to(self.log_logit_scale.device)
