"""One Python file mined: its functions that pass the rules of ``mmssl.data.mine`` as records.

``mine_file(file, (min_docstring_tokens, min_code_lines))`` reads and parses one file and returns
its records (every rule but ``duplicate``, which depends on the files before it and is applied by
the caller in file order) with its counts, or ``(reason, line, what)`` when the file cannot be read,
decoded or parsed. It is a plain function of its arguments, so worker processes can run it.

With ``unlabeled=True`` it also returns the file's code for pretraining (``FileResult.unlabeled``):
every function with at least ``min_code_lines`` lines of code, docstring or not (``kind:
"function"``, the code without its docstring, the whole docstring beside it), and the module body
(``kind: "module"``: the file without its functions).
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import tokenize
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmssl.data.python_rows import Rows, char_col, file_rows, function_lines, holds_code
from mmssl.data.sources import SourceFile

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


def docstring_tokens(text: str) -> list[str]:
    """Words and punctuation marks, as CodeSearchNet splits docstrings: ``\\w+|[^\\w\\s]``."""
    return _WORD_RE.findall(text)


def first_paragraph(docstring: str) -> str:
    """The cleaned docstring up to its first blank line."""
    return _PARAGRAPH_RE.split(inspect.cleandoc(docstring).strip(), maxsplit=1)[0].strip()


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


def _original(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The function's exact source, from ``def`` to its last character."""
    assert node.end_lineno is not None and node.end_col_offset is not None
    start = (node.lineno, char_col(lines[node.lineno - 1], node.col_offset))
    return _slice(lines, start, (node.end_lineno, char_col(lines[node.end_lineno - 1], node.end_col_offset)))


def _parsed(code: str) -> bool:
    """Whether ``code`` parses (a cut function must: the pairs' code is checked)."""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        return False
    return True


def _without_docstring(
    lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef, has_docstring: bool, parse: bool = True
) -> tuple[str, str, list[str], int] | None:
    """(original source from ``def``, the code without its docstring statement and dedented, its
    tokens, its lines of code), or None when that code does not tokenize (or, with ``parse``, parse)."""
    assert node.end_lineno is not None and node.end_col_offset is not None
    first, last = node.lineno, node.end_lineno
    def_col = char_col(lines[first - 1], node.col_offset)
    start, end = (first, def_col), (last, char_col(lines[last - 1], node.end_col_offset))
    original = raw_code = _original(lines, node)
    if has_docstring:
        doc_stmt, after = node.body[0], node.body[1]
        assert doc_stmt.end_lineno is not None and doc_stmt.end_col_offset is not None
        doc_first, doc_last = doc_stmt.lineno, doc_stmt.end_lineno
        doc_col = char_col(lines[doc_first - 1], doc_stmt.col_offset)
        if after.lineno == doc_last:  # `"""Doc."""; statement` on one line: cut up to the statement
            cut_start, cut_end = (doc_first, doc_col), (doc_last, char_col(lines[doc_last - 1], after.col_offset))
        else:  # cut the rest of the line; the whole line when the docstring starts it
            own_line = doc_first != first and not lines[doc_first - 1][:doc_col].strip()
            cut_start, cut_end = (doc_first, 0 if own_line else doc_col), (doc_last + 1, 0)
        raw_code = _slice(lines, start, cut_start) + _slice(lines, cut_end, end)
    try:
        code, code_tokens, n_lines = _code_and_tokens(raw_code, lines[first - 1][:def_col])
    except (tokenize.TokenError, SyntaxError, ValueError, RecursionError):
        return None
    if parse and not _parsed(code):
        return None
    return original, code, code_tokens, n_lines


@dataclass
class FileResult:
    """One parsed file's records (before the duplicate rule) and its counts."""

    records: list[dict[str, Any]]
    functions_seen: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    unlabeled: list[dict[str, Any]] = field(default_factory=list)  # only when asked for


