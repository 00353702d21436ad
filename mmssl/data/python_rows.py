"""Rows of a Python file by one regex scan, no tokenizing: which rows hold code and which lie inside
a multi-line string, and from them a function's code without its docstring (the miner's fast path).

``function_lines`` answers what ``mmssl.data.python_file``'s tokenizing cut answers (tested equal
on edge cases and on the standard library), or None where the scan is not sure (a backslash-continued
string, a docstring sharing a line with code): the caller then tokenizes. Pure Python's
``tokenize`` would be most of the miner's time.
"""

from __future__ import annotations

import ast
import bisect
import itertools
import re

Rows = tuple[set[int], set[int], set[int]]


def char_col(line: str, byte_col: int) -> int:
    """``ast`` column offsets count UTF-8 bytes; turn one into a ``str`` index into ``line``."""
    return byte_col if line.isascii() else len(line.encode("utf-8")[:byte_col].decode("utf-8", "replace"))


# Comments and string literals, in source order: enough of Python's lexer to tell which rows lie
# inside a multi-line string (``tokenize`` is pure Python and would be most of the miner's time).
_LEX_RE = re.compile(
    r"""\#[^\r\n]*
    | [rRbBuUfF]{0,2}(?: '{3}(?:\\.|[^\\])*?'{3} | "{3}(?:\\.|[^\\])*?"{3} )
    | [rRbBuUfF]{0,2}(?: '(?:\\.|[^\\'\r\n])*' | "(?:\\.|[^\\"\r\n])*" )""",
    re.X | re.S,
)
_TRIPLE_QUOTES = ('"' * 3, "'" * 3)


def holds_code(line: str) -> bool:
    """Not blank and not only a comment (outside multi-line strings, which ``file_rows`` adds)."""
    return bool(line.strip()) and not line.lstrip().startswith("#")


def file_rows(source: str, lines: list[str]) -> Rows:
    """(rows holding code, rows inside a multi-line string after its first, rows the lexer is not
    sure of) of a whole file: the rows ``python_file._code_and_tokens`` finds by tokenizing, by one regex."""
    starts = list(itertools.accumulate((len(line) for line in lines), initial=0))
    string_rows: set[int] = set()
    doubtful: set[int] = set()
    for match in _LEX_RE.finditer(source):
        text = match.group()
        if text[0] == "#" or ("\n" not in text and "\r" not in text):
            continue
        first = bisect.bisect_right(starts, match.start())
        last = bisect.bisect_right(starts, match.end() - 1)
        if text.lstrip("rRbBuUfF")[:3] in _TRIPLE_QUOTES:
            string_rows.update(range(first + 1, last + 1))
        else:  # a one-quote string continued by a backslash
            doubtful.update(range(first, last + 1))
    code_rows = {i for i, line in enumerate(lines, 1) if holds_code(line)}
    return code_rows | string_rows, string_rows, doubtful


def function_lines(
    lines: list[str],
    node: ast.FunctionDef | ast.AsyncFunctionDef,
    has_docstring: bool,
    rows: Rows,
) -> tuple[str, int] | None:
    """The code of ``python_file._without_docstring`` and its lines of code from the file's ``file_rows``, with no
    tokenizing; None where the rows are in doubt or the docstring shares a line with code."""
    code_rows, string_rows, doubtful = rows
    first, last = node.lineno, node.end_lineno or node.lineno
    if any(first <= row <= last for row in doubtful):
        return None
    skip: range = range(0)
    if has_docstring:
        doc, after = node.body[0], node.body[1]
        doc_col = char_col(lines[doc.lineno - 1], doc.col_offset)
        if doc.lineno == first or after.lineno == doc.end_lineno or lines[doc.lineno - 1][:doc_col].strip():
            return None
        skip = range(doc.lineno, (doc.end_lineno or doc.lineno) + 1)
    def_col = char_col(lines[first - 1], node.col_offset)
    indent = lines[first - 1][:def_col]
    end_col = char_col(lines[last - 1], node.end_col_offset or 0)
    out = []
    for row in range(first, last + 1):
        if row in skip:
            continue
        line = lines[row - 1]
        if row == last:
            line = line[:end_col]
        if row == first:
            line = line[def_col:]
        elif row not in string_rows and line.startswith(indent):
            line = line[len(indent) :]
        elif row not in string_rows and not line.strip():
            line = line.lstrip(" \t\f")
        out.append(line)
    code = "".join(out)
    n_lines = sum(1 for r in range(first, last + 1) if r in code_rows and r not in skip)
    return code, n_lines
