"""What every image SSL method shares: its options, heads, collapse metrics and the engine task.

``ImageSSLConfig``: the options of every method (data, tower, crop, engine). ``ImageSSLTask``: the
base of a method's task (``mmssl.engine.task.Task``): it builds the views' batcher, the model (the
tower plus the heads the method names) and fixed validation batches, and runs the training step,
validation, save and load; a method gives its view transforms, its heads and its ``_loss``.
``mlp``: the papers' projection / prediction head. ``collapse_metrics``: the effective rank and
per-dimension std of a batch's embeddings, logged at every step. ``tower_features``: a tower's
outputs for a list of images (DeepCluster's clustering, the benchmark's probes).

Shape legend: B images in a batch, 3 x H x W pixels, D the tower's output, Z the projection.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.engine.config import EngineConfig
from mmssl.engine.sampling import to_device
from mmssl.engine.task import Task
from mmssl.pretrain.image_ssl.views import ViewBatcher, fixed_batches
from mmssl.runtime import eval_mode

if TYPE_CHECKING:
    from mmssl.data.pairs import Pairs
    from mmssl.models.image import ImageTower

HEADS = "ssl_heads.safetensors"  # beside the saved tower: every weight that is not the tower's
META = "ssl.json"


@dataclass(frozen=True)
class ImageSSLConfig(EngineConfig):
    """Self-supervised pretraining of an image tower (``--config FILE`` reads TOML/YAML/JSON)."""

    method: ClassVar[str] = ""
    data: str = field(
        default="",
        metadata={"help": "images: CSV/TSV, JSONL, imagefolder (metadata.jsonl), saved datasets dir, .tar shards"},
    )
    partition: str | None = field(default="train", metadata={"help": "keep images of this split"})
    valid_partition: str | None = field(default="valid", metadata={"help": "held-out images (validation loss)"})
    eval_max_images: int = field(default=512, metadata={"help": "validation images used"})
    out: str = field(default="runs/pretrain-image", metadata={"help": "output directory"})
    batch_size: int = field(default=128, metadata={"help": "images per micro-batch, all processes together"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (not on biases/norms)"})
    image_model: str = field(
        default="mmssl-vit-tiny", metadata={"help": "open_clip config, mmssl-vit-*, .json, torchvision:ARCH"}
    )
    image_weights: str | None = field(default=None, metadata={"help": "start from this checkpoint or saved tower"})
    image_size: int | None = field(default=None, metadata={"help": "override the config's input size"})
    crop_min: float = field(default=0.2, metadata={"help": "random resized crop: smallest area fraction"})
    on_bad: str = field(default="skip", metadata={"help": "bad images: skip (counted) or raise"})
    cache_images_mb: float = field(default=2048.0, metadata={"help": "decoded images kept in memory"})


def mlp(dim_in: int, hidden: int, dim_out: int, batch_norm: bool = True, last_bn: bool = False) -> nn.Sequential:
    """Linear -> [BN] -> ReLU -> Linear [-> BN]: the projection / prediction heads of these papers."""
    layers: list[nn.Module] = [nn.Linear(dim_in, hidden, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [nn.ReLU(inplace=True), nn.Linear(hidden, dim_out, bias=not last_bn)]
    if last_bn:
        layers.append(nn.BatchNorm1d(dim_out, affine=False))
    return nn.Sequential(*layers)


@torch.no_grad()
def collapse_metrics(h: Tensor) -> dict[str, float]:
    """``mmssl.evaluate.embedding_geometry`` of the L2-normalized (B, D) embeddings, as the training
    report's keys: ``emb_std`` (mean per-dimension std: 0 when collapsed, about 1/sqrt(D) when
    spread) and ``eff_rank`` (effective rank of the centred batch, Roy & Vetterli 2007: 0 when every
    row is the same, 1 on a line, up to min(B, D)). NaN for a batch with non-finite values or a
    single row (a step the engine then skips or cannot measure)."""
    from mmssl.evaluate import embedding_geometry

    z = F.normalize(h.detach().float(), dim=1)  # (B, D)
    if len(z) < 2 or not bool(torch.isfinite(z).all()):
        return {"emb_std": float("nan"), "eff_rank": float("nan")}
    geometry = embedding_geometry(z)
    return {"emb_std": geometry["std_mean"], "eff_rank": geometry["effective_rank"]}


@torch.no_grad()
def tower_features(tower, images: list, batch_size: int = 256) -> np.ndarray:
    """(N, D) float32 outputs of an image tower (before normalization) for ``images`` (records,
    paths, PIL), with open_clip's eval preprocessing, in eval mode (its mode is restored)."""
    prep, device = tower.preparer(train=False), next(tower.parameters()).device
    with eval_mode(tower):
        out = [
            tower(prep(images[s : s + batch_size])["pixels"].to(device)).float().cpu()
            for s in range(0, len(images), batch_size)
        ]
    return torch.cat(out).numpy()


