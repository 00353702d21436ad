"""The optimizer every training run uses: AdamW over parameter groups that decay matrices only,
with optional per-parameter learning-rate multipliers (``Task.lr_scales``), fused where torch has it."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mmssl.engine.config import EngineConfig


def param_groups(params, weight_decay: float, lr_scales: Mapping[torch.Tensor, float] | None = None) -> list[dict]:
    """Decay matrices only: biases, norm scales and scalars (the temperature) are not decayed.
    A parameter in ``lr_scales`` goes to a group of its own whose ``lr_scale`` multiplies the
    learning rate (its schedule too: the scheduler scales each group's own rate)."""
    scales = lr_scales or {}
    trainable = [p for p in params if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2 and p not in scales]
    no_decay = [p for p in trainable if p.ndim < 2 and p not in scales]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    for scale in sorted(set(scales.values())):
        scaled = [p for p in trainable if p in scales and scales[p] == scale]
        for decayed, weight in ((True, weight_decay), (False, 0.0)):
            members = [p for p in scaled if (p.ndim >= 2) == decayed]
            if members:
                groups.append({"params": members, "weight_decay": weight, "lr_scale": scale})
    return groups


def make_optimizer(
    params, config: EngineConfig, device: torch.device, lr_scales: Mapping[torch.Tensor, float] | None = None
) -> torch.optim.AdamW:
    """AdamW over ``param_groups``, fused (one kernel over all parameters) where torch has it.

    torch's default AdamW on CPU loops over the tensors in Python; the fused one is the same update
    (to float rounding) and about 8x faster on CPU (a ViT-B-32 CLIP, 151 M parameters: 0.12 s against
    0.91 s a step on 2 cores), and saves the per-tensor kernel launches on GPU."""
    groups = param_groups(params, config.weight_decay, lr_scales)
    for group in groups:
        if "lr_scale" in group:
            group["lr"] = config.lr * group["lr_scale"]
    trainable = [p for g in groups for p in g["params"]]
    fused = device.type in ("cpu", "cuda", "mps") and all(
        p.is_floating_point() and p.device.type == device.type for p in trainable
    )
    kwargs = {"lr": config.lr, "betas": (config.beta1, config.beta2), "eps": config.eps}
    return torch.optim.AdamW(groups, **kwargs, fused=fused or None)
