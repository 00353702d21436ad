"""What every tower kind shares: LiT locking, the saved layout of the open_clip towers, and
reading weight files (``load_safetensors``, ``read_checkpoint``: a damaged or foreign file is a
one-line error naming it, never a traceback, and nothing is unpickled).

A tower names its main module with ``body()`` (a transformers backbone, an open_clip visual or text
transformer); its projection to the shared size (``proj``) lives beside it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from torch import nn

from mmssl.console import error_line

NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
OPEN_CLIP_CONFIG = "open_clip_config.json"
WEIGHTS = "model.safetensors"


class LockableTower(nn.Module):
    """``lock()`` (LiT, Zhai et al. 2022) freezes the whole tower, projection included, so that its
    embedding space stays the one it was loaded with; ``unlock_norms=True`` leaves the normalization
    layers trainable. A fully locked tower stays in eval mode (BatchNorm statistics, no dropout)."""

    locked = False

    def body(self) -> nn.Module:
        raise NotImplementedError

    def lock(self, unlock_norms: bool = False) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        if unlock_norms:
            for m in self.body().modules():
                if isinstance(m, NORMS):
                    for p in m.parameters():
                        p.requires_grad_(True)
        self.locked = not unlock_norms
        if self.locked:
            self.body().eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.locked:
            self.body().eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the body's layers (``set_activation_checkpointing``)."""
        set_activation_checkpointing(self.body(), enable)


def set_activation_checkpointing(body: nn.Module, enable: bool = True) -> None:
    """Activation checkpointing of a network's layers (recomputed in the backward pass: less memory,
    about a third more compute), through its own switch: open_clip's ``set_grad_checkpointing``, or
    transformers' ``activation_checkpointing_enable`` (non-reentrant); a ValueError for none."""
    if hasattr(body, "set_grad_checkpointing"):
        body.set_grad_checkpointing(enable)
    elif hasattr(body, "activation_checkpointing_enable"):  # transformers >= 5.x
        if enable:
            body.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            body.activation_checkpointing_disable()
    elif hasattr(body, "gradient_checkpointing_enable"):
        if enable:
            body.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            body.gradient_checkpointing_disable()
    else:
        raise ValueError(f"{type(body).__name__} has no gradient checkpointing switch")


class OpenClipSaved:
    """``save_pretrained``/``from_pretrained`` of an open_clip tower: ``open_clip_config.json`` in
    open_clip's own ``local-dir:`` format (so the tower rebuilds without the user's JSON file) and
    ``model.safetensors`` (the tower's weights, its projection included). A torchvision image tower
    writes ``torchvision_config.json`` instead (``saved_config_file``)."""

    saved_config: dict  # what the config file holds
    saved_config_file: str = OPEN_CLIP_CONFIG
    SAVED_OVERRIDES: dict = {}  # config fields already applied in the saved config

    def save_pretrained(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / self.saved_config_file).write_text(json.dumps(self.saved_config, indent=2) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS))

    @classmethod
    def from_pretrained(cls, path: str | Path, config, embed_dim: int):
        """The tower saved in ``path``; ``config`` (what it was built from) is kept on it, so that its
        training choices (augmentation) and origin are remembered."""
        path = Path(path)
        weights = path / WEIGHTS
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: missing (the tower's weights)")
        saved = replace(config, model=f"local-dir:{path}", weights=None, **cls.SAVED_OVERRIDES)
        tower = cls.build(saved, embed_dim)
        load_exact(tower, load_safetensors(weights), str(weights))
        tower.config = config
        return tower


def projection(dim: int, embed_dim: int | None) -> nn.Module:
    """The map from a tower's own output size to the dual encoder's: identity when they agree."""
    embed_dim = embed_dim or dim
    return nn.Identity() if embed_dim == dim else nn.Linear(dim, embed_dim, bias=False)


def load_safetensors(path: str | Path) -> dict:
    """The tensors of a safetensors file; ``FileNotFoundError`` / ``ValueError`` naming it if it is
    missing, truncated or not safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: damaged or truncated safetensors file ({e})") from None


def check_safetensors(path: str | Path) -> None:
    """Read a safetensors file's header only (cheap): ``ValueError`` naming it if it is damaged."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: damaged or truncated safetensors file ({e})") from None


def read_checkpoint(path: str) -> dict:
    """The state dict in a local checkpoint file (safetensors, or a ``torch.load`` file read with
    ``weights_only``), unwrapped from a ``state_dict`` or ``model`` entry, a ``module.`` (DDP) prefix
    removed."""
    import torch

    if path.endswith(".safetensors"):
        state = load_safetensors(path)
    else:
        import pickle

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:  # weights_only: only tensors and containers are read
            raise ValueError(f"{path}: refused, holds more than weights ({error_line(e)})") from None
        except (RuntimeError, EOFError) as e:
            raise ValueError(f"{path}: damaged or truncated checkpoint ({e})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict")
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}


def entries_under(state: dict, prefix: str) -> dict:
    """The entries of a state dict under ``prefix`` (``visual.``), the prefix removed."""
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def load_exact(module: nn.Module, state: dict, source: str) -> None:
    """Load a state dict that must fit exactly; a clear error naming the first difference otherwise."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that differ
        lines = str(e).strip().splitlines()
        raise ValueError(f"{source}: does not fit ({(lines[1] if len(lines) > 1 else lines[0]).strip()})") from None
    if missing or unexpected:
        raise ValueError(
            f"{source}: does not fit ({len(missing)} missing, {len(unexpected)} unexpected keys, "
            f"e.g. {(missing or unexpected)[0]})"
        )
