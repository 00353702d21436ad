"""The one check of command values: every number a command takes has a declared range, and every
command refuses a value out of it (or of the wrong type, or NaN, or not one of a ``Literal``'s
choices) in one line naming the option, before it loads or writes anything.

An option name means the same thing in every command (``--batch-size`` is a count of examples
everywhere), so the ranges are one table, ``RANGES``, keyed by name; ``check_config(config)``
applies it to a command's config (flat, or a ``GroupedConfig``'s groups). A numeric option without
an entry is a programming error the test suite catches (``unchecked_options``); ``bad_values``
is what the tests and the fault-injection benchmark probe every command with.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ``low <= x`` (``low < x`` when ``open_low``), likewise ``high``."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def holds(self, x: float) -> bool:
        if self.low is not None and (x <= self.low if self.open_low else x < self.low):
            return False
        return not (self.high is not None and (x >= self.high if self.open_high else x > self.high))

    def __str__(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.open_high else '<='} {self.high:g}")
        return " and ".join(parts) or "any number"


def at_least(n: float) -> Range:
    return Range(low=n)


def above(n: float) -> Range:
    return Range(low=n, open_low=True)


def fraction(open_low: bool = False, open_high: bool = False) -> Range:
    """A value in [0, 1] (ends excluded as asked)."""
    return Range(0.0, 1.0, open_low, open_high)


COUNT = at_least(1)  # sizes, steps, lengths: a positive whole number
NON_NEGATIVE = at_least(0)
POSITIVE = above(0)

RANGES: dict[str, Range] = {
    # optimization and the loop
    "batch_size": COUNT,
    "grad_accum": COUNT,
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "beta1": fraction(open_high=True),
    "beta2": fraction(open_high=True),
    "eps": POSITIVE,
    "warmup_steps": NON_NEGATIVE,
    "max_steps": NON_NEGATIVE,  # 0: the initialization is saved untrained
    "max_minutes": POSITIVE,
    "image_minutes": POSITIVE,
    "first_caption_p": fraction(),
    "clip_grad": NON_NEGATIVE,  # 0: off
    "seed": NON_NEGATIVE,
    "eval_every": NON_NEGATIVE,  # 0: only at the end
    "save_every": NON_NEGATIVE,  # 0: only at the end
    "log_every": COUNT,
    "workers": at_least(-1),  # -1: chosen for the device
    # data
    "cache_images_mb": NON_NEGATIVE,
    "max_text_length": COUNT,
    "max_code_length": COUNT,
    "context_length": COUNT,
    "image_size": at_least(8),
    "size": at_least(8),
    "count": COUNT,
    "max_files": COUNT,
    "processes": at_least(1),
    "max_items": COUNT,
    "dim": COUNT,
    "max_pairs": COUNT,
    "eval_max_pairs": COUNT,
    "eval_max_images": COUNT,
    "eval_max_blocks": COUNT,
    "valid_fraction": fraction(open_high=True),
    "test_fraction": fraction(open_high=True),
    "min_docstring_tokens": NON_NEGATIVE,
    "min_code_lines": NON_NEGATIVE,
    "block_size": at_least(8),
    "vocab_size": at_least(16),
    "chunk_size": at_least(2),
    # model and loss
    "embed_dim": COUNT,
    "dropout": fraction(open_high=True),
    "temperature": POSITIVE,
    "embedding_lr_scale": NON_NEGATIVE,  # 0: frozen token embeddings
    "label_smoothing": fraction(open_high=True),
    "grad_cache": NON_NEGATIVE,  # 0: off
    "hard_negatives": NON_NEGATIVE,
    "refresh_negatives": NON_NEGATIVE,  # 0: off
    "cluster_batches": NON_NEGATIVE,  # 0: random batches
    # pretraining
    "mlm_probability": fraction(open_low=True, open_high=True),
    "valid_every": at_least(2),
    "mask_replace_prob": fraction(),
    "random_replace_prob": fraction(),
    "crop_min": fraction(open_low=True),
    "hidden_dim": COUNT,
    "proj_dim": COUNT,
    "ema": fraction(),
    "barlow_lambda": NON_NEGATIVE,
    "jigsaw_grid": at_least(2),
    "jigsaw_permutations": COUNT,
    "clusters": at_least(2),
    "pca_dim": COUNT,
    # negatives
    "top_k": COUNT,
    "keep": COUNT,
    "show": NON_NEGATIVE,
    "max_score_ratio": POSITIVE,
    "margin": NON_NEGATIVE,
    "near_duplicate": fraction(open_low=True),
    # indexes, search and the app
    "shard_size": COUNT,
    "target_recall": fraction(open_low=True),
    "k": COUNT,
    "lexical_weight": NON_NEGATIVE,
    "port": Range(1, 65535),
    "steps": COUNT,
    "image_steps": COUNT,
    "minutes": POSITIVE,
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def field_kinds(tp: Any) -> tuple[set[type], bool, tuple | None]:
    """(number types, None allowed, Literal choices) of a field's annotation."""
    numbers: set[type] = set()
    optional, choices = False, None
    union = isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union
    for arg in typing.get_args(tp) if union else (tp,):
        if arg is type(None):
            optional = True
        elif arg in (int, float):
            numbers.add(arg)
        elif typing.get_origin(arg) is Literal:
            choices = typing.get_args(arg)
    return numbers, optional, choices


