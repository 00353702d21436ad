"""Self-supervised pairs that code gives by itself, and ``mmssl pretrain contrastive`` on them.

A function is its own label: its name says what its body does, its signature what its body takes,
and two halves of it are two views of one thing (innate-relationship prediction and multiview
coding, in the self-supervised literature's terms). ``code_pairs(records, views)`` turns unlabeled
code (``mmssl data mine-code --unlabeled``) into (query, candidate) pairs:

    name        the function's name in words (``get_user_name`` -> "get user name") <-> its code with
                every whole-word use of the name replaced by ``_`` (the ``def`` line and recursive
                calls); names shorter than 3 characters, dunders and a few that say nothing
                (``wrapper``, ``inner``, ...) give no pair
    signature   the ``def`` header (name, arguments, annotations) <-> the body after it
    spans       the first half of the code's lines <-> the second half (functions and module
                bodies of at least 4 lines)

All pairs of one function share an id (so do functions whose name words are the same), so the
InfoNCE loss never counts one view of a function as a negative of another. ``CodePairsRecipe``
(``--task code-ssl``) is the text-code recipe on these pairs: one shared tower trained by the same
engine and InfoNCE loss as ``mmssl train``; one function in ``--valid-every`` (by a hash of its code)
is held out for the validation MRR that keeps the best model. The output is a dual encoder
directory; ``mmssl train --text-init OUT/best`` starts a tower from it like any other init.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from mmssl.bm25 import code_search_tokens
from mmssl.console import get_logger
from mmssl.data.code_search import read_code_search
from mmssl.data.pairs import Pairs, normalize_text
from mmssl.options import option
from mmssl.recipes.config import PairDataConfig, TextCodeConfig, TrainConfig
from mmssl.recipes.text_code import TextCodeRecipe

log = get_logger("pretrain")
VIEWS = ("name", "signature", "spans")
UNINFORMATIVE_NAMES = frozenset({"wrapper", "inner", "helper", "func", "function", "main", "run", "call", "impl"})
MIN_SPAN_LINES = 4


@dataclass(frozen=True)
class CodePair:
    """One self-supervised pair: ``query`` <-> ``candidate``, from record ``source`` by ``view``."""

    query: str
    candidate: str
    view: str
    source: int


def parse_views(views: str) -> tuple[str, ...]:
    chosen = tuple(v.strip() for v in views.split(",") if v.strip())
    unknown = [v for v in chosen if v not in VIEWS]
    if not chosen or unknown:
        raise ValueError(f"--views: comma list of {', '.join(VIEWS)}; got {views!r}")
    return chosen


def name_words(qualified: str) -> str:
    """The words of a function's own name (the last part of ``Class.method``), lowercased."""
    return " ".join(code_search_tokens(qualified.rsplit(".", 1)[-1]))


def _name_pair(record: dict) -> tuple[str, str] | None:
    name = record["func_name"].rsplit(".", 1)[-1]
    words = name_words(name)
    if len(name) < 3 or name.startswith("__") or name.strip("_").lower() in UNINFORMATIVE_NAMES or not words:
        return None
    return words, re.sub(rf"\b{re.escape(name)}\b", "_", record["code"])


def _signature_pair(code: str) -> tuple[str, str] | None:
    try:
        node = ast.parse(code).body[0]
    except (SyntaxError, ValueError, IndexError, RecursionError):
        return None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.body[0].lineno == node.lineno:
        return None
    lines = code.splitlines()
    header, body = "\n".join(lines[: node.body[0].lineno - 1]), "\n".join(lines[node.body[0].lineno - 1 :])
    return (header, body) if body.strip() else None


def _span_pair(code: str) -> tuple[str, str] | None:
    lines = [line for line in code.splitlines() if line.strip()]
    if len(lines) < MIN_SPAN_LINES:
        return None
    half = len(lines) // 2
    return "\n".join(lines[:half]), "\n".join(lines[half:])


def code_pairs(records: Iterable[dict], views: Iterable[str] = VIEWS) -> list[CodePair]:
    """The pairs of ``views`` each record gives (see the module docstring), record by record."""
    views = tuple(views)
    pairs = []
    for i, record in enumerate(records):
        is_function = record.get("kind", "function") == "function"
        for view in views:
            if view == "name" and is_function:
                made = _name_pair(record)
            elif view == "signature" and is_function:
                made = _signature_pair(record["code"])
            elif view == "spans":
                made = _span_pair(record["code"])
            else:
                continue
            if made is not None:
                pairs.append(CodePair(made[0], made[1], view, i))
    return pairs