class ImageSSLTask(Task):
    """One method's training task. ``model``: a ``ModuleDict`` of the tower (``model.tower``) and the
    method's heads (``projector``, ``predictor``, ``target``, ``classifier``: its state-dict keys
    are the saved files'). ``valid_batches``: the held-out images' views, drawn once (None: none)."""

    config_class: ClassVar[type[ImageSSLConfig]] = ImageSSLConfig
    metric = "valid_loss"
    greater_is_better = False

    def __init__(self, config: ImageSSLConfig, tower: ImageTower, train: Pairs, valid: Pairs, device) -> None:
        from mmssl.data.image_text import MAX_PIXELS

        self.config, self.data, self.method = config, train, config.method
        self.loss_name = f"{self.method} loss"
        pp = tower.saved_config["preprocess_cfg"]
        first, second = self.view_transforms(tower.image_size, pp["mean"], pp["std"])
        self.batcher = ViewBatcher(train.candidates, first, second, MAX_PIXELS)
        self.model = nn.ModuleDict({"tower": tower, **self.heads(tower)}).to(device)
        self.criterion = self.make_criterion()
        self.valid_batches: list[dict] | None = None
        if len(valid):  # views drawn once, from a fixed seed: every validation sees the same pixels
            n = len(valid) - len(valid) % 2
            views = ViewBatcher(valid.candidates, first, second, MAX_PIXELS)
            self.valid_batches = fixed_batches(views, n, config.batch_size)

    # -- what a method gives --
    @abstractmethod
    def view_transforms(self, size: int, mean, std) -> tuple:
        """The (first, second) view transforms (second None: one view per image)."""

    @abstractmethod
    def heads(self, tower: ImageTower) -> dict[str, nn.Module]:
        """The modules trained beside the tower, by name (in the order they are initialized)."""

    @abstractmethod
    def _loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        """A batch -> (the method's loss, (B, D) tower outputs of the first view)."""

    def make_criterion(self) -> nn.Module:
        """The loss module ``_loss`` applies (default: cross-entropy over the pretext classes)."""
        return nn.CrossEntropyLoss()

    def _valid_loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        return self._loss(batch)

    def extra_heads(self) -> dict[str, Tensor]:
        """Tensors saved with the heads that are no module's weights (names start with ``_``)."""
        return {}

    def load_extra_heads(self, extra: dict[str, Tensor]) -> None:
        pass

    # -- the engine's protocol --
    def training_forward(self, batch: dict) -> tuple[dict[str, Tensor], dict[str, float]]:
        loss, h = self._loss(batch)
        return {f"{self.method}_loss": loss}, collapse_metrics(h.detach())

    @property
    def has_validation(self) -> bool:
        return self.valid_batches is not None

    @torch.no_grad()
    def evaluate(self) -> dict[str, float] | None:
        """The method's loss on the held-out views (lower is better) and their collapse metrics."""
        if self.valid_batches is None:
            return None
        total, hs = 0.0, []
        with eval_mode(self.model):
            for batch in self.valid_batches:
                loss, h = self._valid_loss(to_device(batch, self.device))
                total += float(loss) * len(h)
                hs.append(h)
        h = torch.cat(hs)
        return {"valid_loss": total / len(h), **{f"valid_{k}": v for k, v in collapse_metrics(h).items()}}

    def set_grad_checkpointing(self) -> None:
        self.model.tower.set_grad_checkpointing(True)  # a torchvision tower refuses (ValueError)

    def save_pretrained(self, path) -> None:
        """The tower as a saved tower (what ``--image-init`` reads), the heads and ``ssl.json``."""
        from safetensors.torch import save_file

        path = Path(path)
        self.model.tower.save_pretrained(path)
        state = self.model.state_dict()
        heads = {k: v.detach().cpu().contiguous() for k, v in state.items() if not k.startswith("tower.")}
        save_file({**heads, **self.extra_heads()}, str(path / HEADS))
        meta = {"method": self.method, "config": asdict(self.config)}
        (path / META).write_text(json.dumps(meta, indent=2, default=str) + "\n")

    def load_pretrained_state(self, path) -> None:
        from mmssl.models.tower import WEIGHTS, load_exact, load_safetensors

        path = Path(path)
        heads = load_safetensors(path / HEADS)
        extra = {k: heads.pop(k) for k in [k for k in heads if k.startswith("_")]}
        tower = {f"tower.{k}": v for k, v in load_safetensors(path / WEIGHTS).items()}
        load_exact(self.model, {**tower, **heads}, str(path))  # tower, heads and target in one exact load
        self.load_extra_heads(extra)
