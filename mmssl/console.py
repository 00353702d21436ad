"""Logging, progress bars and one-line error texts, configured once per process.

Only rank 0 of a distributed run logs at INFO and draws progress bars; other ranks log warnings.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
console = Console(stderr=True)


def main_process() -> bool:
    """Rank 0 or alone: by torch's process group once torch is loaded, else by torchrun's ``RANK``
    (a search, which runs without torch, does not import it to ask)."""
    if "torch" in sys.modules:
        from mmssl.distributed import is_main_process

        return is_main_process()
    return os.environ.get("RANK", "0") == "0"


def setup_logging(level: str = "INFO", log_file: str | None = None) -> None:
    """Route the ``mmssl`` loggers to a rich stderr handler (and a plain file, if given)."""
    root = logging.getLogger("mmssl")
    root.handlers.clear()
    root.setLevel(level if main_process() else "WARNING")
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    root.addHandler(handler)
    if log_file:
        fh = logging.FileHandler(log_file)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)
    root.propagate = False


def error_line(e: BaseException) -> str:
    """The first informative line of an exception's text (libraries' messages run over many lines,
    and often open with a heading that ends in a colon); the type's name when it has no text."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return next((line for line in lines if not line.endswith(":")), lines[0] if lines else type(e).__name__)


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``mmssl`` hierarchy (``mmssl.train``, ``mmssl.index`` ...: by subject, not by module)."""
    return logging.getLogger(name if name.startswith("mmssl") else f"mmssl.{name}")


def progress(items: Iterable[T], total: int | None = None, description: str = "", disable: bool = False) -> Iterator[T]:
    """Iterate with a progress bar on rank 0 when stderr is a terminal; plain iteration otherwise."""
    if disable or not main_process() or not sys.stderr.isatty():
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def format_eta(seconds: float) -> str:
    """A remaining time as people read it: "45 s", "12 min", "2.5 h"."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
