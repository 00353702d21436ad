"""Image towers from open_clip (any model config it ships, or a JSON config of the user's) or from
torchvision (``torchvision:resnet50``: ResNets, ResNeXts, Wide ResNets, RegNets, ShuffleNets).

    tower = ImageTower.build(ImageTowerConfig(model="ViT-B-32"))                 # random init
    tower = ImageTower.build(ImageTowerConfig(model="RN50", weights="rn50.pt"))  # a local checkpoint
    tower = ImageTower.build(ImageTowerConfig(model="tiny.json", augment="heavy"), embed_dim=384)
    tower = ImageTower.build(ImageTowerConfig(model="torchvision:resnet50", weights="barlow.pth"), 512)
    x = tower.preprocess_train(pil_image)       # (3, H, W)
    emb = tower(torch.stack([...]))             # (B, D), not normalized
    batch = tower.preparer(train=False)(images) # {"pixels": (B, 3, H, W)}: paths, bytes or PIL images

open_clip builds the whole CLIP model; the tower keeps its ``visual`` part (its own projection to
the config's ``embed_dim`` included) and open_clip's preprocessing for that config (resize, crop,
normalization with the config's mean and std). When the dual encoder's embedding size differs
from the config's, a linear projection follows (``proj``; identity otherwise).
``weights`` is a local open_clip checkpoint (the ``visual.*`` weights are taken) or, for users who
are online, a pretrained tag open_clip knows (``laion2b_s34b_b79k``); nothing is downloaded otherwise.

A torchvision tower is the classifier without its ``fc`` head (its output: the pooled features, 2048
for ResNet-50, then ``proj``), with open_clip's preprocessing at ImageNet's mean and std and 224
pixels unless ``image_size`` says otherwise (a ResNet takes any size). ``weights``: a plain state dict
of the architecture (torchvision's own files; the ResNet-50 releases of Barlow Twins, VICReg and
other SSL papers; an SSL run's whole model, whose ``backbone.*`` entries are taken), a ``module.``
prefix and the ``fc.*`` head dropped; or, online, a torchvision weights name (``IMAGENET1K_V2``).

Training augmentation (``augment``): ``none`` is open_clip's own train transform (random resized
crop at scale 0.9-1.0); ``heavy`` is "heavy augmentation": random resized crop at
scale 0.3-1.0, colour jitter (0.4, 0.4, 0.4, 0.1) with probability 0.8 and grayscale with
probability 0.2 (SimCLR's recipe, in torchvision transforms around the config's own size, mean and
std: open_clip's ``AugmentationCfg`` applies colour jitter only through timm); ``flip`` adds a
random horizontal flip, off by default since it breaks captions that say "left of".

Locking (LiT, Zhai et al. 2022): ``lock()`` freezes every parameter and keeps the tower in eval
mode; ``unlock_norms=True`` leaves the normalization layers trainable.

Saved layout (``save_pretrained(DIR)``): ``open_clip_config.json`` (open_clip's own ``local-dir:``
format: ``model_cfg`` and ``preprocess_cfg``, so the tower rebuilds without the user's JSON file) and
``model.safetensors`` (the visual weights and ``proj``); a torchvision tower writes
``torchvision_config.json`` (``arch`` and ``preprocess_cfg``) in place of the open_clip file.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from mmssl.io import read_json_object
from mmssl.models.tower import (
    OPEN_CLIP_CONFIG,
    WEIGHTS,
    LockableTower,
    OpenClipSaved,
    entries_under,
    load_exact,
    load_safetensors,
    projection,
    read_checkpoint,
)

# Small open_clip model configs that ship with mmssl (for CPUs and tests), known by file stem.
CONFIG_DIR = Path(__file__).parent / "open_clip_configs"

HEAVY_SCALE = (0.3, 1.0)
HEAVY_JITTER = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
HEAVY_JITTER_P, HEAVY_GRAY_P = 0.8, 0.2

# torchvision towers: ``torchvision:<arch>``, saved with this config file (arch, preprocessing)
TORCHVISION = "torchvision:"
TORCHVISION_CONFIG = "torchvision_config.json"
TORCHVISION_FAMILIES = ("ResNet", "RegNet", "ShuffleNetV2")  # classifiers whose head is one fc layer
TORCHVISION_SIZE = 224
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageTowerConfig:
    model: str = "ViT-B-32"  # an open_clip model name, an mmssl one (mmssl-vit-tiny), a JSON config, torchvision:ARCH
    weights: str | None = None  # a local checkpoint or saved tower, or a pretrained tag (online users)
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


def _open_clip_parts(config: ImageTowerConfig, local: bool):
    """(visual, train transform, eval transform, output size, saved config) of an open_clip model."""
    import open_clip

    name = _register(config.model)
    weights = config.weights
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
    pp = open_clip.get_model_preprocess_cfg(model)
    model_cfg = open_clip.get_model_config(name)
    if config.image_size:
        model_cfg["vision_cfg"]["image_size"] = config.image_size
    return model.visual, train_tf, val_tf, int(model_cfg["embed_dim"]), {"model_cfg": model_cfg, "preprocess_cfg": pp}


def _torchvision_spec(config: ImageTowerConfig) -> dict | None:
    """What a torchvision tower is built from (``arch`` and ``preprocess_cfg``, what its saved
    ``torchvision_config.json`` holds): for ``torchvision:ARCH`` ImageNet's preprocessing at
    ``image_size`` (224 by default), for a saved tower's ``local-dir:DIR`` its own file; None for an
    open_clip model."""
    if config.model.startswith(TORCHVISION):
        pp = {
            "size": config.image_size or TORCHVISION_SIZE,
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        }
        return {"arch": config.model.removeprefix(TORCHVISION), "preprocess_cfg": pp}
    if config.model.startswith("local-dir:"):
        file = Path(config.model.removeprefix("local-dir:")) / TORCHVISION_CONFIG
        if file.is_file():
            spec = read_json_object(file)
            if not isinstance(spec.get("arch"), str) or not isinstance(spec.get("preprocess_cfg"), dict):
                raise ValueError(f"{file}: needs 'arch' and 'preprocess_cfg'")
            return spec
    return None


def _torchvision_parts(config: ImageTowerConfig, spec: dict, local: bool):
    """(visual, train transform, eval transform, output size, saved config) of a torchvision
    classifier whose head is one ``fc`` layer (ResNet, ResNeXt, Wide ResNet, RegNet, ShuffleNetV2):
    the head is replaced by the identity, so the tower's output is the pooled features (2048 for
    ResNet-50) and ``proj`` maps them to the dual encoder's size. Preprocessing is open_clip's
    transform at the spec's mean and std (ImageNet's: what torchvision's weights were trained with)."""
    from open_clip.transform import image_transform
    from torchvision import models

    arch, pp, weights = spec["arch"], spec["preprocess_cfg"], config.weights
    if arch not in models.list_models(module=models):
        raise ValueError(
            f"torchvision:{arch}: not a torchvision classification model (torchvision.models.list_models())"
        )
    # weights named by torchvision ("IMAGENET1K_V2", "DEFAULT") are downloaded by it: online users only
    net = models.get_model(arch, weights=weights if weights and not local else None)
    head = getattr(net, "fc", None)
    if type(net).__name__ not in TORCHVISION_FAMILIES or not isinstance(head, nn.Linear):
        raise ValueError(
            f"torchvision:{arch}: not supported as an image tower (one with a single fc head: "
            f"{', '.join(TORCHVISION_FAMILIES)})"
        )
    dim = head.in_features
    net.fc = nn.Identity()
    net.image_size = int(pp["size"])  # read by ImageTower.image_size, as for open_clip's visual
    train_tf = image_transform(pp["size"], True, pp["mean"], pp["std"], pp["resize_mode"], pp["interpolation"])
    val_tf = image_transform(pp["size"], False, pp["mean"], pp["std"], pp["resize_mode"], pp["interpolation"])
    return net, train_tf, val_tf, dim, spec


