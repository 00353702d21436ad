"""The top-level ``mmssl`` commands: ``train`` (``TrainConfig``: the recipe of ``--task`` builds its
task, the engine runs it), ``evaluate`` (``mmssl eval``, ``EvalConfig``: the recipe scores the model)
and ``env`` (``EnvConfig``: what this machine offers). Each package's own commands are in its
``commands`` module (``mmssl.data``, ``mmssl.pretrain``, ``mmssl.negatives``, ``indexing``, ``demo``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mmssl.console import launched_as_rank_zero, setup_logging
from mmssl.recipes.config import TrainConfig

__all__ = ["EnvConfig", "EvalConfig", "TrainConfig", "env", "evaluate", "train"]


def train(config: TrainConfig) -> int:
    from mmssl.engine import run_training
    from mmssl.recipes import get_recipe

    if not config.data.train:
        raise ValueError("--train is required (see --help for the layouts each --task reads)")
    recipe = get_recipe(config.data.task)
    run = config.flat()
    summary = run_training(config.engine, lambda device: recipe.build_task(config, device), run_config=run)
    if launched_as_rank_zero():  # one process writes the cards (the process group is gone by now)
        from mmssl.models.card import write_model_cards

        write_model_cards(Path(config.engine.out), run, summary, recipe.metric)
    return 0


@dataclass(frozen=True)
class EvalConfig:
    """Score a model (and baselines): text-code: MRR (CodeSearchNet protocol), recall@1/5/10; image-text:
    recall@1/5/10 both ways, zero-shot accuracy, linear probes."""

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
    dims: str | None = field(
        default=None,
        metadata={"help": "text-code: also score these leading prefix sizes, e.g. 384,256,128,64 (Matryoshka)"},
    )
    max_pairs: int | None = field(default=None, metadata={"help": "use a seeded random sample of N pairs"})
    chunk_size: int = field(default=1000, metadata={"help": "candidates per query for MRR (CodeSearchNet: 1000)"})
    seed: int = field(default=0, metadata={"help": "shuffle seed of the MRR protocol"})
    batch_size: int = field(default=128, metadata={"help": "embedding batch size"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda[:N], mps"})
    json: bool = field(default=False, metadata={"help": "print one JSON object"})


def evaluate(config: EvalConfig) -> int:
    from mmssl.recipes import get_recipe

    setup_logging("WARNING" if config.json else "INFO")
    recipe = get_recipe(config.task)
    if not config.data:
        raise ValueError(f"--data is required (the {recipe.name} pairs to score: see --help)")
    return recipe.eval_command(config)


@dataclass(frozen=True)
class EnvConfig:
    """Show versions, the device that --device picks, supported precisions and FAISS GPU support."""

    device: str = field(
        default="auto", metadata={"help": "device to check: auto (cuda, then mps, then cpu), cpu, cuda[:N], mps"}
    )
    json: bool = field(default=False, metadata={"help": "print one JSON object instead of a table"})


def env(config: EnvConfig) -> int:
    from mmssl.envinfo import collect

    info = collect(config)
    if config.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0
