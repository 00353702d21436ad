"""The augmented views of the images: the papers' transform building blocks and the batcher.

Building blocks (torchvision transforms around the tower's size, mean and std): ``crop`` (random
resized crop, ``--crop-min`` the smallest area fraction: 0.08 in the papers, small images want
more), ``blur`` (Gaussian, a kernel of about a tenth of the image), ``to_tensor``; ``crop_view``
(crop [+ flip]: the pretext tasks and DeepCluster) and ``byol_views`` (BYOL's asymmetric pair, also
Barlow Twins' and VICReg's). ``ViewBatcher``: indices -> a batch of views (picklable, for data
workers); ``fixed_batches``: validation views drawn once from a fixed seed.
"""

from __future__ import annotations

import torch
from torch import Tensor


def crop(size: int, crop_min: float):
    from torchvision import transforms as T

    return T.RandomResizedCrop(size, scale=(crop_min, 1.0), interpolation=T.InterpolationMode.BICUBIC)


def blur(size: int, p: float):
    """Gaussian blur with probability ``p``, sigma in [0.1, 2], kernel about a tenth of the image
    and odd (SimCLR: 23 at 224)."""
    from torchvision import transforms as T

    kernel = max(3, (size // 10) | 1)
    return T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=p)


def to_tensor(mean, std) -> list:
    """PIL -> the tower's normalized (3, H, W) input: the last steps of every view."""
    from torchvision import transforms as T

    return [T.ToTensor(), T.Normalize(mean, std)]


def crop_view(size: int, mean, std, crop_min: float, flip: bool = True):
    """Crop [+ horizontal flip]: the one view of the pretext tasks and DeepCluster."""
    from torchvision import transforms as T

    return T.Compose([crop(size, crop_min), *([T.RandomHorizontalFlip()] if flip else []), *to_tensor(mean, std)])


def byol_views(size: int, mean, std, crop_min: float) -> tuple:
    """BYOL's pair (Grill et al. 2020): crop, flip, colour jitter (0.4, 0.4, 0.2, 0.1; p 0.8),
    grayscale (p 0.2), then blur p 1.0 in the first view, blur p 0.1 and solarization p 0.2 in the
    second."""
    from torchvision import transforms as T

    def view(*tail):
        jitter = T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8)
        return T.Compose([crop(size, crop_min), T.RandomHorizontalFlip(), jitter, T.RandomGrayscale(p=0.2), *tail])

    first = view(blur(size, 1.0), *to_tensor(mean, std))
    second = view(blur(size, 0.1), T.RandomSolarize(128, p=0.2), *to_tensor(mean, std))
    return first, second


class ViewBatcher:
    """Indices -> {"v1": (B, 3, H, W)[, "v2": ...], "index": (B,)}: picklable, for data workers.
    The draws come from the global RNG, which the engine seeds per batch (``seed`` is not used)."""

    def __init__(self, records: list, first, second, max_pixels: int) -> None:
        self.records, self.first, self.second, self.max_pixels = records, first, second, max_pixels

    def __call__(self, indices: Tensor, seed: int | None = None) -> dict:
        from mmssl.data.image_text import open_image

        images = [open_image(self.records[i], self.max_pixels) for i in indices.tolist()]
        out = {"v1": torch.stack([self.first(im) for im in images]), "index": indices}
        if self.second is not None:
            out["v2"] = torch.stack([self.second(im) for im in images])
        return out


def fixed_batches(batcher: ViewBatcher, n: int, batch_size: int, seed: int = 1234) -> list[dict]:
    """The batches of images 0..n-1, their views drawn under ``seed`` (the global RNG is restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [batcher(torch.arange(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
