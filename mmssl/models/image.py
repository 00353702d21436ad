"""Image towers from open_clip: any model config it ships, or a JSON config of the user's.

    tower = ImageTower.build(ImageTowerConfig(model="ViT-B-32"))                 # random init
    tower = ImageTower.build(ImageTowerConfig(model="RN50", weights="rn50.pt"))  # a local checkpoint
    tower = ImageTower.build(ImageTowerConfig(model="tiny.json", augment="heavy"))
    x = tower.preprocess_train(pil_image)       # (3, H, W)
    emb = tower(torch.stack([...]))             # (B, D), not normalized

open_clip builds the whole CLIP model; the tower keeps its ``visual`` part (its own projection to
the config's ``embed_dim`` included) and open_clip's preprocessing for that config (resize, crop,
normalization with the config's mean and std). ``weights`` is a local open_clip checkpoint (the
``visual.*`` weights are taken) or, for users who are online, a pretrained tag open_clip knows
(``laion2b_s34b_b79k``); nothing is downloaded otherwise.

Training augmentation (``augment``): ``none`` is open_clip's own train transform (random resized
crop at scale 0.9-1.0); ``heavy`` is the seed notes' "heavy augmentation": random resized crop at
scale 0.3-1.0, colour jitter (0.4, 0.4, 0.4, 0.1) with probability 0.8 and grayscale with
probability 0.2 (SimCLR's recipe, in torchvision transforms around the config's own size, mean and
std: open_clip's ``AugmentationCfg`` applies colour jitter only through timm); ``flip`` adds a
random horizontal flip, off by default since it breaks captions that say "left of".

Locking (LiT, Zhai et al. 2022): ``lock()`` freezes every parameter and keeps the tower in eval
mode; ``unlock_norms=True`` leaves the normalization layers trainable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from mmssl.io import read_json_object

HEAVY_SCALE = (0.3, 1.0)
HEAVY_JITTER = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
HEAVY_JITTER_P, HEAVY_GRAY_P = 0.8, 0.2


@dataclass(frozen=True)
class ImageTowerConfig:
    model: str = "ViT-B-32"  # an open_clip model name, or a path to a JSON model config
    weights: str | None = None  # a local open_clip checkpoint, or a pretrained tag (online users)
    augment: Literal["none", "heavy"] = "none"
    flip: bool = False
    image_size: int | None = None  # override the config's input size

    def to_dict(self) -> dict:
        return asdict(self)


def _register(model: str) -> str:
    """The open_clip model name for ``model``; a JSON config file is registered under its stem."""
    import open_clip

    path = Path(model)
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such open_clip model config")
        cfg = read_json_object(path)
        if "vision_cfg" not in cfg or "embed_dim" not in cfg:
            raise ValueError(f"{path}: an open_clip model config needs 'embed_dim' and 'vision_cfg'")
        open_clip.add_model_config(path)
        return path.stem
    if model not in open_clip.list_models():
        raise ValueError(f"image model {model!r}: not an open_clip config (open_clip.list_models()) nor a .json file")
    return model


class ImageTower(nn.Module):
    """open_clip's vision tower and its preprocessing; ``forward`` maps (B, 3, H, W) to (B, D)."""

    def __init__(self, config: ImageTowerConfig, visual: nn.Module, preprocess_train, preprocess_val, dim: int):
        super().__init__()
        self.config = config
        self.visual = visual
        self.preprocess_train = preprocess_train
        self.preprocess_val = preprocess_val
        self.dim = dim
        self.locked = False

    @classmethod
    def build(cls, config: ImageTowerConfig) -> ImageTower:
        import open_clip
        from torchvision import transforms

        name = _register(config.model)
        weights = config.weights
        local = weights is not None and Path(weights).is_file()
        if weights is not None and not local and Path(weights).suffix in (".pt", ".bin", ".safetensors"):
            raise FileNotFoundError(f"{weights}: no such checkpoint")
        model, train_tf, val_tf = open_clip.create_model_and_transforms(
            name, pretrained=weights if weights and not local else None, force_image_size=config.image_size
        )
        if local:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
            state = {k.removeprefix("module."): v for k, v in state.items()}
            visual = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
            if not visual:
                raise ValueError(f"{weights}: no 'visual.*' weights in this checkpoint")
            try:
                missing, unexpected = model.visual.load_state_dict(visual, strict=False)
            except RuntimeError as e:  # shapes that differ
                lines = str(e).strip().splitlines()
                detail = (lines[1] if len(lines) > 1 else lines[0]).strip()
                raise ValueError(f"{weights}: does not fit {config.model} ({detail})") from None
            if missing or unexpected:
                raise ValueError(
                    f"{weights}: does not fit {config.model} ({len(missing)} missing, {len(unexpected)} unexpected "
                    f"keys, e.g. {(missing or unexpected)[0]})"
                )
        if config.augment == "heavy":
            pp = open_clip.get_model_preprocess_cfg(model)
            size = pp["size"] if isinstance(pp["size"], int) else tuple(pp["size"])
            train_tf = transforms.Compose(
                [
                    transforms.RandomResizedCrop(
                        size, scale=HEAVY_SCALE, interpolation=transforms.InterpolationMode.BICUBIC
                    ),
                    transforms.RandomApply([transforms.ColorJitter(*HEAVY_JITTER)], p=HEAVY_JITTER_P),
                    transforms.RandomGrayscale(p=HEAVY_GRAY_P),
                    transforms.ToTensor(),
                    transforms.Normalize(pp["mean"], pp["std"]),
                ]
            )
        if config.flip:
            steps = list(train_tf.transforms)
            train_tf = transforms.Compose([steps[0], transforms.RandomHorizontalFlip(), *steps[1:]])
        dim = int(open_clip.get_model_config(name)["embed_dim"])
        return cls(config, model.visual, train_tf, val_tf, dim)

    @property
    def image_size(self) -> int:
        size = self.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)

    def lock(self, unlock_norms: bool = False) -> None:
        """Freeze the tower (LiT); with ``unlock_norms`` its LayerNorm/BatchNorm/GroupNorm stay trainable."""
        norms = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
        for p in self.visual.parameters():
            p.requires_grad_(False)
        if unlock_norms:
            for m in self.visual.modules():
                if isinstance(m, norms):
                    for p in m.parameters():
                        p.requires_grad_(True)
        self.locked = not unlock_norms
        if self.locked:
            self.visual.eval()

    def train(self, mode: bool = True) -> ImageTower:
        super().train(mode)
        if self.locked:
            self.visual.eval()  # a fully locked tower keeps eval-mode statistics (BatchNorm, dropout)
        return self
