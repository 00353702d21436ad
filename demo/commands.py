"""The demo commands: ``mmssl demo`` (``DemoConfig``, ``main``: the search app over index directories,
``demo.app``) and ``mmssl demo default`` (``demo_default``: the offline default job of ``demo.default``,
then the app)."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from demo.default import (
    DEFAULT_ITEMS,
    IMAGE_STEPS,
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
    """Corpus, model, indexes (each reused when already built), then the app: what ``make demo`` runs.

    With images, the app opens as soon as the code indexes are ready, its image tabs marked as
    building; once step 4 is done it is reopened on the same port with every tab (reload the page)."""
    setup_logging()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    default = config.model == "minilm" and config.max_files is None and config.max_items is None
    clock = StepClock(images=config.images == "emoji", estimate=default and config.image_steps == IMAGE_STEPS)
    clock.step("1/5 corpus: functions with docstrings from the standard library and installed packages")
    corpus = corpus_path(out, config.max_files)
    clock.step(f"2/5 model: {config.model}")
    model = model_path(out, config.model, corpus, config)
    clock.step("3/5 indexes: text → code and code → text, each with BM25")
    max_items = DEFAULT_ITEMS[config.model] if config.max_items is None else config.max_items
    encoder = encoder_path(out, config.model, model, config.backend)
    paths = index_paths(out, config.model, corpus, encoder, max_items or None)
    from demo.app import launch, serving
    from demo.search import open_indexes

    url = f"http://{config.host}:{config.port}/"
    if config.images == "emoji":
        building = None
        if config.launch:  # the code tabs serve while the image part is built
            clock.done()
            what = "the emoji set and its image tower are being built (step 4/5 of `make demo`)"
            building = {pair: f"{what}; the terminal says when they are ready: reload the page then."
                        for pair in (("text", "image"), ("image", "text"))}  # fmt: skip
        with serving(open_indexes(paths), config.host, config.port, building) if building else nullcontext():
            if building:
                print(f"open {url} in a browser: the code tabs work now, the image tabs come with step 4/5", flush=True)
            clock.step(
                "4/5 images: the emoji set, an image tower trained against MiniLM (LiT), text → image and image → text"
            )
            paths += image_paths(out, config)
    clock.done()
    print(f"\nready in {clock.total():.0f} s")
    if not config.launch:
        return 0
    clock.step("5/5 the search app")
    indexes = open_indexes(paths)
    print(
        f"open {url} in a browser (Ctrl+C stops it)"
        + (": every tab is ready, reload the page" if config.images == "emoji" else ""),
        flush=True,
    )
    launch(indexes, config.host, config.port)
    return 0


# Seconds each step took on the first run on a 2-core AVX2 EPYC (benchmarks/RESULTS.md, "make demo
# first run, 2026-12-06"): what the estimates are scaled from.
FIRST_RUN_SECONDS = {"1/5": 73, "2/5": 3, "3/5": 143, "4/5": 178}


class StepClock:
    """Prints "== k/N title" as each step starts, and as one ends its seconds and (with
    ``estimate``: the default job, which the reference times are of) the time the steps after it
    should take: their first-run seconds here (``FIRST_RUN_SECONDS``), scaled by how this machine
    did on the steps that ran (a reused step, done in seconds, does not count)."""

    def __init__(self, images: bool, estimate: bool = True) -> None:
        self.started, self.estimate = time.monotonic(), estimate
        self.left = [k for k in FIRST_RUN_SECONDS if images or k != "4/5"]
        self.current: tuple[str, float] | None = None
        self.ran = self.reference = 0.0

    def step(self, title: str) -> None:
        self.done()
        key = title.split(" ", 1)[0]
        if not self.current and key == "1/5" and self.estimate:
            minutes = sum(FIRST_RUN_SECONDS[k] for k in self.left) / 60
            print(f"first run: about {minutes:.0f} min on a 2-core machine (later runs reuse every step)", flush=True)
        self.current = (key, step(title))

    def done(self) -> None:
        if self.current is None:
            return
        key, started = self.current
        seconds = time.monotonic() - started
        self.current = None
        if key not in FIRST_RUN_SECONDS:
            return
        self.left.remove(key)
        if seconds > 0.2 * FIRST_RUN_SECONDS[key]:  # it ran (a reused step takes seconds)
            self.ran += seconds
            self.reference += FIRST_RUN_SECONDS[key]
        pace = self.ran / self.reference if self.reference else 1.0
        rest = sum(FIRST_RUN_SECONDS[k] for k in self.left) * pace / 60
        to_go = f"; about {rest:.0f} min to go at most" if self.left and self.estimate else ""
        print(f"   {seconds:.0f} s{to_go}", flush=True)

    def total(self) -> float:
        return time.monotonic() - self.started
