"""``mmssl eval``: ``EvalConfig`` and ``main``, which hands the config to the recipe of ``--task``
(``Recipe.eval_command``: text-code in ``mmssl.recipes.text_code_eval``, image-text in
``mmssl.recipes.image_text_eval``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from mmssl.console import setup_logging


@dataclass(frozen=True)
class EvalConfig:
    """Score a model (and baselines): text-code: MRR (CodeSearchNet protocol), recall@1/5/10; image-text:
    recall@1/5/10 both ways, zero-shot accuracy, linear probes."""

    DATA_HELP: ClassVar[dict] = {
        "text-code": "a CodeSearchNet .jsonl[.gz] file or folder",
        "image-text": "image-caption pairs: CSV, JSONL, a folder, shards",
    }
    task: str = field(default="text-code", metadata={"help": "the recipe: text-code, image-text"})
    model: str | None = field(default=None, metadata={"help": "a dual encoder directory (from mmssl train)"})
    data: str = field(
        default="", metadata={"help": "text-code: CodeSearchNet .jsonl[.gz] file or folder; image-text: image pairs"}
    )
    partition: str | None = field(default="test", metadata={"help": "records of this partition ('' for all)"})
    train_partition: str | None = field(
        default="train", metadata={"help": "image-text: the linear probes' training split ('' for no probe)"}
    )
    untrained: bool = field(
        default=False, metadata={"help": "image-text: also score the model's untrained initialization (seed 0)"}
    )
    bm25: bool = field(default=False, metadata={"help": "also score BM25 over code tokens"})
    baseline_model: str | None = field(
        default=None, metadata={"help": "also score a sentence-embedding model dir (e.g. minilm), zero-shot"}
    )
    max_pairs: int | None = field(default=None, metadata={"help": "use a seeded random sample of N pairs"})
    chunk_size: int = field(default=1000, metadata={"help": "candidates per query for MRR (CodeSearchNet: 1000)"})
    seed: int = field(default=0, metadata={"help": "shuffle seed of the MRR protocol"})
    batch_size: int = field(default=128, metadata={"help": "embedding batch size"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda[:N], mps"})
    json: bool = field(default=False, metadata={"help": "print one JSON object"})


def main(config: EvalConfig) -> int:
    from mmssl.recipes import get_recipe

    setup_logging("WARNING" if config.json else "INFO")
    recipe = get_recipe(config.task)
    if not config.data:
        raise ValueError(f"--data is required ({recipe.name}: {EvalConfig.DATA_HELP.get(recipe.name, 'its pairs')})")
    return recipe.eval_command(config)