def _parts(config: Any) -> list[Any]:
    from mmssl.options import GroupedConfig

    if isinstance(config, GroupedConfig):
        return [getattr(config, name) for name in config.group_types()]
    return [config]


def check_value(name: str, value: Any, tp: Any) -> None:
    """``ValueError`` naming ``--NAME`` if ``value`` is not a valid value of a field typed ``tp``."""
    numbers, optional, choices = field_kinds(tp)
    if value is None and optional:
        return
    if choices is not None:
        if value not in choices:
            raise ValueError(f"{_flag(name)} {value!r}: choose one of {', '.join(map(str, choices))}")
        return
    if not numbers:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{_flag(name)} {value!r}: must be a number")
    if float not in numbers and not isinstance(value, int):
        if not (isinstance(value, float) and value.is_integer()):
            raise ValueError(f"{_flag(name)} {value!r}: must be a whole number")
    if not math.isfinite(value):
        raise ValueError(f"{_flag(name)} {value!r}: must be a finite number")
    bounds = RANGES.get(name)
    if bounds is not None and not bounds.holds(value):
        raise ValueError(f"{_flag(name)} {value!r}: must be {bounds}")


def check_config(config: Any) -> None:
    """Check every field of a command's config (see the module docstring); the first bad one raises."""
    for part in _parts(config):
        hints = typing.get_type_hints(type(part))
        for f in dataclasses.fields(part):
            check_value(f.name, getattr(part, f.name), hints[f.name])


def option_fields(config_cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """(field, type) of every option of a command's config class (each group's, for a ``GroupedConfig``)."""
    from mmssl.options import GroupedConfig

    parts = list(config_cls.group_types().values()) if issubclass(config_cls, GroupedConfig) else [config_cls]
    return [(f, typing.get_type_hints(p)[f.name]) for p in parts for f in dataclasses.fields(p)]


def unchecked_options(config_cls: type) -> list[str]:
    """The numeric options of a config class that have no entry in ``RANGES``."""
    return [f.name for f, tp in option_fields(config_cls) if field_kinds(tp)[0] and f.name not in RANGES]


def bad_values(config_cls: type) -> Iterator[tuple[str, str, str]]:
    """(option, a bad value as typed, "range" or "type") for every numeric option of a config class:
    just past each end of its range, NaN and infinity for a float, a fraction and a word for a whole
    number (what the tests and ``benchmarks/faults.py`` try on every command)."""
    for f, tp in option_fields(config_cls):
        numbers = field_kinds(tp)[0]
        if not numbers or f.name not in RANGES:
            continue
        bounds, is_int = RANGES[f.name], float not in numbers
        step = 1 if is_int else 0.5
        if bounds.low is not None:
            yield f.name, str(type(step)(bounds.low if bounds.open_low else bounds.low - step)), "range"
        if bounds.high is not None:
            yield f.name, str(type(step)(bounds.high if bounds.open_high else bounds.high + step)), "range"
        if is_int:
            yield f.name, "2.5", "type"
        else:
            yield f.name, "nan", "range"
            yield f.name, "inf", "range"
        yield f.name, "many", "type"