class _FileMiner:
    """Turns the functions of one parsed file into records; counts go to ``result``."""

    def __init__(self, min_docstring_tokens: int, min_code_lines: int) -> None:
        self.result = FileResult([])
        self.min_docstring_tokens = min_docstring_tokens
        self.min_code_lines = min_code_lines

    def drop(self, reason: str) -> None:
        self.result.dropped[reason] += 1

    def mine(self, file: SourceFile, source: str, tree: ast.Module, unlabeled: bool = False) -> None:
        """The file's records that pass every rule but ``duplicate`` (decided in file order by the
        caller) into ``result.records``; with ``unlabeled``, its code for pretraining into
        ``result.unlabeled``."""
        lines = _LINE_RE.findall(source)
        rows = file_rows(source, lines) if unlabeled else None
        functions: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
        for node, scope, in_test in _functions(tree):
            self.result.functions_seen += 1
            record = self.function_record(file, lines, node, scope, in_test, rows)
            if record is not None:
                self.result.records.append(record)
            if unlabeled:
                functions.append(node)
                if (code := self.unlabeled_function(file, lines, node, scope, record, rows)) is not None:
                    self.result.unlabeled.append(code)
        if unlabeled and (body := self.module_body(file, lines, tree, functions)) is not None:
            self.result.unlabeled.append(body)

    def unlabeled_function(
        self,
        file: SourceFile,
        lines: list[str],
        node: ast.FunctionDef | ast.AsyncFunctionDef,
        scope: tuple[str, ...],
        labeled: dict[str, Any] | None,
        rows: Rows | None,
    ) -> dict[str, Any] | None:
        """Any function, docstring or not (only ``min_code_lines`` applies): its code without the
        docstring (``labeled``'s when the function is also a pair), the whole cleaned docstring
        beside it ("" when there is none)."""
        doc = ast.get_docstring(node, clean=False)
        if labeled is not None:
            code = labeled["code"]
        else:
            if doc is not None and len(node.body) == 1:
                return None
            fast = function_lines(lines, node, doc is not None, rows) if rows is not None else None
            if fast is None:  # not parsed again: pretraining text need not compile (the pairs' is checked)
                cut = _without_docstring(lines, node, has_docstring=doc is not None, parse=False)
                fast = None if cut is None else (cut[1], cut[3])
            if fast is None or fast[1] < self.min_code_lines:
                return None
            code = fast[0]
        return {
            "repo": file.repo,
            "path": file.rel,
            "kind": "function",
            "func_name": ".".join((*scope, node.name)),
            "code": code,
            "docstring": inspect.cleandoc(doc) if doc else "",
            "url": f"{file.path.as_uri()}#L{node.lineno}-L{node.end_lineno}",
            "partition": "",
        }

    def module_body(
        self, file: SourceFile, lines: list[str], tree: ast.Module, functions: list[ast.AST]
    ) -> dict[str, Any] | None:
        """The module without its ``functions`` (decorators included): imports, constants, class
        headers and attributes, the ``__main__`` block; None below ``min_code_lines``."""
        cut: set[int] = set()
        for node in functions:
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            cut.update(range(start, (node.end_lineno or node.lineno) + 1))
        kept = [line.rstrip("\r\n") for i, line in enumerate(lines, 1) if i not in cut]
        code = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n")
        n_lines = sum(map(holds_code, kept))
        if n_lines < self.min_code_lines:
            return None
        module = file.rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        return {
            "repo": file.repo,
            "path": file.rel,
            "kind": "module",
            "func_name": module,
            "code": code,
            "docstring": inspect.cleandoc(ast.get_docstring(tree, clean=False) or ""),
            "url": file.path.as_uri(),
            "partition": "",
        }

    def function_record(
        self,
        file: SourceFile,
        lines: list[str],
        node: ast.FunctionDef | ast.AsyncFunctionDef,
        scope: tuple[str, ...],
        in_test: bool,
        rows: Rows | None = None,
    ) -> dict[str, Any] | None:
        """The function's record, or None (counted) where a rule drops it. With the file's ``rows``
        (the unlabeled pass, whose labeled records only draw the partitions and hold out their code)
        the code is cut by the row scan where it is sure and parsed, not tokenized: the same code and
        the same rules, without ``code_tokens`` (left empty)."""
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

        fast = function_lines(lines, node, True, rows) if rows is not None else None
        if fast is not None:
            cut = (_original(lines, node), fast[0], [], fast[1]) if _parsed(fast[0]) else None
        else:
            cut = _without_docstring(lines, node, has_docstring=True)
        if cut is None:
            return self.drop("bad_code")
        original, code, code_tokens, n_lines = cut
        if n_lines < self.min_code_lines:
            return self.drop("short_code")
        first, last = node.lineno, node.end_lineno
        record = {
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
        if file.origin:
            record["origin"] = file.origin
        source_url = file.source_url(first, last)
        if source_url:
            record["source_url"] = source_url
        return record


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


def mine_file(file: SourceFile, rules: tuple[int, int], unlabeled: bool = False) -> FileResult | tuple[str, int, str]:
    """One file's result (with ``unlabeled``: its code for pretraining too), or (reason, line, what)
    when it cannot be read or parsed."""
    try:
        source = _read_source(file.path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like
            tree = ast.parse(source, filename=str(file.path))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError, MemoryError) as e:
        return _failure(e)
    miner = _FileMiner(*rules)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        miner.mine(file, source, tree, unlabeled)
    return miner.result
