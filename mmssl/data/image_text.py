"""Image-caption pairs from the layouts users have, and images opened safely.

``read_image_text(source)`` returns ``ImageTextRecord``s from any of:

    CSV / TSV          open_clip's layout: a ``filepath`` column and a caption column (``title``,
                       ``caption`` or ``text``; ``caption_key`` names another); relative paths are
                       taken from the current folder, else from the file's folder
    JSONL (.gz)        one object per line with an image field (``file_name``, ``image``, ``filepath``)
                       and a caption field (``text``, ``caption``, ``title``)
    a folder           the ``datasets`` imagefolder layout: ``metadata.jsonl`` (or ``metadata.csv``)
                       beside the images, ``file_name`` relative to the folder (what
                       ``mmssl data make-images`` writes)
    a saved dataset    a ``datasets`` folder from ``save_to_disk``, or ``hf:NAME`` (online users), with
                       an image column and a text column (``image_key`` / ``caption_key``)
    WebDataset shards  ``.tar`` files (or a folder of them): members grouped by key, the part before
                       the first dot; ``jpg``/``jpeg``/``png``/``webp`` image and ``txt`` caption

A record whose split field (``split``, ``partition``) is not ``split`` is left out when ``split``
is given. Problems in the listing (a missing column, bad JSON) are ``ImageDataError``s naming the file
and line; problems in an image are handled when it is opened:

``open_image(record)`` returns an RGB ``PIL.Image``: CMYK, palette and greyscale converted,
transparency composited on white, 16-bit channels scaled to 8 bits. A file that is not an image,
a truncated one, or one past ``max_pixels`` (a decompression bomb: Pillow's own guard, made an
error at any size over the limit) raises ``BadImage`` naming the file; ``ImageTextData`` skips and
counts those (``on_bad="skip"``) or raises (``on_bad="raise"``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

IMAGE_KEYS = ("file_name", "filepath", "image", "image_path", "path")
CAPTION_KEYS = ("text", "caption", "title")
SPLIT_KEYS = ("split", "partition")
TAR_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
MAX_PIXELS = 64_000_000  # 8k x 8k: larger is refused as a likely decompression bomb


class ImageDataError(ValueError):
    """A problem in a listing of image-caption pairs; the message starts with ``file:line:``."""


class BadImage(ValueError):
    """An image that cannot be used; the message names its record and file and says why;
    ``reason`` is the key it is counted under (missing, not_an_image, unreadable, too_large)."""

    def __init__(self, where: str, reason: str, what: str) -> None:
        super().__init__(f"{where}: {what}")
        self.reason = reason


@dataclass(frozen=True)
class ImageTextRecord:
    image: Any  # a path (str), encoded bytes, or a PIL image (from a datasets column)
    text: str
    where: str  # file:line, tar member, or dataset row: for messages
    meta: dict = field(default_factory=dict)


def _pick(row: dict, wanted: str | None, defaults: tuple[str, ...], what: str, where: str) -> str:
    keys = (wanted,) if wanted else defaults
    for key in keys:
        if key in row and row[key] not in (None, ""):
            return key
    raise ImageDataError(f"{where}: no {what} field (looked for {', '.join(keys)}; the row has {', '.join(row)})")


def _resolve(path: str, base: Path) -> str:
    p = Path(path)
    if p.is_absolute() or p.exists():
        return str(p)
    return str(base / p)


def _from_rows(rows: Iterator[tuple[str, dict]], base: Path, image_key, caption_key, split) -> list[ImageTextRecord]:
    out = []
    for where, row in rows:
        if split is not None:
            s = next((row[k] for k in SPLIT_KEYS if k in row), None)
            if s is not None and s != split:
                continue
        ik = _pick(row, image_key, IMAGE_KEYS, "image", where)
        ck = _pick(row, caption_key, CAPTION_KEYS, "caption", where)
        caption = row[ck]
        if not isinstance(caption, str):
            raise ImageDataError(f"{where}: field {ck!r} must be a string, got {type(caption).__name__}")
        meta = {k: v for k, v in row.items() if k not in (ik, ck)}
        out.append(ImageTextRecord(_resolve(str(row[ik]), base), caption, where, meta))
    return out


def _csv_rows(path: Path) -> Iterator[tuple[str, dict]]:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with path.open(newline="", encoding="utf-8-sig") as f:
        for i, row in enumerate(csv.DictReader(f, delimiter=delimiter), start=2):  # line 1: the header
            yield f"{path}:{i}", row


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ImageDataError(f"{path}:{i}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ImageDataError(f"{path}:{i}: expected a JSON object")
            yield f"{path}:{i}", row


def _tar_records(paths: list[Path]) -> list[ImageTextRecord]:
    out = []
    for path in paths:
        groups: dict[str, dict[str, bytes]] = {}
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    if not member.isfile() or "." not in Path(member.name).name:
                        continue
                    key, _, ext = member.name.partition(".")
                    groups.setdefault(key, {})[ext.lower()] = tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ImageDataError(f"{path}: not a readable tar shard ({e})") from None
        for key, parts in groups.items():
            image = next((parts[e] for e in TAR_IMAGE_EXTS if e in parts), None)
            if image is None or "txt" not in parts:
                continue
            out.append(ImageTextRecord(image, parts["txt"].decode("utf-8").strip(), f"{path}:{key}"))
    return out


def _dataset_records(source: str, image_key, caption_key, split) -> list[ImageTextRecord]:
    import datasets

    ds = datasets.load_dataset(source[3:], split=split or "train") if source.startswith("hf:") else None
    if ds is None:
        ds = datasets.load_from_disk(source)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split or "train"]
    columns = {c: 1 for c in ds.column_names}  # _pick looks at names only
    ik = _pick(columns, image_key, ("image", "img", *IMAGE_KEYS), "image", source)
    ck = _pick(columns, caption_key, CAPTION_KEYS, "caption", source)
    return [ImageTextRecord(row[ik], row[ck], f"{source}[{i}]") for i, row in enumerate(ds)]


def read_image_text(
    source: str | Path,
    *,
    split: str | None = None,
    image_key: str | None = None,
    caption_key: str | None = None,
) -> list[ImageTextRecord]:
    """The image-caption records of ``source`` (any layout in the module docstring)."""
    text = str(source)
    if text.startswith("hf:"):
        return _dataset_records(text, image_key, caption_key, split)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return _dataset_records(text, image_key, caption_key, split)
        for name, reader in (("metadata.jsonl", _jsonl_rows), ("metadata.csv", _csv_rows)):
            if (path / name).is_file():
                return _from_rows(reader(path / name), path, image_key, caption_key, split)
        shards = sorted(path.glob("*.tar"))
        if shards:
            return _tar_records(shards)
        raise ImageDataError(f"{path}: no metadata.jsonl, metadata.csv, saved dataset or .tar shards")
    name = path.name
    if name.endswith((".csv", ".tsv")):
        return _from_rows(_csv_rows(path), path.parent, image_key, caption_key, split)
    if name.endswith((".jsonl", ".jsonl.gz")):
        return _from_rows(_jsonl_rows(path), path.parent, image_key, caption_key, split)
    if name.endswith(".tar"):
        return _tar_records([path])
    raise ImageDataError(f"{path}: use a .csv, .tsv, .jsonl(.gz) or .tar file, or a folder")


def open_image(record: ImageTextRecord | Any, max_pixels: int = MAX_PIXELS):
    """The record's image as RGB (see the module docstring), or ``BadImage``."""
    from PIL import Image, UnidentifiedImageError

    ref = record.image if isinstance(record, ImageTextRecord) else record
    where = record.where if isinstance(record, ImageTextRecord) else "image"
    if isinstance(ref, (str, Path)):
        where = f"{where} ({ref})"
    try:
        if isinstance(ref, Image.Image):
            image = ref
        else:
            image = Image.open(io.BytesIO(ref) if isinstance(ref, bytes) else ref)
        if image.width * image.height > max_pixels:
            size = f"{image.width} x {image.height} pixels"
            raise BadImage(where, "too_large", f"{size}, over the limit of {max_pixels:,}")
        image.load()  # (no warnings filter here: catch_warnings is process-wide, and threads decode at once)
    except BadImage:
        raise
    except FileNotFoundError:
        raise BadImage(where, "missing", "no such image file") from None
    except UnidentifiedImageError:
        raise BadImage(where, "not_an_image", "not an image Pillow can read") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise BadImage(where, "too_large", f"a likely decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(where, "unreadable", f"unreadable image, truncated or corrupt ({e})") from None
    return to_rgb(image)


def to_rgb(image):
    """RGB 8-bit: 16-bit and 32-bit channels scaled, transparency composited on white."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        a = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or a.max() > 255 else 255.0
        image = Image.fromarray((a / top * 255).clip(0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


@dataclass
class ImageTextData:
    """Records and the policy for bad images: skip and count them, or raise."""

    records: list[ImageTextRecord]
    on_bad: Literal["skip", "raise"] = "skip"
    max_pixels: int = MAX_PIXELS
    skipped: Counter = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)  # messages of the skipped images (first 100)

    def __len__(self) -> int:
        return len(self.records)

    def get(self, i: int):
        """(RGB image, caption), or None for a skipped bad image."""
        record = self.records[i]
        try:
            return open_image(record, self.max_pixels), record.text
        except BadImage as e:
            if self.on_bad == "raise":
                raise
            self.skipped[e.reason] += 1
            if len(self.bad) < 100:
                self.bad.append(str(e))
            return None
