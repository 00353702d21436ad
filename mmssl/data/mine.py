"""Mine (docstring, function) pairs from Python source trees, CodeSearchNet style.

``mine_python(roots)`` walks every ``.py`` file under each root, parses it with ``ast`` and keeps
each function or method (nested ones too, ``async def`` included) that passes these rules, in
this order (a dropped function is counted under the first rule it fails, ``MineStats.dropped``):

    test             its name starts with ``test``, or it is nested in such a function
                     (files under a ``test``/``tests``/``testing`` folder, ``test_*.py``,
                     ``*_test.py`` and ``conftest.py`` are not even parsed: ``files_test``)
    dunder           ``__init__``, ``__repr__`` and every other ``__x__`` method
    no_docstring     no docstring
    short_docstring  the docstring's first paragraph (after ``inspect.cleandoc``, up to the first
                     blank line) has fewer than ``min_docstring_tokens`` tokens
    short_code       fewer than ``min_code_lines`` lines of code once the docstring is removed
                     (blank and comment-only lines do not count)
    bad_code         the code does not tokenize or parse (a safety net: not seen on the stdlib)
    duplicate        the same ``code``, up to whitespace, as a function kept before it
                     (files in sorted path order, roots in the order given)

Each kept function becomes a record in the format of ``mmssl.data.code_search``:

    func_name        ``function``, ``Class.method``, ``outer.inner`` (enclosing classes and functions)
    original_string  the exact source from ``def`` (or ``async def``) to the function's last character:
                     decorators are not part of it, lines after the first keep their indentation
    code             ``original_string`` without the docstring statement (its whole lines when it
                     stands on its own lines), dedented by the ``def`` line's indentation so it starts
                     at column 0; lines inside multi-line strings are left byte-exact
    code_tokens      the ``tokenize`` tokens of ``code``, without comments and without the NEWLINE,
                     NL, INDENT, DEDENT and ENDMARKER tokens
    docstring        the first paragraph;  ``docstring_tokens``: its words and punctuation
    path             the file's path relative to its root (``json/decoder.py``)
    repo             the top-level package or module under the root: ``json`` for
                     ``json/decoder.py``, ``os`` for ``os.py``; a root that is itself a package
                     (has ``__init__.py``) is one repo, named after the folder, and paths include it
    url              ``file:///abs/path.py#L{first}-L{last}`` (the ``def`` line to the last line)
    language         ``python``;  ``partition``: ``train``, ``valid`` or ``test``
    origin           ``stdlib`` (the running interpreter's standard library) or ``installed`` (a
                     site-packages folder); absent for other roots
    source_url       for the standard library only: the lines in CPython's repository at this
                     Python's tag (``https://github.com/python/cpython/blob/v3.11.7/Lib/json/...``)

The walk skips hidden folders, ``__pycache__``, ``*.dist-info``/``*.egg-info`` and any
``site-packages``/``dist-packages`` folder below a root (mine one by passing it as a root).
Files that cannot be decoded or parsed are counted in ``MineStats.files_failed``.

Partitions are drawn per repo (or per file), never per function, so no repo (file) is in two
partitions: the keys are ordered by a hash of (seed, key), and each in turn goes to the partition
furthest below its target number of functions. Ordering by hash makes the draw random but
reproducible; filling by function count keeps the fractions close even when a few keys are large
(a key bigger than what a partition lacks lands in the partition that lacks the most).

``mine_unlabeled(roots)`` gives pretraining its text from the same trees: every function (with a
docstring or without, which on the installed packages is several times more code) and every
module body, deduplicated, of the train partition only. It draws the partitions exactly as
``mine_python`` with the same arguments does, so no valid or test code reaches pretraining.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Literal

from mmssl.console import progress
from mmssl.data.code_search import MAX_FIRST_ERRORS, DataError
from mmssl.data.python_file import DROP_REASONS, FileResult, mine_file
from mmssl.data.sources import SourceFile, assign_partitions, find_python_files, is_test_file

PARTITIONS: tuple[str, ...] = ("train", "valid", "test")
SplitBy = Literal["repo", "file"]
OnError = Literal["raise", "skip"]


@dataclass
class MineStats:
    """Counts from one ``mine_python`` run.

    ``files_seen``: every ``.py`` file found; ``files_test``: those skipped as test files;
    ``files_parsed`` / ``files_failed`` (by reason: ``read``, ``decode``, ``syntax``) of the rest.
    ``functions_seen`` = ``functions_kept`` + sum of ``dropped``; ``partitions`` counts functions
    per partition and ``partition_keys`` the repos (or files) per partition.
    """

    files_seen: int = 0
    files_test: int = 0
    files_parsed: int = 0
    files_failed: dict[str, int] = field(default_factory=dict)
    functions_seen: int = 0
    functions_kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    partitions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARTITIONS, 0))
    partition_keys: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARTITIONS, 0))
    first_errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PARALLEL_FROM = 64  # files: fewer are mined in this process (a pool costs more than it saves)


def _mine_all(files: list[SourceFile], rules: tuple[int, int], workers: int | None, unlabeled: bool) -> Iterator:
    """``mine_file`` of each file, in order: across ``workers`` processes (default: the CPUs)."""
    workers = workers or os.cpu_count() or 1
    mine = partial(mine_file, rules=rules, unlabeled=unlabeled)
    if workers == 1 or len(files) < PARALLEL_FROM:
        yield from progress(map(mine, files), len(files), "mining files")
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        yield from progress(pool.map(mine, files, chunksize=16), len(files), "mining files")


@dataclass(frozen=True)
class MineOptions:
    """The miner's rules and partition draw (the keyword options of ``mine_python`` and
    ``mine_unlabeled``), checked when made."""

    split_by: SplitBy = "repo"
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    min_docstring_tokens: int = 3
    min_code_lines: int = 3
    max_files: int | None = None
    on_error: OnError = "skip"
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.split_by not in ("repo", "file"):
            raise ValueError(f"split_by must be 'repo' or 'file', got {self.split_by!r}")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        valid, test = self.valid_fraction, self.test_fraction
        if not (0 <= valid <= 1 and 0 <= test <= 1 and valid + test <= 1):
            raise ValueError(
                f"valid_fraction ({valid}) and test_fraction ({test}) must lie in [0, 1] and sum to at most 1"
            )
        if self.min_docstring_tokens < 0 or self.min_code_lines < 0 or (self.max_files or 0) < 0:
            raise ValueError("min_docstring_tokens, min_code_lines and max_files must not be negative")

    @property
    def rules(self) -> tuple[int, int]:
        return self.min_docstring_tokens, self.min_code_lines


def _parsed_files(sources, options: MineOptions, unlabeled: bool, stats: MineStats) -> Iterator[FileResult]:
    """The result of each file that parses, in file order; the rest counted in ``stats``."""
    roots = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not roots:
        raise ValueError("no sources given")
    todo: list[SourceFile] = []
    for file in find_python_files(roots):
        stats.files_seen += 1
        if is_test_file(file.rel):
            stats.files_test += 1
        elif options.max_files is None or len(todo) < options.max_files:
            todo.append(file)
    for file, outcome in zip(todo, _mine_all(todo, options.rules, options.workers, unlabeled)):
        if isinstance(outcome, tuple):  # (reason, line, what): the file could not be read or parsed
            error = DataError(file.path, outcome[1], outcome[2])
            if options.on_error == "raise":
                raise error
            stats.files_failed[outcome[0]] = stats.files_failed.get(outcome[0], 0) + 1
            if len(stats.first_errors) < MAX_FIRST_ERRORS:
                stats.first_errors.append(str(error))
            continue
        stats.files_parsed += 1
        stats.functions_seen += outcome.functions_seen
        for reason, n in outcome.dropped.items():
            stats.dropped[reason] += n
        yield outcome


def code_key(code: str) -> str:
    """What two records must share to be duplicates: their code up to whitespace."""
    return " ".join(code.split())


def _mine(
    sources, options: MineOptions, unlabeled: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], MineStats, dict[str, str]]:
    """(the labeled records with their partitions, the unlabeled code if asked for, the counts,
    the partition of each repo or file)."""
    stats = MineStats()
    records: list[dict[str, Any]] = []
    code: list[dict[str, Any]] = []
    seen_code: set[str] = set()
    for outcome in _parsed_files(sources, options, unlabeled, stats):
        for record in outcome.records:
            key = code_key(record["code"])
            if key in seen_code:
                stats.dropped["duplicate"] += 1
                continue
            seen_code.add(key)
            records.append(record)
        code += outcome.unlabeled
    return records, code, stats, _assign(records, options, stats)


def _assign(records: list[dict[str, Any]], options: MineOptions, stats: MineStats) -> dict[str, str]:
    """Give every record its partition (drawn per repo or file, by function counts); the draw."""
    key_name = "repo" if options.split_by == "repo" else "path"
    sizes: dict[str, int] = {}
    for record in records:
        sizes[record[key_name]] = sizes.get(record[key_name], 0) + 1
    valid, test = options.valid_fraction, options.test_fraction
    fractions = {"train": 1 - valid - test, "valid": valid, "test": test}
    assignment = assign_partitions(sizes, fractions, options.seed) if sizes else {}
    for record in records:
        record["partition"] = assignment[record[key_name]]
        stats.partitions[record["partition"]] += 1
    for part in assignment.values():
        stats.partition_keys[part] += 1
    stats.functions_kept = len(records)
    return assignment


# ----------------------------------------------------------------------------------------- mining


def mine_python(
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], **options: Any
) -> tuple[list[dict[str, Any]], MineStats]:
    """Mine CodeSearchNet-format records from Python source trees (rules in the module docs).

    ``sources``: root folders (or single ``.py`` files). ``options``: the fields of ``MineOptions``.
    ``max_files`` caps the number of files parsed (the first ones in sorted order). With
    ``on_error="raise"`` a file that cannot be decoded or parsed raises ``DataError`` (``file:line:
    what``) instead of being counted. ``workers`` processes parse the files (default: one per CPU; 1:
    in this process); the records and counts do not depend on it: duplicates are dropped here, in
    file order. Returns the records (file order, then source order) and the counts.
    """
    records, _, stats, _ = _mine(sources, MineOptions(**options), unlabeled=False)
    return records, stats


@dataclass
class UnlabeledStats:
    """Counts of one ``mine_unlabeled`` run: the labeled miner's (``labeled``, whose partition draw
    decides what is held out), code kept by kind, and what was left out and why."""

    labeled: MineStats
    kept: dict[str, int] = field(default_factory=lambda: {"function": 0, "module": 0})
    duplicate: int = 0
    held_out_repo: int = 0  # code of a valid or test repo (file)
    held_out_code: int = 0  # code equal to a valid or test function elsewhere

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mine_unlabeled(
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], **options: Any
) -> tuple[list[dict[str, Any]], UnlabeledStats]:
    """Code for pretraining from the same trees: every function (docstring or not) and module body
    of the **train** partition only, deduplicated.

    The partitions are the labeled miner's: ``mine_python`` with the same ``options`` runs in the same
    pass (each file parsed once) and its draw decides; a repo (file) without a labeled function is
    in no held-out partition and is kept. Code equal (up to whitespace) to a valid or test function
    of another repo is left out as well. So nothing a labeled corpus mined with the same options
    scores on reaches pretraining. Records: ``repo``, ``path``, ``kind`` (function/module),
    ``func_name`` (the module's dotted name for a body), ``code``, ``docstring``, ``url``,
    ``partition`` ("train").
    """
    mined = MineOptions(**options)
    labeled, code, labeled_stats, assignment = _mine(sources, mined, unlabeled=True)
    stats = UnlabeledStats(labeled_stats)
    held_out = {code_key(r["code"]) for r in labeled if r["partition"] != "train"}
    key_name = "repo" if mined.split_by == "repo" else "path"
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for record in code:
        key = code_key(record["code"])
        if assignment.get(record[key_name], "train") != "train":
            stats.held_out_repo += 1
        elif key in held_out:
            stats.held_out_code += 1
        elif key in seen:
            stats.duplicate += 1
        else:
            seen.add(key)
            record["partition"] = "train"
            stats.kept[record["kind"]] += 1
            records.append(record)
    return records, stats
