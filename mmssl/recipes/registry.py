"""The recipes by name: ``get_recipe("text-code")``, ``recipe_for_model(model)`` (from a saved
model's modalities) and ``register(recipe)`` for new ones. The built-in recipes load on first use;
``get_recipe("package.module:NAME")`` imports a user's module and registers its recipe ``NAME``
(so ``mmssl train --task mypkg.recipes:SIGLIP`` needs no change to mmssl)."""

from __future__ import annotations

import importlib

from mmssl.recipes.base import Recipe

BUILTIN = {
    "text-code": "mmssl.recipes.text_code",
    "image-text": "mmssl.recipes.image_text",
    "code-ssl": "mmssl.recipes.code_pairs",  # self-supervised pairs of unlabeled code
}
_RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Make ``recipe`` available as ``mmssl train --task NAME`` (and to eval, mining, indexing)."""
    _load_builtins()
    if recipe.name in _RECIPES and _RECIPES[recipe.name] is not recipe:
        raise ValueError(f"a recipe named {recipe.name!r} is already registered")
    _RECIPES[recipe.name] = recipe
    return recipe


def _load_builtins() -> None:
    for name, module in BUILTIN.items():
        if name not in _RECIPES:
            _RECIPES[name] = importlib.import_module(module).RECIPE


def get_recipe(name: str) -> Recipe:
    _load_builtins()
    if name not in _RECIPES and ":" in name:
        module, _, attr = name.partition(":")
        try:
            recipe = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"--task {name!r}: cannot load {attr} from module {module} ({e})") from None
        if not isinstance(recipe, Recipe):
            raise ValueError(f"--task {name!r}: {attr} is a {type(recipe).__name__}, not a mmssl Recipe")
        return register(recipe) if recipe.name not in _RECIPES else _RECIPES[recipe.name]
    if name not in _RECIPES:
        raise ValueError(f"--task {name!r}: no such recipe (known: {', '.join(_RECIPES)})")
    return _RECIPES[name]


def recipe_for_model(model) -> Recipe:
    """The first registered recipe of a dual encoder's modalities (the built-in one for its pair)."""
    _load_builtins()
    modalities = tuple(model.config.modalities)
    for recipe in _RECIPES.values():
        if recipe.modalities == modalities:
            return recipe
    raise ValueError(f"no recipe for a model of modalities {modalities}")
