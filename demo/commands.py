"""The demo commands: ``mmssl demo`` (``DemoConfig``, ``main``: the search app over index directories,
``demo.app``) and ``mmssl demo default`` (``demo_default``: the offline default job of ``demo.default``,
then the app)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from demo.default import (
    DEFAULT_ITEMS,
    DemoDefaultConfig,
    corpus_path,
    encoder_path,
    image_paths,
    index_paths,
    model_path,
    step,
)
from mmssl.console import setup_logging


@dataclass(frozen=True)
class DemoConfig:
    """Open a Gradio cross-modal search app over one or more index directories."""

    index: list[str] = field(metadata={"help": "index directory (mmssl index build); give --index several times"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind (0.0.0.0 exposes it to the network)"})
    port: int = field(default=7860, metadata={"help": "port to listen on"})
    lexical_weight: float | None = field(
        default=None,
        metadata={"help": "BM25's weight in hybrid mode (dense: 1; default: each index's own, chosen on validation)"},
    )


def main(config: DemoConfig) -> int:
    from demo.app import launch
    from demo.search import open_indexes

    setup_logging()
    indexes = open_indexes(config.index, config.lexical_weight)
    for item in indexes.values():
        q, m = item.pair
        print(f"loaded {item.name}: {len(item.index):,} {m} items, {q} queries ({item.path})", flush=True)
    launch(indexes, config.host, config.port)
    return 0


def demo_default(config: DemoDefaultConfig) -> int:
    """Corpus, model, indexes (each reused when already built), then the app: what ``make demo`` runs."""
    setup_logging()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    t = step("1/5 corpus: functions with docstrings from the standard library and installed packages")
    corpus = corpus_path(out, config.max_files)
    print(f"   {time.monotonic() - t:.0f} s")
    t = step(f"2/5 model: {config.model}")
    model = model_path(out, config.model, corpus, config)
    print(f"   {time.monotonic() - t:.0f} s")
    t = step("3/5 indexes: text → code and code → text, each with BM25")
    max_items = DEFAULT_ITEMS[config.model] if config.max_items is None else config.max_items
    encoder = encoder_path(out, config.model, model, config.backend)
    paths = index_paths(out, config.model, corpus, encoder, max_items or None)
    print(f"   {time.monotonic() - t:.0f} s")
    if config.images == "emoji":
        t = step(
            "4/5 images: the emoji set, an image tower trained against MiniLM (LiT), text → image and image → text"
        )
        paths += image_paths(out, config)
        print(f"   {time.monotonic() - t:.0f} s")
    print(f"\nready in {time.monotonic() - started:.0f} s")
    if not config.launch:
        return 0
    from demo.app import launch
    from demo.search import open_indexes

    step("5/5 the search app")
    indexes = open_indexes(paths)
    print(f"open http://{config.host}:{config.port}/ in a browser (Ctrl+C stops it)", flush=True)
    launch(indexes, config.host, config.port)
    return 0
