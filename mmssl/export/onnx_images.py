"""An image tower's evaluation preprocessing without torch, for ONNX exports of image towers.

``image_steps(transform)`` reads the torchvision ``Compose`` an mmssl image tower evaluates with
(open_clip's, or the torchvision towers' own: resize of the shortest side, centre crop, RGB,
to-tensor, normalize) into a plain JSON spec, and refuses a step it does not know. ``ImagePreprocess``
applies the spec with Pillow and numpy, as torchvision does on Pillow images (the same Pillow
resize, the same crop offsets, /255 and (x - mean) / std), so an export embeds an image as the
tower does (tested against the tower's own preparer). Images are opened as the index layer opens
them (``mmssl.data.image_text.open_image``: RGB, size caps, ``BadImage`` naming the file).
"""

from __future__ import annotations

import numpy as np

INTERPOLATIONS = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1}  # Pillow's resampling codes


def _pair(size) -> list[int]:
    return [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]


def image_steps(transform) -> list[dict]:
    """The spec of a torchvision ``Compose`` of Resize(int), CenterCrop, RGB conversion, ToTensor and
    Normalize: a list of {"op": ...} dicts."""
    from torchvision import transforms

    steps = []
    for step in getattr(transform, "transforms", [transform]):
        name = type(step).__name__
        if isinstance(step, transforms.Resize):
            if not isinstance(step.size, int) and len(step.size) != 1:
                raise ValueError(f"image preprocessing: Resize to a fixed {step.size} is not exported")
            if step.max_size is not None:
                raise ValueError("image preprocessing: Resize with max_size is not exported")
            size = step.size if isinstance(step.size, int) else step.size[0]
            steps.append({"op": "resize_shortest", "size": int(size), "interpolation": step.interpolation.value})
        elif isinstance(step, transforms.CenterCrop):
            steps.append({"op": "center_crop", "size": _pair(step.size)})
        elif name in ("MaybeConvertMode", "_convert_to_rgb") or getattr(step, "__name__", "") == "_convert_to_rgb":
            steps.append({"op": "rgb"})
        elif isinstance(step, transforms.ToTensor) or name == "MaybeToTensor":
            steps.append({"op": "to_array"})
        elif isinstance(step, transforms.Normalize):
            steps.append(
                {"op": "normalize", "mean": [float(m) for m in step.mean], "std": [float(s) for s in step.std]}
            )
        else:
            raise ValueError(f"image preprocessing step {name} is not exported (known: Resize, CenterCrop, "
                             "RGB, ToTensor, Normalize)")  # fmt: skip
    if [s["op"] for s in steps][-2:] != ["to_array", "normalize"]:
        raise ValueError("image preprocessing must end in ToTensor, Normalize to be exported")
    return steps


class ImagePreprocess:
    """Images (paths, bytes, PIL images, ``ImageTextRecord``) -> (B, 3, H, W) float32, by the spec."""

    def __init__(self, steps: list[dict]) -> None:
        self.steps = steps
        for step in steps:
            if step["op"] not in ("resize_shortest", "center_crop", "rgb", "to_array", "normalize"):
                raise ValueError(f"image preprocessing: unknown step {step['op']!r}")

    def one(self, image) -> np.ndarray:
        from PIL import Image

        from mmssl.data.image_text import open_image

        x = open_image(image)
        for step in self.steps:
            op = step["op"]
            if op == "resize_shortest":  # torchvision's output size: the short side to `size`, the long truncated
                w, h = x.size
                short, long = (w, h) if w <= h else (h, w)
                size = step["size"]
                if short != size:
                    new_short, new_long = size, int(size * long / short)
                    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
                    x = x.resize((new_w, new_h), Image.Resampling(INTERPOLATIONS[step["interpolation"]]))
            elif op == "center_crop":  # torchvision's offsets (an image smaller than the crop is padded by PIL)
                ch, cw = step["size"]
                w, h = x.size
                top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
                x = x.crop((left, top, left + cw, top + ch))
            elif op == "rgb":
                x = x.convert("RGB") if x.mode != "RGB" else x
            elif op == "to_array":
                x = np.asarray(x, dtype=np.float32).transpose(2, 0, 1) / 255.0  # (3, H, W)
            else:
                mean = np.asarray(step["mean"], dtype=np.float32).reshape(-1, 1, 1)
                std = np.asarray(step["std"], dtype=np.float32).reshape(-1, 1, 1)
                x = (x - mean) / std
        return x

    def __call__(self, images: list) -> np.ndarray:
        return np.stack([self.one(im) for im in images]).astype(np.float32, copy=False)
