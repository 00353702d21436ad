"""``mmssl data make-images --kind emoji|icons|stamps|shapes|digits --out DIR``: image-caption sets
made offline.

Every kind writes one folder in the ``datasets`` imagefolder layout, atomically (a crash leaves no
half folder):

    DIR/metadata.jsonl   one row per image: file_name (relative path), text (the caption), split
                         (train | test), label, and kind-specific fields (emoji, icons, stamps:
                         ``captions``, the captions training draws from for the image)
    DIR/train/*.png, DIR/test/*.png
    DIR/dataset.json     kind, counts, how the split and captions were made, sources; emoji, icons,
                         stamps also what the set holds and the Debian packages' licences

Kinds:
  emoji   the emoji of Debian's emoji font captioned with their CLDR names and keywords,
  icons   the named icons of Debian's icon themes captioned with their names' words, and
  stamps  Tux Paint's clip art captioned with its descriptions: real images with real captions,
          split by image and by caption words (``mmssl.data.symbols``).
  shapes  a generated compositional set: two shapes per image (circle, square, triangle; red,
          green, blue, yellow; small, large), captioned "a small red circle left of a large blue
          square"; the (colour, shape) pairs ``HELD_OUT`` never appear in training images, and
          every test image holds at least one of them, so test recall measures composition.
  digits  scikit-learn's handwritten digits (1,797 images of 8 x 8, upscaled), captioned "a
          handwritten digit 3": for zero-shot classification and linear probes; 1 in 5 to test.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mmssl.data.symbols import make_emoji, make_icons, make_stamps, split_of

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SIZES = {"small": 0.22, "large": 0.4}  # fraction of the image side
HELD_OUT = (("red", "triangle"), ("blue", "circle"), ("green", "square"))


@dataclass(frozen=True)
class MakeImagesConfig:
    """Make an image-caption data set offline (emoji, icons, stamps, generated shapes, handwritten digits)."""

    kind: Literal["emoji", "icons", "stamps", "shapes", "digits"] = field(metadata={"help": "which set to make"})
    out: str = field(metadata={"help": "folder to write (replaced atomically)"})
    size: int = field(default=64, metadata={"help": "image side in pixels"})
    count: int = field(default=3000, metadata={"help": "shapes: how many images (1 in 5 to test)"})
    seed: int = field(default=0, metadata={"help": "shapes: the generator's seed"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing folder"})


# ---- shapes --------------------------------------------------------------------------------------


def _draw_shape(draw, shape: str, colour: tuple[int, int, int], cx: float, cy: float, r: float) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)


def shape_scene(rng: random.Random, held_out: bool):
    """Two (size, colour, shape) objects, left and right; with ``held_out`` at least one is a held-out pair."""
    while True:
        objs = [(rng.choice(list(SIZES)), rng.choice(list(COLOURS)), rng.choice(SHAPES)) for _ in range(2)]
        has = any((c, s) in HELD_OUT for _, c, s in objs)
        if has == held_out:
            return objs


def make_shapes(tmp: Path, config: MakeImagesConfig) -> dict:
    from PIL import Image, ImageDraw

    rng = random.Random(config.seed)
    rows = []
    n_test = config.count // 5
    for i in range(config.count):
        split = "test" if i < n_test else "train"
        left, right = shape_scene(rng, held_out=split == "test")
        s = config.size
        image = Image.new("RGB", (s, s), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        y = [s * rng.uniform(0.35, 0.65) for _ in range(2)]
        for (size, colour, shape), cx, cy in ((left, s * 0.27, y[0]), (right, s * 0.73, y[1])):
            _draw_shape(draw, shape, COLOURS[colour], cx, cy, s * SIZES[size] / 2 * 1.1)
        caption = f"a {' '.join(left)} left of a {' '.join(right)}"
        name = f"{split}/{i:05d}.png"
        image.save(tmp / name)
        rows.append(
            {
                "file_name": name,
                "text": caption,
                "split": split,
                "label": caption,
                "objects": [dict(zip(("size", "colour", "shape"), o)) for o in (left, right)],
            }
        )
    return {
        "rows": rows,
        "notes": {
            "held_out_pairs": [list(p) for p in HELD_OUT],
            "split": "the first count/5 images are test; each holds a held-out (colour, shape) pair, "
            "no training image does",
            "sources": {"images": "generated with Pillow (mmssl.data.images.make_shapes)", "licence": "Apache-2.0"},
        },
    }


# ---- digits --------------------------------------------------------------------------------------


def make_digits(tmp: Path, config: MakeImagesConfig) -> dict:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = []
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        split = split_of(f"digit-{i}")
        gray = (255 - pixels / 16.0 * 255).astype(np.uint8)  # dark ink on white, like the other sets
        image = Image.fromarray(gray, mode="L").resize((config.size, config.size), Image.NEAREST).convert("RGB")
        name = f"{split}/{i:04d}.png"
        image.save(tmp / name)
        rows.append({"file_name": name, "text": f"a handwritten digit {label}", "split": split, "label": int(label)})
    return {
        "rows": rows,
        "notes": {
            "split": "sha1('digit-<index>') % 5 == 0 -> test",
            "sources": {"images": "scikit-learn load_digits (UCI optical recognition of handwritten digits)"},
            "licence": "CC BY 4.0 (UCI)",
        },
    }


MAKERS = {
    "emoji": lambda tmp, config: make_emoji(tmp, config.size),
    "icons": lambda tmp, config: make_icons(tmp, config.size),
    "stamps": lambda tmp, config: make_stamps(tmp, config.size),
    "shapes": make_shapes,
    "digits": make_digits,
}
