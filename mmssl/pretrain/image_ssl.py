"""Self-supervised pretraining of an image tower: ``mmssl pretrain <method>``, seven methods.

Shape legend: B images in a batch, 3 x H x W pixels, D the tower's output, Z the projection, K classes
(pretext classes or clusters), g the jigsaw grid.

The families of the seed notes, each on the one training engine (``mmssl.train``), each training an
open_clip image tower (any open_clip config: ViTs, or ResNets such as ``RN50``) or a torchvision one
(``--image-model torchvision:resnet50``, from a plain torchvision state dict with ``--image-weights``) that
``mmssl train --task image-text --image-init OUT/best`` then starts from:

- contrastive: SimCLR (Chen et al. 2020): two augmented views, MLP projection head, NT-Xent over the
  2B views (``mmssl.losses.NTXentLoss``);
- non-contrastive: BYOL (Grill et al. 2020): online tower + projector + predictor against a target
  tower + projector that is an exponential moving average of the online one ("polyak averaging"),
  momentum from ``--ema`` to 1 on a cosine schedule; Barlow Twins (Zbontar et al. 2021): the views'
  cross-correlation driven to the identity; VICReg (Bardes et al. 2022): variance, invariance,
  covariance terms;
- pretext tasks: rotation prediction (Gidaris et al. 2018: every image at 0/90/180/270 degrees, 4
  classes) and jigsaw (Noroozi & Favaro 2016, in the single-image form: the image's g x g tiles
  shuffled by one of a fixed set of permutations, the permutation's index predicted from the
  whole shuffled image, rather than by a siamese network over separate tiles);
- feature clustering: DeepCluster (Caron et al. 2018): every epoch the training images are embedded
  (no augmentation), PCA-whitened and clustered by FAISS k-means (``indexing.cluster.kmeans``), and
  the tower learns to predict its images' clusters through a classifier that is reset each time.

Augmentations are the papers' (two views per image for the joint-embedding methods): random resized
crop (``--crop-min``, 0.08 in the papers; small images want more), horizontal flip, colour jitter
(0.4, 0.4, 0.4, 0.1 with p 0.8; BYOL's 0.4, 0.4, 0.2, 0.1 for BYOL/Barlow/VICReg), grayscale
(p 0.2), Gaussian blur (SimCLR p 0.5; BYOL's asymmetric 1.0 / 0.1) and solarization (BYOL's
second view, p 0.2). Pretext tasks and DeepCluster use crop + flip only.

Collapse is watched: every logged step reports, for the batch's L2-normalized tower outputs, the mean
over dimensions of their standard deviation (``emb_std``: 0 when every image maps to one point,
about 1/sqrt(D) for spread-out embeddings) and the effective rank (``eff_rank``, Roy & Vetterli
2007: exp of the entropy of the normalized singular values; 1 for a collapse onto a line).

Output directory (the engine's): ``OUT/best``, ``OUT/final``: the tower as a saved open_clip tower
(``open_clip_config.json`` + ``model.safetensors``, which ``--image-init`` reads) plus
``ssl_heads.safetensors`` (projector, predictor, target network, classifier, cluster labels: what a
``--resume`` needs) and ``ssl.json``. Validation: the method's loss on held-out images (fixed
augmentation draws), lower is better.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.config import EngineConfig
from mmssl.console import get_logger
from mmssl.train import run_training

log = get_logger("pretrain.image")
HEADS = "ssl_heads.safetensors"
META = "ssl.json"
METHODS = ("simclr", "byol", "barlow", "vicreg", "rotation", "jigsaw", "deepcluster")
JOINT = ("simclr", "byol", "barlow", "vicreg")  # two views per image


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
    proj_dim: int = field(default=128, metadata={"help": "projection head output (Z)"})
    hidden_dim: int = field(default=512, metadata={"help": "projection / predictor hidden size"})
    temperature: float = field(default=0.2, metadata={"help": "simclr: NT-Xent temperature"})
    ema: float = field(default=0.99, metadata={"help": "byol: target momentum at the start (cosine to 1)"})
    barlow_lambda: float = field(default=5e-3, metadata={"help": "barlow: off-diagonal weight"})
    jigsaw_grid: int = field(default=2, metadata={"help": "jigsaw: tiles per side (2: all 24 permutations)"})
    jigsaw_permutations: int = field(default=100, metadata={"help": "jigsaw, grid >= 3: size of the set"})
    clusters: int = field(default=100, metadata={"help": "deepcluster: k of the k-means"})
    pca_dim: int = field(default=64, metadata={"help": "deepcluster: PCA-whitening dimension before k-means"})
    on_bad: str = field(default="skip", metadata={"help": "bad images: skip (counted) or raise"})
    cache_images_mb: float = field(default=2048.0, metadata={"help": "decoded images kept in memory"})


def _method_config(name: str, cls_name: str, doc: str):
    cls = type(cls_name, (ImageSSLConfig,), {"__doc__": doc, "method": name, "__module__": __name__})
    cls.__annotations__ = {}
    return dataclass(frozen=True)(cls)


SimCLRConfig = _method_config("simclr", "SimCLRConfig", "SimCLR: two views, projection head, NT-Xent")
BYOLConfig = _method_config("byol", "BYOLConfig", "BYOL: online network + predictor against an EMA target")
BarlowConfig = _method_config("barlow", "BarlowConfig", "Barlow Twins: two views' cross-correlation to identity")
VICRegConfig = _method_config("vicreg", "VICRegConfig", "VICReg: variance, invariance, covariance of two views")
RotationConfig = _method_config("rotation", "RotationConfig", "rotation prediction: 0/90/180/270 degrees")
JigsawConfig = _method_config("jigsaw", "JigsawConfig", "jigsaw: which permutation shuffled the tiles")
DeepclusterConfig = _method_config("deepcluster", "DeepclusterConfig", "DeepCluster: predict k-means clusters")


# ---- augmentation ---------------------------------------------------------------------------------


def view_transforms(method: str, size: int, mean, std, crop_min: float) -> tuple:
    """The (first, second) view transforms of ``method`` (the second is None for one-view methods)."""
    from torchvision import transforms as T

    crop = T.RandomResizedCrop(size, scale=(crop_min, 1.0), interpolation=T.InterpolationMode.BICUBIC)
    kernel = max(3, (size // 10) | 1)  # about a tenth of the image, odd (SimCLR: 23 at 224)
    tail = [T.ToTensor(), T.Normalize(mean, std)]

    def blur(p: float):
        return T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=p)

    if method in ("rotation", "jigsaw", "deepcluster"):
        flip = [] if method == "rotation" else [T.RandomHorizontalFlip()]  # flips would blur rotation classes
        return T.Compose([crop, *flip, *tail]), None
    if method == "simclr":
        one = T.Compose(
            [
                crop,
                T.RandomHorizontalFlip(),
                T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                T.RandomGrayscale(p=0.2),
                blur(0.5),
                *tail,
            ]
        )
        return one, one
    jitter = [T.RandomHorizontalFlip(), T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8)]
    first = T.Compose([crop, *jitter, T.RandomGrayscale(p=0.2), blur(1.0), *tail])
    second = T.Compose([crop, *jitter, T.RandomGrayscale(p=0.2), blur(0.1), T.RandomSolarize(128, p=0.2), *tail])
    return first, second


class ViewBatcher:
    """Indices -> {"v1": (B, 3, H, W)[, "v2": ...], "index": (B,)}: picklable, for data workers."""

    def __init__(self, records: list, first, second, max_pixels: int) -> None:
        self.records, self.first, self.second, self.max_pixels = records, first, second, max_pixels

    def __call__(self, indices: Tensor) -> dict:
        from mmssl.data.image_text import open_image

        images = [open_image(self.records[i], self.max_pixels) for i in indices.tolist()]
        out = {"v1": torch.stack([self.first(im) for im in images]), "index": indices}
        if self.second is not None:
            out["v2"] = torch.stack([self.second(im) for im in images])
        return out


# ---- heads and collapse metrics -----------------------------------------------------------------


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
    spread) and ``eff_rank`` (effective rank of the centred batch: 0 when every row is the same, 1 on
    a line, up to min(B, D)). NaN for a batch with non-finite values or a single row (a step the
    engine then skips or cannot measure)."""
    from mmssl.evaluate import embedding_geometry

    z = F.normalize(h.detach().float(), dim=1)  # (B, D)
    if len(z) < 2 or not bool(torch.isfinite(z).all()):
        return {"emb_std": float("nan"), "eff_rank": float("nan")}
    geometry = embedding_geometry(z)
    return {"emb_std": geometry["std_mean"], "eff_rank": geometry["effective_rank"]}


