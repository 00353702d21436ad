"""Image towers from open_clip: any model config it ships, or a JSON config of the user's.

    tower = ImageTower.build(ImageTowerConfig(model="ViT-B-32"))                 # random init
    tower = ImageTower.build(ImageTowerConfig(model="RN50", weights="rn50.pt"))  # a local checkpoint
    tower = ImageTower.build(ImageTowerConfig(model="tiny.json", augment="heavy"), embed_dim=384)
    x = tower.preprocess_train(pil_image)       # (3, H, W)
    emb = tower(torch.stack([...]))             # (B, D), not normalized
    batch = tower.preparer(train=False)(images) # {"pixels": (B, 3, H, W)}: paths, bytes or PIL images

open_clip builds the whole CLIP model; the tower keeps its ``visual`` part (its own projection to
the config's ``embed_dim`` included) and open_clip's preprocessing for that config (resize, crop,
normalization with the config's mean and std). When the dual encoder's embedding size differs
from the config's, a linear projection follows (``proj``; identity otherwise).
``weights`` is a local open_clip checkpoint (the ``visual.*`` weights are taken) or, for users who
are online, a pretrained tag open_clip knows (``laion2b_s34b_b79k``); nothing is downloaded otherwise.

Training augmentation (``augment``): ``none`` is open_clip's own train transform (random resized
crop at scale 0.9-1.0); ``heavy`` is the seed notes' "heavy augmentation": random resized crop at
scale 0.3-1.0, colour jitter (0.4, 0.4, 0.4, 0.1) with probability 0.8 and grayscale with
probability 0.2 (SimCLR's recipe, in torchvision transforms around the config's own size, mean and
std: open_clip's ``AugmentationCfg`` applies colour jitter only through timm); ``flip`` adds a
random horizontal flip, off by default since it breaks captions that say "left of".

Locking (LiT, Zhai et al. 2022): ``lock()`` freezes every parameter and keeps the tower in eval
mode; ``unlock_norms=True`` leaves the normalization layers trainable.

Saved layout (``save_pretrained(DIR)``): ``open_clip_config.json`` (open_clip's own ``local-dir:``
format: ``model_cfg`` and ``preprocess_cfg``, so the tower rebuilds without the user's JSON file) and
``model.safetensors`` (the visual weights and ``proj``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from mmssl.io import read_json_object
from mmssl.models.tower import OPEN_CLIP_CONFIG, WEIGHTS, LockableTower, OpenClipSaved, load_exact, projection

# Small open_clip model configs that ship with mmssl (for CPUs and tests), known by file stem.
CONFIG_DIR = Path(__file__).parent / "open_clip_configs"

HEAVY_SCALE = (0.3, 1.0)
HEAVY_JITTER = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
HEAVY_JITTER_P, HEAVY_GRAY_P = 0.8, 0.2


@dataclass(frozen=True)
class ImageTowerConfig:
    model: str = "ViT-B-32"  # an open_clip model name, an mmssl one (mmssl-vit-tiny), or a JSON config
    weights: str | None = None  # a local open_clip checkpoint, or a pretrained tag (online users)
    augment: Literal["none", "heavy"] = "none"
    flip: bool = False
    image_size: int | None = None  # override the config's input size

    kind = "open_clip_image"

    def to_dict(self) -> dict:
        return asdict(self)


def _register(model: str) -> str:
    """The open_clip model name for ``model``; a JSON config file is registered under its stem."""
    import open_clip

    path = Path(model)
    if model.startswith("local-dir:"):
        if not (Path(model.removeprefix("local-dir:")) / OPEN_CLIP_CONFIG).is_file():
            raise FileNotFoundError(f"{model}: no {OPEN_CLIP_CONFIG} there")
        return model
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such open_clip model config")
        cfg = read_json_object(path)
        if "vision_cfg" not in cfg or "embed_dim" not in cfg:
            raise ValueError(f"{path}: an open_clip model config needs 'embed_dim' and 'vision_cfg'")
        open_clip.add_model_config(path)
        return path.stem
    if (CONFIG_DIR / f"{model}.json").is_file() and model not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR / f"{model}.json")
    if model not in open_clip.list_models():
        raise ValueError(
            f"model {model!r}: not an open_clip config (open_clip.list_models()), an mmssl one "
            f"({', '.join(p.stem for p in sorted(CONFIG_DIR.glob('*.json')))}) nor a .json file"
        )
    return model


class ImageTower(OpenClipSaved, LockableTower):
    """open_clip's vision tower and its preprocessing; ``forward`` maps (B, 3, H, W) to (B, D)."""

    SAVED_OVERRIDES = {"image_size": None}  # the saved config holds the size already

    def __init__(
        self, config: ImageTowerConfig, visual: nn.Module, preprocess_train, preprocess_val, dim: int, embed_dim=None
    ):
        super().__init__()
        self.config = config
        self.visual = visual
        self.preprocess_train = preprocess_train
        self.preprocess_val = preprocess_val
        self.proj = projection(dim, embed_dim)
        self.dim = embed_dim or dim
        self.open_clip_config: dict = {}  # what save_pretrained writes (model_cfg, preprocess_cfg)

    @classmethod
    def build(cls, config: ImageTowerConfig, embed_dim: int | None = None) -> ImageTower:
        import open_clip
        from torchvision import transforms

        name = _register(config.model)
        weights = config.weights
        saved = weights is not None and Path(weights).is_dir()  # a saved tower (e.g. `mmssl pretrain` output)
        if saved and not (Path(weights) / WEIGHTS).is_file():
            raise FileNotFoundError(f"{weights}: not a saved image tower (no {WEIGHTS})")
        local = weights is not None and (Path(weights).is_file() or saved)
        if weights is not None and not local and Path(weights).suffix in (".pt", ".bin", ".safetensors"):
            raise FileNotFoundError(f"{weights}: no such checkpoint")
        logging.disable(logging.WARNING)  # open_clip warns on the root logger that no weights were loaded
        try:
            model, train_tf, val_tf = open_clip.create_model_and_transforms(
                name,
                pretrained=weights if weights and not local else None,
                load_weights=not name.startswith("local-dir:"),  # a saved tower loads its own weights file
                force_image_size=config.image_size,
            )
        finally:
            logging.disable(logging.NOTSET)
        if saved:  # its own layout: visual.* and proj.*; the projection is the new model's own
            from safetensors.torch import load_file

            file = Path(weights) / WEIGHTS
            state = load_file(str(file))
            visual = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
            load_exact(model.visual, visual, str(file))
        elif local:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
            state = {k.removeprefix("module."): v for k, v in state.items()}
            visual = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
            if not visual:
                raise ValueError(f"{weights}: no 'visual.*' weights in this checkpoint")
            load_exact(model.visual, visual, f"{weights} ({config.model})")
        pp = open_clip.get_model_preprocess_cfg(model)
        if config.augment == "heavy":
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
        model_cfg = open_clip.get_model_config(name)
        if config.image_size:
            model_cfg["vision_cfg"]["image_size"] = config.image_size
        tower = cls(config, model.visual, train_tf, val_tf, int(model_cfg["embed_dim"]), embed_dim)
        tower.open_clip_config = {"model_cfg": model_cfg, "preprocess_cfg": pp}
        return tower

    # ---- batches --------------------------------------------------------------------------------

    def preparer(self, train: bool = False, max_pixels: int | None = None) -> ImagePrep:
        """A picklable function: images (paths, bytes, PIL) -> {"pixels": (B, 3, H, W)}, for data workers."""
        from mmssl.data.image_text import MAX_PIXELS

        return ImagePrep(self.preprocess_train if train else self.preprocess_val, max_pixels or MAX_PIXELS)

    @property
    def image_size(self) -> int:
        size = self.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.proj(self.visual(pixels))  # (B, 3, H, W) -> (B, D)

    def body(self) -> nn.Module:
        return self.visual


