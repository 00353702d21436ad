"""``mmssl demo``: the search app over index directories (see ``demo.app``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmssl.console import setup_logging


@dataclass(frozen=True)
class DemoConfig:
    """Open a Gradio cross-modal search app over one or more index directories."""

    index: list[str] = field(metadata={"help": "index directory (mmssl index build); give --index several times"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind (0.0.0.0 exposes it to the network)"})
    port: int = field(default=7860, metadata={"help": "port to listen on"})
    lexical_weight: float = field(
        default=1.0, metadata={"help": "BM25's weight in hybrid mode (dense: 1); 0.1 suits MiniLM-class models"}
    )


def main(config: DemoConfig) -> int:
    from demo.app import launch, open_indexes

    setup_logging()
    indexes = open_indexes(config.index, config.lexical_weight)
    for item in indexes.values():
        q, m = item.pair
        print(f"loaded {item.name}: {len(item.index):,} {m} items, {q} queries ({item.path})", flush=True)
    launch(indexes, config.host, config.port)
    return 0