def _checkpoint_visual(path: str, torchvision: bool) -> dict:
    """The image tower's weights in a local checkpoint file. open_clip: its ``visual.*`` entries.
    torchvision: a plain state dict of the architecture, as torchvision and the SSL papers' releases
    (Barlow Twins', VICReg's ResNet-50) write it; a ``module.`` (DDP) prefix is dropped, from an SSL
    run's whole model (``backbone.*`` beside its projector) the ``backbone.*`` entries are taken, and
    the classification head (``fc.*``), which the tower does not have, is dropped."""
    state = read_checkpoint(path)
    if torchvision:
        for prefix in ("visual.", "backbone."):  # our own layout saved as one file; an SSL run's whole model
            state = entries_under(state, prefix) or state
        return {k: v for k, v in state.items() if not k.startswith("fc.")}
    visual = entries_under(state, "visual.")
    if not visual:
        raise ValueError(f"{path}: no 'visual.*' weights in this checkpoint")
    return visual


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
        self.saved_config: dict = {}  # what save_pretrained writes (model_cfg, preprocess_cfg)

    @classmethod
    def build(cls, config: ImageTowerConfig, embed_dim: int | None = None) -> ImageTower:
        from torchvision import transforms

        weights = config.weights
        saved = weights is not None and Path(weights).is_dir()  # a saved tower (e.g. `mmssl pretrain` output)
        if saved and not (Path(weights) / WEIGHTS).is_file():
            raise FileNotFoundError(f"{weights}: not a saved image tower (no {WEIGHTS})")
        local = weights is not None and (Path(weights).is_file() or saved)
        if weights is not None and not local and Path(weights).suffix in (".pt", ".pth", ".bin", ".safetensors"):
            raise FileNotFoundError(f"{weights}: no such checkpoint")
        spec = _torchvision_spec(config)
        if spec is not None:
            visual, train_tf, val_tf, dim, saved_config = _torchvision_parts(config, spec, local)
        else:
            visual, train_tf, val_tf, dim, saved_config = _open_clip_parts(config, local)
        if saved:  # its own layout: visual.* and proj.*; the projection is the new model's own
            file = Path(weights) / WEIGHTS
            state = load_safetensors(file)
            load_exact(visual, entries_under(state, "visual."), str(file))
        elif local:
            load_exact(visual, _checkpoint_visual(weights, torchvision=spec is not None), f"{weights} ({config.model})")
        pp = saved_config["preprocess_cfg"]
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
        tower = cls(config, visual, train_tf, val_tf, dim, embed_dim)
        tower.saved_config = saved_config
        if spec is not None:
            tower.saved_config_file = TORCHVISION_CONFIG
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
