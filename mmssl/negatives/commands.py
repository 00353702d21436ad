"""``mmssl mine-negatives``: mine hard negatives for every training pair and save them (JSON lines).

The config is two groups: ``run`` (what to read and write, where to compute) and ``mining``
(``MiningSettings``, the rules of ``mmssl.negatives.mine``); each group's fields are flags of the
command under their own names (``--data``, ``--top-k``, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from mmssl.data.pairs import Pairs
from mmssl.io import check_output
from mmssl.negatives.mine import _text_of, mine_negatives
from mmssl.negatives.table import MiningSettings
from mmssl.options import GroupedConfig


@dataclass(frozen=True)
class MineRunConfig:
    """What ``mmssl mine-negatives`` reads and writes, and where it computes."""

    GROUP_TITLE: ClassVar[str] = "data, output, device"
    data: str = field(default="", metadata={"help": "training data, as `mmssl train --train` reads it"})
    out: str = field(default="", metadata={"help": "output file (JSON lines), written atomically"})
    model: str | None = field(
        default=None, metadata={"help": "a trained dual encoder dir (`mmssl train` OUT/best): needed for model, both"}
    )
    task: str = field(
        default="auto",
        metadata={
            "help": "the recipe of the data: text-code, image-text, ... (auto: the model's; text-code without one)"
        },
    )
    partition: str | None = field(
        default="train", metadata={"help": "the pairs of this partition (as --train-partition)"}
    )
    batch_size: int = field(default=256, metadata={"help": "embedding batch size"})
    device: str = field(default="auto", metadata={"help": "auto (cuda, mps, cpu), cpu, cuda[:N]"})
    on_bad: Literal["skip", "raise"] = field(default="skip", metadata={"help": "image-text: bad images (as train)"})
    show: int = field(default=3, metadata={"help": "print this many pairs with their negatives"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --out file"})


@dataclass(frozen=True)
class MineNegativesConfig(GroupedConfig):
    """Mine hard negatives for every training pair (``--config FILE`` reads TOML/YAML/JSON defaults,
    flat or in tables [run] and [mining])."""

    run: MineRunConfig = field(default_factory=MineRunConfig)
    mining: MiningSettings = field(default_factory=MiningSettings)


def load_training_pairs(data: str, task: str, partition: str | None, on_bad: str = "skip") -> Pairs:
    """The pairs ``mmssl train --task TASK --train DATA`` trains on (same reader, same order)."""
    from mmssl.recipes import get_recipe
    from mmssl.recipes.config import PairDataConfig

    return get_recipe(task).load_pairs(data, partition, PairDataConfig(on_bad=on_bad))


def main(config: MineNegativesConfig) -> int:
    from mmssl.runtime import resolve_device

    run, settings = config.run, config.mining  # the settings were validated when the config was made
    if not run.data or not run.out:
        raise ValueError("--data and --out are required")
    out = Path(run.out)
    check_output(out, run.overwrite, "a negatives table")
    model = None
    task = run.task
    if run.model:
        from mmssl.models import DualEncoder

        model = DualEncoder.from_pretrained(run.model, device=resolve_device(run.device))
        from mmssl.recipes import recipe_for_model

        modal_task = recipe_for_model(model).name
        if task not in ("auto", modal_task):
            raise ValueError(f"--task {task}, but {run.model} is a {modal_task} model")
        task = modal_task
    elif settings.source != "bm25":
        raise ValueError(f"--source {settings.source} needs --model (or use --source bm25)")
    task = "text-code" if task == "auto" else task
    pairs = load_training_pairs(run.data, task, run.partition, run.on_bad)
    table = mine_negatives(pairs, settings, model, run.batch_size)
    table.save(out)
    print(json.dumps({"out": str(out), **table.stats, "seconds": table.seconds}, indent=2))
    for i in range(min(run.show, len(table))):
        print(f"\npair {i}: {pairs.queries[i][:120]!r}")
        for j, r, sc in zip(table.indices[i], table.ranks[i], table.scores[i]):
            if j >= 0:
                print(f"  rank {r:>3}  score {sc:8.4f}  {_text_of(pairs.candidates[j])[:100]!r}")
    return 0