def permutation_set(grid: int, n: int, seed: int = 0) -> Tensor:
    """(P, g*g) tile permutations: all of them when g*g! <= n, else ``n`` chosen greedily for a large
    minimal Hamming distance among 10 n random candidates (Noroozi & Favaro's maximal-Hamming set)."""
    tiles = grid * grid
    if math.factorial(tiles) <= n:
        return torch.tensor(list(itertools.permutations(range(tiles))))
    g = torch.Generator().manual_seed(seed)
    pool = torch.stack([torch.randperm(tiles, generator=g) for _ in range(10 * n)])  # (10n, T)
    chosen = [torch.arange(tiles)]
    dist = (pool != chosen[0]).sum(1)  # Hamming distance of each candidate to the chosen set
    for _ in range(n - 1):
        best = int(dist.argmax())
        chosen.append(pool[best])
        dist = torch.minimum(dist, (pool != pool[best]).sum(1))
    return torch.stack(chosen)


def shuffle_tiles(x: Tensor, perms: Tensor, grid: int) -> Tensor:
    """(B, 3, H, W) images, (B, g*g) permutations -> the images with tile t moved to place perm[t]."""
    b, c, h, w = x.shape
    th, tw = h // grid, w // grid
    tiles = x.reshape(b, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, th, tw)
    out = torch.empty_like(tiles)
    out[torch.arange(b)[:, None], perms] = tiles  # tile t lands at position perms[t]
    out = out.reshape(b, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5)  # (B, 3, g, th, g, tw)
    return out.reshape(b, c, h, w)


