"""Logging, progress bars and one-line error texts, configured once per process.

Only rank 0 of a distributed run logs at INFO and draws progress bars; other ranks log warnings.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
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
    return launched_as_rank_zero()


def launched_as_rank_zero() -> bool:
    """Whether torchrun started this process as rank 0 (``RANK``; alone: yes), whatever the state of
    torch's process group (also after it is destroyed)."""
    return os.environ.get("RANK", "0") == "0"


class StderrHandler(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is at each record (as rich's console is), not the
    stream of the moment it was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it: always stderr
        pass


def setup_logging(level: str = "INFO", log_file: str | None = None) -> None:
    """Route the ``mmssl`` loggers to stderr, through rich on a terminal and as plain lines elsewhere
    (and to a plain file, if given)."""
    root = logging.getLogger("mmssl")
    root.handlers.clear()
    root.setLevel(level if main_process() else "WARNING")
    if sys.stderr.isatty():
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    else:  # a log file, nohup, CI: one line per record, never wrapped at rich's 80 columns
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)-7s %(message)s", datefmt="%H:%M:%S"))
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


PLAIN_EVERY = 30.0  # seconds between progress lines when stderr is not a terminal (a log, nohup, CI)


def progress(
    items: Iterable[T], total: int | None = None, description: str = "", disable: bool = False,
    every: float = PLAIN_EVERY,
) -> Iterator[T]:  # fmt: skip
    """Iterate with a progress bar on rank 0 when stderr is a terminal; elsewhere (a log file) with a
    plain line every ``every`` seconds: "embedding code: 4,000/12,000 (33 %), 2 min left"."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if disable or not main_process():
        yield from items
        return
    if not sys.stderr.isatty():
        yield from plain_progress(items, total, description, every)
        return
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


def plain_progress(items: Iterable[T], total: int | None, description: str, every: float) -> Iterator[T]:
    """``progress`` off a terminal: a logged line at most every ``every`` seconds, none for a quick loop."""
    log = get_logger("progress")
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every:
            last = now
            if total:
                left = (now - start) / done * (total - done)
                log.info("%s: %s/%s (%.0f %%), %s left", description, f"{done:,}", f"{total:,}", 100 * done / total,
                         format_eta(left))  # fmt: skip
            else:
                log.info("%s: %s done", description, f"{done:,}")


def format_eta(seconds: float) -> str:
    """A remaining time as people read it: "45 s", "12 min", "2.5 h"."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
