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

The walk skips hidden folders, ``__pycache__``, ``*.dist-info``/``*.egg-info`` and any
``site-packages``/``dist-packages`` folder below a root (mine one by passing it as a root).
Files that cannot be decoded or parsed are counted in ``MineStats.files_failed``.

Partitions are drawn per repo (or per file), never per function, so no repo (file) is in two
partitions: the keys are ordered by a hash of (seed, key), and each in turn goes to the partition
furthest below its target number of functions. Ordering by hash makes the draw random but
reproducible; filling by function count keeps the fractions close even when a few keys are large
(a key bigger than what a partition lacks lands in the partition that lacks the most).
"""

from __future__ import annotations

import ast
import inspect
import io
import os
import re
import tokenize
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mmssl.data.code_search import MAX_FIRST_ERRORS, DataError
from mmssl.data.sources import SourceFile, assign_partitions, find_python_files, is_test_file

PARTITIONS: tuple[str, ...] = ("train", "valid", "test")
DROP_REASONS: tuple[str, ...] = (
    "test",
    "dunder",
    "no_docstring",
    "short_docstring",
    "short_code",
    "bad_code",
    "duplicate",
)
_SKIPPED_TOKENS = frozenset(
    {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
)
_WORD_RE = re.compile(r"\w+|[^\w\s]")
_PARAGRAPH_RE = re.compile(r"\n\s*\n")
# Line ends as ``ast`` counts them: \r\n, \r or \n (not the form feed and others str.splitlines takes).
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")

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


# ---------------------------------------------------------------------------------------- parsing


def docstring_tokens(text: str) -> list[str]:
    """Words and punctuation marks, as CodeSearchNet splits docstrings: ``\\w+|[^\\w\\s]``."""
    return _WORD_RE.findall(text)


def first_paragraph(docstring: str) -> str:
    """The cleaned docstring up to its first blank line."""
    return _PARAGRAPH_RE.split(inspect.cleandoc(docstring).strip(), maxsplit=1)[0].strip()


def _char_col(line: str, byte_col: int) -> int:
    """``ast`` column offsets count UTF-8 bytes; turn one into a ``str`` index into ``line``."""
    return byte_col if line.isascii() else len(line.encode("utf-8")[:byte_col].decode("utf-8", "replace"))


def _slice(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    """Text from (line, col) ``start`` to ``end``, 1-based lines, ``str`` columns."""
    (la, ca), (lb, cb) = start, end
    if la == lb:
        return lines[la - 1][ca:cb]
    return lines[la - 1][ca:] + "".join(lines[la : lb - 1]) + lines[lb - 1][:cb]


def _statements(node: ast.AST) -> Iterator[ast.stmt]:
    """The statements directly inside ``node`` (bodies, else/finally, except and case blocks)."""
    for name in ("body", "orelse", "finalbody"):
        yield from getattr(node, name, ())
    for block in getattr(node, "handlers", ()):
        yield from block.body
    for block in getattr(node, "cases", ()):
        yield from block.body


def _functions(
    node: ast.AST, scope: tuple[str, ...] = (), in_test: bool = False
) -> Iterator[tuple[ast.FunctionDef | ast.AsyncFunctionDef, tuple[str, ...], bool]]:
    """Every function below ``node`` in source order (parents before the functions they hold)."""
    for stmt in _statements(node):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield stmt, scope, in_test
            yield from _functions(stmt, (*scope, stmt.name), in_test or stmt.name.startswith("test"))
        elif isinstance(stmt, ast.ClassDef):
            yield from _functions(stmt, (*scope, stmt.name), in_test)
        else:
            yield from _functions(stmt, scope, in_test)


def _code_and_tokens(code: str, indent: str) -> tuple[str, list[str], int]:
    """Dedent ``code`` (its lines after the first carry ``indent``); return it, its tokens, its lines.

    Tokenizing before dedenting is fine (the body is uniformly deeper than the ``def`` line) and
    tells which lines start inside a multi-line string: those are left as they are.
    """
    tokens: list[str] = []
    code_rows: set[int] = set()
    string_rows: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type in _SKIPPED_TOKENS:
            continue
        tokens.append(tok.string)
        (r0, _), (r1, _) = tok.start, tok.end
        code_rows.add(r0)
        if r1 > r0:
            code_rows.update(range(r0 + 1, r1 + 1))
            string_rows.update(range(r0 + 1, r1 + 1))
    if indent:
        lines = code.split("\n")
        for i in range(1, len(lines)):
            line = lines[i]
            if i + 1 in string_rows:
                continue
            if line.startswith(indent):
                lines[i] = line[len(indent) :]
            elif not line.strip():
                lines[i] = line.lstrip(" \t\f")
        code = "\n".join(lines)
    return code, tokens, len(code_rows)


class _FileMiner:
    """Turns the functions of one parsed file into records; drop counts go to ``stats``."""

    def __init__(self, stats: MineStats, seen_code: set[str], min_docstring_tokens: int, min_code_lines: int) -> None:
        self.stats = stats
        self.seen_code = seen_code
        self.min_docstring_tokens = min_docstring_tokens
        self.min_code_lines = min_code_lines

    def drop(self, reason: str) -> None:
        self.stats.dropped[reason] += 1

    def mine(self, file: SourceFile, source: str, tree: ast.Module) -> list[dict[str, Any]]:
        lines = _LINE_RE.findall(source)
        records = []
        for node, scope, in_test in _functions(tree):
            self.stats.functions_seen += 1
            record = self.function_record(file, lines, node, scope, in_test)
            if record is not None:
                records.append(record)
        return records

    def function_record(
        self,
        file: SourceFile,
        lines: list[str],
        node: ast.FunctionDef | ast.AsyncFunctionDef,
        scope: tuple[str, ...],
        in_test: bool,
    ) -> dict[str, Any] | None:
        name = node.name
        if in_test or name.startswith("test"):
            return self.drop("test")
        if len(name) > 4 and name.startswith("__") and name.endswith("__"):
            return self.drop("dunder")
        doc = ast.get_docstring(node, clean=False)
        if doc is None:
            return self.drop("no_docstring")
        summary = first_paragraph(doc)
        summary_tokens = docstring_tokens(summary)
        if len(summary_tokens) < self.min_docstring_tokens:
            return self.drop("short_docstring")
        if len(node.body) == 1:  # nothing but the docstring
            return self.drop("short_code")

        assert node.end_lineno is not None and node.end_col_offset is not None
        first, last = node.lineno, node.end_lineno
        def_col = _char_col(lines[first - 1], node.col_offset)
        start, end = (first, def_col), (last, _char_col(lines[last - 1], node.end_col_offset))
        original = _slice(lines, start, end)

        doc_stmt, after = node.body[0], node.body[1]
        assert doc_stmt.end_lineno is not None and doc_stmt.end_col_offset is not None
        doc_first, doc_last = doc_stmt.lineno, doc_stmt.end_lineno
        doc_col = _char_col(lines[doc_first - 1], doc_stmt.col_offset)
        if after.lineno == doc_last:  # `"""Doc."""; statement` on one line: cut up to the statement
            cut_start, cut_end = (doc_first, doc_col), (doc_last, _char_col(lines[doc_last - 1], after.col_offset))
        else:  # cut the rest of the line; the whole line when the docstring starts it
            own_line = doc_first != first and not lines[doc_first - 1][:doc_col].strip()
            cut_start, cut_end = (doc_first, 0 if own_line else doc_col), (doc_last + 1, 0)
        raw_code = _slice(lines, start, cut_start) + _slice(lines, cut_end, end)
        try:
            code, code_tokens, n_lines = _code_and_tokens(raw_code, lines[first - 1][:def_col])
            ast.parse(code)
        except (tokenize.TokenError, SyntaxError, ValueError, RecursionError):
            return self.drop("bad_code")
        if n_lines < self.min_code_lines:
            return self.drop("short_code")
        key = " ".join(code.split())
        if key in self.seen_code:
            return self.drop("duplicate")
        self.seen_code.add(key)
        return {
            "repo": file.repo,
            "path": file.rel,
            "func_name": ".".join((*scope, name)),
            "original_string": original,
            "language": "python",
            "code": code,
            "code_tokens": code_tokens,
            "docstring": summary,
            "docstring_tokens": summary_tokens,
            "url": f"{file.path.as_uri()}#L{first}-L{last}",
            "partition": "",
        }


class _DecodeError(ValueError):
    def __init__(self, line: int, what: str) -> None:
        super().__init__(what)
        self.line = line


def _read_source(path: Path) -> str:
    """Decode a file as Python does (PEP 263 coding cookie, BOM, UTF-8 by default)."""
    raw = path.read_bytes()
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
        return raw.decode(encoding)
    except SyntaxError as e:  # a bad coding cookie
        raise _DecodeError(1, str(e)) from e
    except (UnicodeDecodeError, LookupError) as e:
        start = getattr(e, "start", 0)
        raise _DecodeError(raw[:start].count(b"\n") + 1, str(e)) from e


def _failure(error: BaseException) -> tuple[str, int, str]:
    """(reason, line, message) for a file that could not be mined."""
    if isinstance(error, OSError):
        return "read", 1, f"cannot read: {error}"
    if isinstance(error, _DecodeError):
        return "decode", error.line, f"cannot decode: {error}"
    line = getattr(error, "lineno", None) or 1
    return "syntax", line, f"cannot parse: {getattr(error, 'msg', None) or error}"


# ----------------------------------------------------------------------------------------- mining


def mine_python(
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    split_by: SplitBy = "repo",
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    min_docstring_tokens: int = 3,
    min_code_lines: int = 3,
    max_files: int | None = None,
    on_error: OnError = "skip",
) -> tuple[list[dict[str, Any]], MineStats]:
    """Mine CodeSearchNet-format records from Python source trees (rules in the module docs).

    ``sources``: root folders (or single ``.py`` files). ``max_files`` caps the number of files
    parsed (the first ones in sorted order). With ``on_error="raise"`` a file that cannot be
    decoded or parsed raises ``DataError`` (``file:line: what``) instead of being counted.
    Returns the records (file order, then source order) and the counts.
    """
    if split_by not in ("repo", "file"):
        raise ValueError(f"split_by must be 'repo' or 'file', got {split_by!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not (0 <= valid_fraction <= 1 and 0 <= test_fraction <= 1 and valid_fraction + test_fraction <= 1):
        raise ValueError(
            f"valid_fraction ({valid_fraction}) and test_fraction ({test_fraction}) must lie in [0, 1] "
            "and sum to at most 1"
        )
    if min_docstring_tokens < 0 or min_code_lines < 0 or (max_files is not None and max_files < 0):
        raise ValueError("min_docstring_tokens, min_code_lines and max_files must not be negative")
    roots = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not roots:
        raise ValueError("no sources given")

    stats = MineStats()
    miner = _FileMiner(stats, set(), min_docstring_tokens, min_code_lines)
    records: list[dict[str, Any]] = []
    for file in find_python_files(roots):
        stats.files_seen += 1
        if is_test_file(file.rel):
            stats.files_test += 1
            continue
        if max_files is not None and stats.files_parsed + sum(stats.files_failed.values()) >= max_files:
            continue
        try:
            source = _read_source(file.path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escape sequences and the like
                tree = ast.parse(source, filename=str(file.path))
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError, MemoryError) as e:
            reason, line, what = _failure(e)
            error = DataError(file.path, line, what)
            if on_error == "raise":
                raise error from e
            stats.files_failed[reason] = stats.files_failed.get(reason, 0) + 1
            if len(stats.first_errors) < MAX_FIRST_ERRORS:
                stats.first_errors.append(str(error))
            continue
        stats.files_parsed += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            records += miner.mine(file, source, tree)

    key_name = "repo" if split_by == "repo" else "path"
    sizes: dict[str, int] = {}
    for record in records:
        sizes[record[key_name]] = sizes.get(record[key_name], 0) + 1
    fractions = {"train": 1 - valid_fraction - test_fraction, "valid": valid_fraction, "test": test_fraction}
    assignment = assign_partitions(sizes, fractions, seed) if sizes else {}
    for record in records:
        record["partition"] = assignment[record[key_name]]
        stats.partitions[record["partition"]] += 1
    for part in assignment.values():
        stats.partition_keys[part] += 1
    stats.functions_kept = len(records)
    return records, stats
