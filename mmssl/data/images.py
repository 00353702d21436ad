"""``mmssl data make-images --kind emoji|shapes|digits --out DIR``: image-caption sets made offline.

Every kind writes one folder in the ``datasets`` imagefolder layout, atomically (a crash leaves no
half folder):

    DIR/metadata.jsonl   one row per image: file_name (relative path), text (the caption), split
                         (train | test), label, and kind-specific fields
    DIR/train/*.png, DIR/test/*.png
    DIR/dataset.json     kind, counts, how the split and captions were made, sources and licences

Kinds:
  emoji   real images with real captions: the emoji of Debian's ``fonts-noto-color-emoji``
          (Noto Color Emoji, SIL Open Font License 1.1) rendered with Pillow at size 109
          (``embedded_color=True``) and resized, captioned from Debian's ``unicode-cldr-core``
          (CLDR annotations, ``common/annotations/en.xml``, Unicode licence): the short name ("red
          apple") and the keywords ("apple | fruit | red"); the group and subgroup of Debian's
          ``unicode-data`` (``emoji/emoji-test.txt``: "Food & Drink", "food-fruit") as
          ``group``/``subgroup`` fields, for zero-shot classification. A fixed split by code point hash (1 in
          5 to test). Training captions are the names; a test image's caption is built from its
          keywords that are not any training caption and not its own name, joined (and neither the
          name nor a training caption once joined), so that a model must generalize beyond
          memorized names (test images without such keywords are left out, and counted).
  shapes  a generated compositional set: two shapes per image (circle, square, triangle; red,
          green, blue, yellow; small, large), captioned "a small red circle left of a large blue
          square"; the (colour, shape) pairs ``HELD_OUT`` never appear in training images, and
          every test image holds at least one of them, so test recall measures composition.
  digits  scikit-learn's handwritten digits (1,797 images of 8 x 8, upscaled), captioned "a
          handwritten digit 3": for zero-shot classification and linear probes; 1 in 5 to test.
"""

from __future__ import annotations

import hashlib
import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
CLDR_ANNOTATIONS = Path("/usr/share/unicode/cldr/common/annotations/en.xml")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")  # Debian unicode-data: groups, subgroups
DEBIAN_PACKAGES = {"emoji": ("fonts-noto-color-emoji", "unicode-cldr-core", "unicode-data")}
EMOJI_SIZE = 109  # the one bitmap size Noto Color Emoji ships

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SIZES = {"small": 0.22, "large": 0.4}  # fraction of the image side
HELD_OUT = (("red", "triangle"), ("blue", "circle"), ("green", "square"))


@dataclass(frozen=True)
class MakeImagesConfig:
    """Make an image-caption data set offline (emoji, generated shapes, or handwritten digits)."""

    kind: Literal["emoji", "shapes", "digits"] = field(metadata={"help": "which set to make"})
    out: str = field(metadata={"help": "folder to write (replaced atomically)"})
    size: int = field(default=64, metadata={"help": "image side in pixels"})
    count: int = field(default=3000, metadata={"help": "shapes: how many images (1 in 5 to test)"})
    seed: int = field(default=0, metadata={"help": "shapes: the generator's seed"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing folder"})


def _split(key: str, test_every: int = 5) -> str:
    """A fixed split from a stable hash of ``key`` (not Python's salted ``hash``)."""
    return "test" if int(hashlib.sha1(key.encode()).hexdigest(), 16) % test_every == 0 else "train"


# ---- emoji ---------------------------------------------------------------------------------------


def cldr_annotations(path: Path = CLDR_ANNOTATIONS) -> dict[str, tuple[str, list[str]]]:
    """code point sequence -> (short name, keywords) from a CLDR annotations file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; install the Debian package unicode-cldr-core")
    names: dict[str, str] = {}
    keywords: dict[str, list[str]] = {}
    for node in ET.parse(path).getroot().iter("annotation"):
        cp, text = node.get("cp"), (node.text or "").strip()
        if not cp or not text:
            continue
        if node.get("type") == "tts":
            names[cp] = text
        else:
            keywords[cp] = [k.strip() for k in text.split("|") if k.strip()]
    return {cp: (name, keywords.get(cp, [])) for cp, name in names.items()}


def emoji_groups(path: Path = EMOJI_TEST) -> dict[str, tuple[str, str]]:
    """code point sequence (without U+FE0F) -> (group, subgroup) from Unicode's ``emoji-test.txt``
    ("Animals & Nature", "animal-mammal"): the categories of zero-shot classification."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; install the Debian package unicode-data")
    groups: dict[str, tuple[str, str]] = {}
    group = subgroup = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and ";" in line:
            cps = line.split(";", 1)[0].split()
            key = "".join(chr(int(c, 16)) for c in cps).replace("\ufe0f", "")
            groups.setdefault(key, (group, subgroup))
    return groups


def render_emoji(font, cp: str, size: int):
    """The emoji as a (size, size) RGB image on white, or None when the font has no colour glyph."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGBA", (160, 160), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((8, 8), cp, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    rgb = glyph.convert("RGB")
    if max(hi - lo for lo, hi in rgb.getextrema()) < 30:  # no colour: a blank or monochrome stand-in
        return None
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square.convert("RGB").resize((size, size), Image.LANCZOS)


def make_emoji(tmp: Path, config: MakeImagesConfig) -> dict:
    from PIL import ImageFont

    if not EMOJI_FONT.is_file():
        raise FileNotFoundError(f"{EMOJI_FONT}: missing; install the Debian package fonts-noto-color-emoji")
    font = ImageFont.truetype(str(EMOJI_FONT), EMOJI_SIZE)
    annotations = cldr_annotations()
    groups = emoji_groups()
    rows, images = [], {}
    for cp, (name, kws) in sorted(annotations.items()):
        image = render_emoji(font, cp, config.size)
        if image is not None:
            images[cp] = image
            group, subgroup = groups.get(cp.replace("\ufe0f", ""), ("", ""))
            row = {"cp": cp, "name": name, "keywords": kws, "split": _split(cp), "group": group}
            rows.append({**row, "subgroup": subgroup})
    train_captions = {r["name"].lower() for r in rows if r["split"] == "train"}
    kept, dropped = [], 0
    for r in rows:
        if r["split"] == "train":
            r["text"] = r["name"]
        else:
            fresh = [k for k in r["keywords"] if k.lower() not in train_captions and k.lower() != r["name"].lower()]
            text = " ".join(fresh)
            if not fresh or text.lower() == r["name"].lower() or text.lower() in train_captions:
                dropped += 1  # e.g. "department store" from the keywords "department", "store"
                continue
            r["text"] = text
        codepoints = "-".join(f"{ord(ch):04x}" for ch in r["cp"])
        r["file_name"] = f"{r['split']}/{codepoints}.png"
        r["label"] = r["name"]
        images[r["cp"]].save(tmp / r["file_name"])
        kept.append(r)
    return {
        "rows": kept,
        "notes": {
            "split": "sha1(code points) % 5 == 0 -> test",
            "captions": "train: the CLDR short name; test: the keywords that are no training caption",
            "test_without_fresh_keywords_dropped": dropped,
            "sources": {
                "images": f"{EMOJI_FONT} (Debian fonts-noto-color-emoji), SIL Open Font License 1.1",
                "captions": f"{CLDR_ANNOTATIONS} (Debian unicode-cldr-core), Unicode License",
                "groups": f"{EMOJI_TEST} (Debian unicode-data), Unicode License",
            },
        },
    }


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
        split = _split(f"digit-{i}")
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


MAKERS = {"emoji": make_emoji, "shapes": make_shapes, "digits": make_digits}
