"""What the search app takes from a user's upload, and where Gradio keeps the uploads.

``open_query_image(query)``: a query image (an uploaded file's path, or a PIL image from a direct
caller) as RGB, checked from its header before anything is decoded: at most ``MAX_UPLOAD_BYTES``
on disk, one of ``IMAGE_FORMATS``, at most ``MAX_QUERY_PIXELS`` pixels and ``MAX_ASPECT``:1 (the
image towers resize the shortest side, so a 600000 x 1 strip would become gigabytes). Anything else
is a ``SearchError`` with a one-line message for the user. ``pin_mmap_threshold()`` at start and
``release_memory()`` after each image search give freed buffers back to the system.

``private_temp_dir()``: a folder made for one run of the app (``mkdtemp``: only its user can read
it) that Gradio keeps its uploads and cache in (``GRADIO_TEMP_DIR``), removed when the app stops
(Ctrl-C, SIGTERM, or any exit that runs ``atexit``). Gradio refuses uploads over
``MAX_UPLOAD_BYTES`` itself (``launch(max_file_size=)``: HTTP 413 once an upload passes the cap, and
the browser checks before sending) and deletes its files older than ``UPLOAD_MAX_AGE_S`` while it
runs (``Blocks(delete_cache=)``; example images are kept).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SearchError(ValueError):
    """A problem with the query or the request, shown to the user as it is."""


MAX_UPLOAD_BYTES = 20_000_000  # a query image file (Gradio's max_file_size, and checked again here)
MAX_QUERY_PIXELS = 40_000_000  # an uploaded query image
MAX_ASPECT = 20  # longest side / shortest side
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")  # what Pillow may parse a query as
UPLOAD_MAX_AGE_S = 3600  # uploads older than this are deleted (checked every 10 minutes)
DELETE_CACHE = (600, UPLOAD_MAX_AGE_S)  # Blocks(delete_cache=(every, older than)) in seconds


def check_image_size(width: int, height: int) -> None:
    """Refuse an image by its dimensions, before it is decoded or resized. (Not by setting
    ``PIL.Image.MAX_IMAGE_PIXELS``: that is process-wide, and below twice its value Pillow only warns.)"""
    if width * height > MAX_QUERY_PIXELS:
        raise SearchError(f"the image has {width} x {height} pixels; the limit is {MAX_QUERY_PIXELS:,}")
    if min(width, height) < 1 or max(width, height) > MAX_ASPECT * min(width, height):
        raise SearchError(f"the image is {width} x {height} pixels, more than {MAX_ASPECT}:1; crop it closer to square")


def upload_path(payload) -> str | None:
    """The file path of a query image as the search receives it: Gradio's unprocessed ``FileData``
    (a dict with ``path``, already checked by Gradio to be one of its uploads), or a path."""
    if isinstance(payload, dict):
        payload = payload.get("path")
    return payload


def open_query_image(query):
    """The query image as RGB (see the module docstring), or ``SearchError``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if query is None or (isinstance(query, str) and not query):
        raise SearchError("upload or pick an image first")
    if isinstance(query, Image.Image):
        check_image_size(query.width, query.height)
        return _decoded(query)
    if not isinstance(query, (str, Path)):
        raise SearchError(f"the query must be an image, got {type(query).__name__}")
    try:
        size = os.stat(query).st_size
    except OSError:
        raise SearchError("the uploaded image is gone (uploads are kept an hour); upload it again") from None
    if size == 0:
        raise SearchError("the uploaded file is empty")
    if size > MAX_UPLOAD_BYTES:
        raise SearchError(f"the file has {size:,} bytes; the limit is {MAX_UPLOAD_BYTES:,}")
    with open(query, "rb") as f:
        try:
            image = Image.open(f, formats=IMAGE_FORMATS)  # lazy: reads the header only
        except UnidentifiedImageError:
            raise SearchError(f"the file is not an image ({', '.join(IMAGE_FORMATS)})") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # Pillow's own guard
            raise SearchError(f"the image has too many pixels; the limit is {MAX_QUERY_PIXELS:,}") from None
        except (OSError, SyntaxError, ValueError):
            raise SearchError("the image is corrupt: its header cannot be read") from None
        check_image_size(image.width, image.height)
        rgb = _decoded(image)
    try:
        return ImageOps.exif_transpose(rgb)  # what gr.Image(type="pil") did: phone photos upright
    except Exception:  # a broken EXIF block: the image as stored
        return rgb


def _decoded(image):
    """``image`` decoded and made RGB by the library's own opener (its errors made the user's)."""
    from mmssl.data.image_text import BadImage, open_image

    try:
        return open_image(image, max_pixels=MAX_QUERY_PIXELS)
    except BadImage as e:
        if e.reason == "too_large":
            raise SearchError(f"the image has too many pixels; the limit is {MAX_QUERY_PIXELS:,}") from None
        raise SearchError("the image is truncated or corrupt and cannot be decoded") from None


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def _glibc():
    """The C library when it is glibc (it has ``malloc_trim`` and ``mallopt``), else None."""
    from mmssl.io import c_library

    libc = c_library()
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def pin_mmap_threshold() -> None:
    """Keep allocations over 128 KiB in their own mappings, returned to the system when freed
    (glibc; a no-op elsewhere). glibc raises that threshold each time such a block is freed, so after
    a few 20 MB uploads every large buffer lands in the heap and is never given back: the server grew
    ~215 KB per hostile query, 16 % in 960 of them, and 2.6 % with the threshold pinned
    (benchmarks/soak_demo.py). Neither Python nor Gradio sets it."""
    libc = _glibc()
    if libc:
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def release_memory() -> None:
    """Return freed memory to the system (glibc's ``malloc_trim``; a no-op elsewhere). Neither Pillow
    nor Gradio offers it: glibc keeps an image's freed buffers (tens of MB) in the arena of the
    thread that decoded it, so the server grew ~100 MB per 600 mixed queries without it
    (benchmarks/soak_demo.py); a trim takes about 5 ms."""
    libc = _glibc()
    if libc:
        libc.malloc_trim(0)


@contextmanager
def private_temp_dir() -> Iterator[Path]:
    """Gradio's uploads and cache in a folder of this run's own, removed on the way out (see the
    module docstring); set it up before the app is built (each component reads it when made)."""
    previous = os.environ.get("GRADIO_TEMP_DIR")
    path = Path(tempfile.mkdtemp(prefix="mmssl-demo-", dir=previous or None))

    def remove() -> None:
        shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)  # also when the `finally` never runs: the app in a daemon thread at exit
    os.environ["GRADIO_TEMP_DIR"] = str(path)
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:  # signal handlers can be set there only
        previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield path
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous_handler is None else previous_handler)
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous
        remove()
        atexit.unregister(remove)


def _interrupt(signum, frame):
    """SIGTERM (a service manager's stop) raised as Ctrl-C, so Gradio closes and the cleanup runs."""
    raise KeyboardInterrupt