def held_out(code: str, every: int) -> bool:
    """One record in ``every``, by a hash of its code: the validation share."""
    return int.from_bytes(hashlib.blake2b(code.encode("utf-8", "replace"), digest_size=8).digest(), "big") % every == 0


def as_training_pairs(pairs: list[CodePair], records: list[dict]) -> Pairs:
    """``Pairs`` with one id per function: its views, and functions of the same name words, are
    never each other's negatives."""
    by_name: dict[str, int] = {}
    ids = []
    for pair in pairs:
        record = records[pair.source]
        words = name_words(record["func_name"]) if record.get("kind", "function") == "function" else ""
        ids.append(by_name.setdefault(normalize_text(words), pair.source) if words else pair.source)
    return Pairs([p.query for p in pairs], [p.candidate for p in pairs], torch.tensor(ids, dtype=torch.long))


@dataclass(frozen=True)
class CodePairsConfig:
    """Which self-supervised pairs code gives, and the validation share."""

    GROUP_TITLE: ClassVar[str] = "self-supervised code pairs"
    views: str = option("name,signature,spans", "comma list: name (name words <-> code, name masked), "
                        "signature (def header <-> body), spans (first half <-> second half)")  # fmt: skip
    valid_every: int = option(50, "one function in N (by a hash of its code) held out for validation")


class CodePairsRecipe(TextCodeRecipe):
    """The text-code recipe on self-supervised pairs (``code_pairs``) of unlabeled code."""

    name = "code-ssl"

    def __init__(self, pairs: CodePairsConfig | None = None) -> None:
        pairs = pairs or CodePairsConfig()
        self.views, self.valid_every = parse_views(pairs.views), pairs.valid_every

    def load_pairs(self, source, partition, data: PairDataConfig | None = None, max_pairs=None) -> Pairs:
        """``partition`` "train": the pairs of every function not held out; "valid": of the held-out ones.
        Records of a labeled corpus's valid or test partition are never read."""
        if partition not in ("train", "valid"):
            raise ValueError(f"self-supervised pairs come in partitions train and valid; got {partition!r}")
        corpus = read_code_search(source, required=("code", "func_name"))
        records = [r for r in corpus.records if r.get("partition", "train") in ("", "train")]
        if not records:
            raise ValueError(f"{source}: no train-partition record (mmssl data mine-code --unlabeled makes them)")
        valid = partition == "valid"
        chosen = [r for r in records if held_out(r["code"], self.valid_every) == valid]
        pairs = code_pairs(chosen, self.views)
        counts = {v: sum(p.view == v for p in pairs) for v in self.views}
        log.info("%s: %d %s records -> pairs %s", source, len(chosen), partition, counts)
        return as_training_pairs(pairs, chosen).sample(max_pairs, seed=0)


@dataclass(frozen=True)
class SharedTowerConfig(TextCodeConfig):
    """The text-code recipe's tower options; pretraining trains one shared tower."""

    shared: bool = option(True, "one tower for both sides (pretraining makes one tower: keep it)")


@dataclass(frozen=True)
class ContrastivePretrainConfig(TrainConfig):
    """Pretrain a code tower contrastively on pairs code gives by itself (``--config FILE`` reads
    TOML/YAML/JSON). ``--train`` is unlabeled code (``mmssl data mine-code --unlabeled``)."""

    text_code: SharedTowerConfig = field(default_factory=SharedTowerConfig)
    pairs: CodePairsConfig = field(default_factory=CodePairsConfig)


def main(config: ContrastivePretrainConfig) -> int:
    from mmssl.console import launched_as_rank_zero
    from mmssl.engine import run_training
    from mmssl.models.card import write_model_cards

    if not config.data.train:
        raise ValueError("--train UNLABELED.jsonl.gz is required (mmssl data mine-code --unlabeled makes one)")
    if not config.text_code.shared:
        raise ValueError("--shared false: contrastive pretraining makes one tower for --text-init")
    recipe = CodePairsRecipe(config.pairs)
    run = config.flat()
    summary = run_training(config.engine, lambda device: recipe.build_task(config, device), run_config=run)
    if launched_as_rank_zero():  # one process writes the cards
        write_model_cards(Path(config.engine.out), run, summary, recipe.metric)
    return 0
