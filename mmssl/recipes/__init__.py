"""Dual-encoder recipes, one per modality pair, and the task they all train.

``base.Recipe``: load pairs, build the model, evaluate, read a collection to index, build the task.
``text_code``, ``image_text``: the built-in recipes; ``registry``: find one by ``--task`` or from a
saved model; ``contrastive.ContrastiveTask``: the InfoNCE task; ``config.TrainConfig``: the
``mmssl train`` options in groups.
"""

from mmssl.recipes.base import Recipe
from mmssl.recipes.registry import get_recipe, names, recipe_for_model, register

__all__ = ["Recipe", "get_recipe", "names", "recipe_for_model", "register"]
