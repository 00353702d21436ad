"""Jigsaw (Noroozi & Favaro 2016, "Unsupervised Learning of Visual Representations by Solving Jigsaw
Puzzles"), in the single-image form.

``JigsawConfig`` (``--jigsaw-grid``, ``--jigsaw-permutations``) and ``Jigsaw``: each image's g x g
tiles are shuffled by one of a fixed set of permutations (``permutation_set``, ``shuffle_tiles``) and
a linear classifier on the tower predicts the permutation's index from the whole shuffled image
(rather than a siamese network over separate tiles). The view: crop and flip.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from mmssl.pretrain.image_ssl.base import ImageSSLConfig, ImageSSLTask
from mmssl.pretrain.image_ssl.views import crop_view


@dataclass(frozen=True)
class JigsawConfig(ImageSSLConfig):
    """jigsaw: which permutation shuffled the tiles"""

    method: ClassVar[str] = "jigsaw"
    jigsaw_grid: int = field(default=2, metadata={"help": "jigsaw: tiles per side (2: all 24 permutations)"})
    jigsaw_permutations: int = field(default=100, metadata={"help": "jigsaw, grid >= 3: size of the set"})


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


class Jigsaw(ImageSSLTask):
    """``perms``: the (P, g*g) permutation set, drawn once from ``--seed``."""

    config_class = JigsawConfig

    def __init__(self, config: JigsawConfig, tower, train, valid, device) -> None:
        if tower.image_size % config.jigsaw_grid:
            raise ValueError(f"--jigsaw-grid {config.jigsaw_grid} does not divide the image size {tower.image_size}")
        self.perms = permutation_set(config.jigsaw_grid, config.jigsaw_permutations, config.seed)
        super().__init__(config, tower, train, valid, device)

    def view_transforms(self, size: int, mean, std) -> tuple:
        return crop_view(size, mean, std, self.config.crop_min), None

    def heads(self, tower) -> dict[str, nn.Module]:
        return {"classifier": nn.Linear(tower.dim, len(self.perms))}

    def _loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        v1 = batch["v1"]
        which = torch.randint(len(self.perms), (len(v1),))  # (B,) from the global RNG, as the views
        shuffled = shuffle_tiles(v1, self.perms[which].to(v1.device), self.config.jigsaw_grid)
        h = self.model.tower(shuffled)
        return self.criterion(self.model.classifier(h), which.to(v1.device)), h
