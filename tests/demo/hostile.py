"""Query files a search app must refuse cheaply, each with the refusal it should answer with
(shared by tests/demo/test_demo.py and benchmarks/soak_demo.py).

``hostile_images(folder)`` writes them: a 600000 x 1 strip, PNGs of 144 MP and 225 MP that are
under 1 MB on disk (decompression bombs), a PNG whose header promises 5000 x 5000 and whose data
stops, a truncated image, a PNG signature followed by garbage, a text file named .png and an empty
file. ``normal_images(folder)`` writes a few ordinary ones (PNG, JPEG, a palette GIF, RGBA)."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of_zeros(path: Path, width: int, height: int, rows: int | None = None) -> Path:
    """A greyscale PNG of ``width`` x ``height`` black pixels, compressed row by row (under 1 MB up
    to 15000 x 15000); with ``rows``, its compressed data stops after that many rows (truncated)."""
    z = zlib.compressobj(1)  # fast; zeros compress about 230:1 even so
    row = bytes(width + 1)  # filter byte 0, then the row
    data = b"".join(z.compress(row) for _ in range(height if rows is None else rows))
    data += z.flush() if rows is None else z.flush(zlib.Z_SYNC_FLUSH)  # no end of stream
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


def _noise(size: tuple[int, int], seed: int = 0):
    from PIL import Image

    rng = random.Random(seed)
    return Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))


def hostile_images(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a regular expression the app's refusal message matches)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, str]] = {}
    out["bomb 144 MP"] = (png_of_zeros(folder / "bomb-12000.png", 12_000, 12_000), "the limit is 40,000,000")
    out["bomb 225 MP"] = (png_of_zeros(folder / "bomb-15000.png", 15_000, 15_000), "the limit is 40,000,000")
    strip = folder / "strip-600000x1.png"
    Image.new("L", (600_000, 1), 128).save(strip)
    out["strip 600000x1"] = (strip, "600000 x 1 pixels, more than 20:1")
    out["header only"] = (png_of_zeros(folder / "header-only.png", 5000, 5000, rows=3), "truncated or corrupt")
    photo = folder / "photo.png"
    _noise((64, 48)).save(photo)
    cut = folder / "truncated.png"
    cut.write_bytes(photo.read_bytes()[: photo.stat().st_size // 2])
    out["truncated"] = (cut, "truncated or corrupt")
    garbage = folder / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + random.Random(1).randbytes(2000))
    out["corrupt"] = (garbage, "not an image|corrupt")
    text = folder / "notes.png"
    text.write_text("this is not an image\n")
    out["not an image"] = (text, "not an image")
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    out["empty"] = (empty, "empty")
    return out


def normal_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    base = _noise((40, 30), seed=2)
    paths = [folder / "noise.png", folder / "noise.jpg", folder / "palette.gif", folder / "alpha.png"]
    base.save(paths[0])
    base.save(paths[1], quality=90)
    base.convert("P").save(paths[2])
    base.convert("RGBA").save(paths[3])
    return paths
