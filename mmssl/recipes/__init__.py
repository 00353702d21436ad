"""Dual-encoder recipes, one per modality pair, and the task they all train.

``base.Recipe``: load pairs, build the model, evaluate, read a collection to index, build the task.
``text_code``, ``image_text``, ``code_pairs`` (self-supervised pairs of unlabeled code): the built-in
recipes; ``registry``: find one by ``--task`` or from a saved model; ``contrastive.ContrastiveTask``:
the InfoNCE task; ``config.TrainConfig``: the ``mmssl train`` options in groups. The names below
load on first use (``mmssl.recipes.config`` stays light: reading ``mmssl train``'s options imports
no model code).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "IndexItems": "mmssl.recipes.base",
    "Recipe": "mmssl.recipes.base",
    "get_recipe": "mmssl.recipes.registry",
    "recipe_for_model": "mmssl.recipes.registry",
    "register": "mmssl.recipes.registry",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmssl.recipes' has no attribute {name!r}")