# ---- the model and the task ---------------------------------------------------------------------


class SSLModel(nn.Module):
    """The image tower and the method's heads; the target network (BYOL) is a frozen copy."""

    def __init__(self, method: str, tower: nn.Module, config: ImageSSLConfig, classes: int = 0) -> None:
        super().__init__()
        self.method, self.tower = method, tower
        d, z, hid = tower.dim, config.proj_dim, config.hidden_dim
        if method in JOINT:
            self.projector = mlp(d, hid, z, batch_norm=method != "simclr")
        if method == "byol":
            self.predictor = mlp(z, hid, z)
            self.target = nn.ModuleDict({"tower": copy.deepcopy(tower), "projector": copy.deepcopy(self.projector)})
            self.target.requires_grad_(False)
        if classes:
            self.classifier = nn.Linear(d, classes)

    def train(self, mode: bool = True):
        super().train(mode)
        if hasattr(self, "target"):
            self.target.train(mode)  # BYOL's target runs in the same mode as the online network
        return self


class ImageSSLTask:
    """One method's ``training_forward`` for the engine (``mmssl.tasks.ContrastiveTask``'s protocol)."""

    metric, greater_is_better = "valid_loss", False

    def __init__(self, model: SSLModel, data, config: ImageSSLConfig, batcher: ViewBatcher, features=None) -> None:
        from mmssl import losses as L

        self.model, self.data, self.config, self.batcher = model, data, config, batcher
        self.method = model.method
        self.loss_name = f"{self.method} loss"
        self.loss = {
            "simclr": lambda: L.NTXentLoss(temperature=config.temperature),
            "byol": L.BYOLLoss,
            "barlow": lambda: L.BarlowTwinsLoss(lambda_offdiag=config.barlow_lambda),
            "vicreg": L.VICRegLoss,
        }.get(self.method, lambda: None)()
        if self.method == "jigsaw":
            self.perms = permutation_set(config.jigsaw_grid, config.jigsaw_permutations, config.seed)
        self.features = features  # deepcluster: (records) -> (N, D) features of the training images
        self.labels: Tensor | None = None  # deepcluster: (N,) cluster of each training image
        self.batches_per_epoch = max(1, len(data) // config.batch_size)

    # -- the engine's protocol --
    def parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def save_pretrained(self, path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        self.model.tower.save_pretrained(path)
        state = self.model.state_dict()
        heads = {k: v.detach().cpu().contiguous() for k, v in state.items() if not k.startswith("tower.")}
        if self.labels is not None:
            heads["_labels"] = self.labels.cpu()
        save_file(heads, str(path / HEADS))
        meta = {"method": self.method, "config": asdict(self.config)}
        (path / META).write_text(json.dumps(meta, indent=2, default=str) + "\n")

    def load_pretrained_state(self, path) -> None:
        from safetensors.torch import load_file

        from mmssl.models.tower import WEIGHTS, load_exact

        path = Path(path)
        heads = load_file(str(path / HEADS))
        labels = heads.pop("_labels", None)
        tower = {f"tower.{k}": v for k, v in load_file(str(path / WEIGHTS)).items()}
        load_exact(self.model, {**tower, **heads}, str(path))  # tower, heads and target in one exact load
        if labels is not None:
            self.labels = labels.to(self.model_device)

    @property
    def model_device(self) -> torch.device:
        return next(self.model.parameters()).device

    def training_forward(self, batch: dict) -> tuple[dict[str, Tensor], dict[str, float]]:
        losses, h = self._loss(batch)
        report = collapse_metrics(h.detach())
        return {f"{self.method}_loss": losses}, report

    def after_step(self, step: int) -> None:
        """BYOL: move the target towards the online network; DeepCluster: recluster at each epoch's end."""
        if self.method == "byol":
            tau = 1 - (1 - self.config.ema) * (math.cos(math.pi * step / max(1, self.config.max_steps)) + 1) / 2
            online = [*self.model.tower.parameters(), *self.model.projector.parameters()]
            target = [*self.model.target["tower"].parameters(), *self.model.target["projector"].parameters()]
            with torch.no_grad():
                for t, o in zip(target, online):
                    t.lerp_(o, 1 - tau)  # t = tau * t + (1 - tau) * o
        if self.method == "deepcluster" and step % self.batches_per_epoch == 0:
            self.recluster()

    # -- methods --
    def _loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        m, method = self.model, self.method
        v1 = batch["v1"]
        if method in JOINT:
            v2 = batch["v2"]
            h1, h2 = m.tower(v1), m.tower(v2)  # (B, D) each
            z1, z2 = m.projector(h1), m.projector(h2)  # (B, Z)
            if method == "byol":
                with torch.no_grad():
                    t1 = m.target["projector"](m.target["tower"](v1))
                    t2 = m.target["projector"](m.target["tower"](v2))
                loss = self.loss(m.predictor(z1), t2) + self.loss(m.predictor(z2), t1)
            else:
                loss = self.loss(z1, z2)
            return loss, h1
        if method == "rotation":
            views = torch.cat([torch.rot90(v1, k, dims=(2, 3)) for k in range(4)])  # (4B, 3, H, W)
            labels = torch.arange(4, device=v1.device).repeat_interleave(len(v1))
            h = m.tower(views)
            return F.cross_entropy(m.classifier(h), labels), h[: len(v1)]
        if method == "jigsaw":
            which = torch.randint(len(self.perms), (len(v1),))
            shuffled = shuffle_tiles(v1, self.perms[which].to(v1.device), self.config.jigsaw_grid)
            h = m.tower(shuffled)
            return F.cross_entropy(m.classifier(h), which.to(v1.device)), h
        if method == "deepcluster":
            if self.labels is None:
                self.recluster()
            h = m.tower(v1)
            return F.cross_entropy(m.classifier(h), self.labels[batch["index"].to(self.labels.device)]), h
        raise ValueError(f"unknown method {method!r}")

    def recluster(self) -> None:
        """DeepCluster's epoch step: features of every training image, FAISS k-means, new labels,
        a freshly initialized classifier (the old one's classes mean nothing under new labels)."""
        from indexing.cluster import kmeans

        feats = self.features(self.model.tower)  # (N, D)
        result = kmeans(feats, self.config.clusters, pca_dim=self.config.pca_dim, seed=self.config.seed)
        self.labels = torch.from_numpy(result.labels).to(self.model_device)
        self.model.classifier.reset_parameters()
        log.info(
            "deepcluster: %d clusters, sizes %d..%d (median %d)",
            len(result.sizes),
            int(result.sizes.min()),
            int(result.sizes.max()),
            int(np.median(result.sizes)),
        )

    @torch.no_grad()
    def evaluate(self, valid_batches: list[dict]) -> dict[str, float]:
        was = self.model.training
        self.model.eval()
        try:
            total, hs = 0.0, []
            for batch in valid_batches:
                batch = {k: v.to(self.model_device) for k, v in batch.items()}
                loss, h = self._valid_loss(batch)
                total += float(loss) * len(h)
                hs.append(h)
            h = torch.cat(hs)
            return {"valid_loss": total / len(h), **{f"valid_{k}": v for k, v in collapse_metrics(h).items()}}
        finally:
            self.model.train(was)

    def _valid_loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        if self.method != "deepcluster":
            return self._loss(batch)
        # held-out images: labelled by their nearest training centroid would need the k-means here; the
        # classifier's own confidence (entropy of its prediction) is what is comparable across epochs
        h = self.model.tower(batch["v1"])
        p = F.softmax(self.model.classifier(h), dim=1)
        return -(p * p.clamp_min(1e-12).log()).sum(1).mean(), h


# ---- the command --------------------------------------------------------------------------------


def build_tower(config: ImageSSLConfig):
    from mmssl.models.image import ImageTower, ImageTowerConfig

    return ImageTower.build(
        ImageTowerConfig(model=config.image_model, weights=config.image_weights, image_size=config.image_size)
    )


@torch.no_grad()
def tower_features(tower, images: list, batch_size: int = 256) -> np.ndarray:
    """(N, D) float32 outputs of an image tower (before normalization) for ``images`` (records,
    paths, PIL), with open_clip's eval preprocessing, in eval mode (its mode is restored)."""
    was = tower.training
    tower.eval()
    prep, device = tower.preparer(train=False), next(tower.parameters()).device
    try:
        out = [
            tower(prep(images[s : s + batch_size])["pixels"].to(device)).float().cpu()
            for s in range(0, len(images), batch_size)
        ]
    finally:
        tower.train(was)
    return torch.cat(out).numpy()


def build_image_ssl(config: ImageSSLConfig, device: torch.device):
    """(task, validation function) for ``mmssl pretrain <method>``."""
    from mmssl.data.image_text import MAX_PIXELS
    from mmssl.image_text import load_image_pairs

    if not config.method:
        raise ValueError("choose a method: mmssl pretrain " + "|".join(METHODS))
    if not config.data:
        raise ValueError("--data is required (image folder with metadata.jsonl, CSV/TSV, JSONL, .tar shards, ...)")
    train = load_image_pairs(config.data, config.partition, config.on_bad, config.cache_images_mb)
    if len(train) < config.batch_size:
        raise ValueError(f"{config.data}: {len(train)} usable images, fewer than --batch-size {config.batch_size}")
    valid = load_image_pairs(
        config.data, config.valid_partition, config.on_bad, config.cache_images_mb, config.eval_max_images
    )
    if not len(valid) and len(train) >= 2 * config.batch_size:  # no such split: hold out 1/20 of the images
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed)).tolist()
        cut = max(2, len(train) // 20)
        valid = _subset(train, sorted(order[:cut][: config.eval_max_images]))
        train = _subset(train, sorted(order[cut:]))
        log.info("no %r images: %d training images held out for validation", config.valid_partition, len(valid))
    tower = build_tower(config)
    size = tower.image_size
    if config.method == "jigsaw" and size % config.jigsaw_grid:
        raise ValueError(f"--jigsaw-grid {config.jigsaw_grid} does not divide the image size {size}")
    pp = tower.saved_config["preprocess_cfg"]
    first, second = view_transforms(config.method, size, pp["mean"], pp["std"], config.crop_min)
    batcher = ViewBatcher(train.candidates, first, second, MAX_PIXELS)
    classes = {"rotation": 4, "jigsaw": len(permutation_set(config.jigsaw_grid, config.jigsaw_permutations, 0))}
    classes["deepcluster"] = config.clusters
    model = SSLModel(config.method, tower, config, classes.get(config.method, 0)).to(device)

    def features(t) -> np.ndarray:
        return tower_features(t, train.candidates)

    task = ImageSSLTask(model, train, config, batcher, features)
    log.info("pretrain %s: %d training images, %d validation images", config.method, len(train), len(valid))
    if not len(valid):
        return task, None
    # Validation views drawn once, from a fixed seed: every validation sees the same pixels.
    vb = ViewBatcher(valid.candidates, first, second, MAX_PIXELS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        n = len(valid) - len(valid) % 2
        valid_batches = [vb(torch.arange(s, min(s + config.batch_size, n))) for s in range(0, n, config.batch_size)]
    return task, (lambda _m: task.evaluate(valid_batches))


def _subset(pairs, idx: list[int]):
    from mmssl.tasks import Pairs

    return Pairs([pairs.queries[i] for i in idx], [pairs.candidates[i] for i in idx], pairs.ids[idx])


def main(config: ImageSSLConfig) -> int:
    run_training(config, build_image_ssl)
    return 0
