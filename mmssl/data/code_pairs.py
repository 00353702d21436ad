"""Self-supervised pairs that code gives by itself.

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

``as_training_pairs`` gives all pairs of one function one id (so do functions whose name words are
the same), so the InfoNCE loss never counts one view of a function as a negative of another;
``held_out`` is the validation share (one function in N, by a hash of its code).
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from mmssl.bm25 import code_search_tokens
from mmssl.data.pairs import Pairs, normalize_text

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