class ImagePrep:
    """Images -> a batch of pixels through one transform (open_clip's, or the training augmentation).

    An item is a path, encoded bytes, a PIL image or an ``ImageTextRecord``; it is opened with
    ``mmssl.data.image_text.open_image`` (RGB, bad files raise ``BadImage`` naming them).

    A transform ending in ``Normalize`` (open_clip's and ours all do) normalizes the stacked batch
    in one operation instead of image by image: the same values, a quarter less time per batch of
    small images (the per-call overhead of a tensor operation dominates at 64 px)."""

    def __init__(self, transform, max_pixels: int) -> None:
        from torchvision import transforms

        self.max_pixels = max_pixels
        steps = list(getattr(transform, "transforms", []))
        self.mean = self.std = None  # (1, 3, 1, 1) each, when the batch is normalized here
        if steps and isinstance(steps[-1], transforms.Normalize) and not steps[-1].inplace:
            transform, norm = transforms.Compose(steps[:-1]), steps[-1]
            self.mean = torch.tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
            self.std = torch.tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
        self.transform = transform

    def __call__(self, images) -> dict[str, torch.Tensor]:
        from mmssl.data.image_text import open_image

        pixels = torch.stack([self.transform(open_image(im, self.max_pixels)) for im in images])  # (B, 3, H, W)
        if self.mean is not None:
            pixels = (pixels - self.mean) / self.std
        return {"pixels": pixels}
