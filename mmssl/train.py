"""``mmssl train``: a dual encoder trained by its recipe's ``ContrastiveTask`` on the one engine.

``main(TrainConfig)`` finds the recipe of ``--task`` (``mmssl.recipes``), which builds the task from
the config's groups; ``mmssl.engine.run_training`` runs it (torchrun included).
"""

from __future__ import annotations

from mmssl.engine import run_training
from mmssl.recipes.config import TrainConfig

__all__ = ["TrainConfig", "main"]


def main(config: TrainConfig) -> int:
    from mmssl.recipes import get_recipe

    if not config.data.train:
        raise ValueError("--train is required (see --help for the layouts each --task reads)")
    recipe = get_recipe(config.data.task)
    run_training(config.engine, lambda device: recipe.build_task(config, device))
    return 0
