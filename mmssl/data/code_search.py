"""Read, check and write corpora in the CodeSearchNet format.

Format: JSON Lines, one function per line, UTF-8, optionally gzip-compressed (``.jsonl.gz``);
CodeSearchNet ships each language as shards ``{lang}_{partition}_{i}.jsonl.gz``. Parquet files
(``.parquet``, one record per row, a column per field) are read too, never written. Each line is
an object with these fields (``CODE_SEARCH_FIELDS``)::

    repo              str        owner/name of the repository (mined corpora: top-level package)
    path              str        file path inside the repository
    func_name         str        ``function`` or ``Class.method``
    original_string   str        the function's exact source, from ``def`` to its last character
    language          str        ``python``, ``go``, ...
    code              str        the function's source (mined corpora: the docstring removed)
    code_tokens       list[str]  tokens of ``code``
    docstring         str        the natural-language side (mined corpora: the first paragraph)
    docstring_tokens  list[str]  tokens of ``docstring``
    url               str        where the function lives (``https://github.com/...#L1-L9``,
                                 ``file:///...#L1-L9``)
    partition         str        ``train``, ``valid`` or ``test``

Only the ``required`` fields (by default ``docstring`` and ``code``) must be present; a missing
optional field reads as ``""`` or ``[]``, so a minimal ``{"docstring": ..., "code": ...}`` file
works. Fields outside the list are kept as they are; a required one must be a string (a text
field such as ``caption``). ``null`` counts as missing.

Blank lines are ignored, and so is a UTF-8 byte-order mark at the start of a file.
Every problem in a file is a ``DataError`` whose message names the place: ``"{path}:{line}: {what}"``
(lines count from 1 and include blank lines; in a parquet file the line is the row, from 1). With
``on_error="skip"`` the bad line is skipped and counted by reason in ``CorpusStats.skipped``
(reasons: ``encoding``, ``json``, ``not_object``, ``missing_field``, ``wrong_type``,
``truncated``); a truncated or corrupt gzip stream, or a parquet file that cannot be read, ends
that file and is counted as ``truncated``. A parquet value that JSON has no type for (a timestamp,
a decimal, bytes) is kept in an extra field as its ``str``.

Nothing here imports ``datasets`` until ``CodeSearchCorpus.to_hf_dataset`` is called; loading
with ``datasets.load_dataset`` (local files or the hub) is in ``mmssl.data.hub``.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from mmssl.io import atomic_file

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

CODE_SEARCH_FIELDS: tuple[str, ...] = (
    "repo",
    "path",
    "func_name",
    "original_string",
    "language",
    "code",
    "code_tokens",
    "docstring",
    "docstring_tokens",
    "url",
    "partition",
)
_LIST_FIELDS = frozenset({"code_tokens", "docstring_tokens"})
SHARD_SUFFIXES: tuple[str, ...] = (".jsonl", ".jsonl.gz")  # what is written
READ_SUFFIXES: tuple[str, ...] = (*SHARD_SUFFIXES, ".parquet")  # what is read
MAX_FIRST_ERRORS = 5

PathLike = str | os.PathLike[str]
OnError = Literal["raise", "skip"]


class DataError(ValueError):
    """A problem at one place of a data file; ``str(e)`` is ``"{path}:{line}: {what}"``."""

    def __init__(self, path: PathLike, line: int, what: str) -> None:
        self.path = os.fspath(path)
        self.line = line
        self.what = what
        super().__init__(f"{self.path}:{line}: {what}")

    def __reduce__(self) -> tuple[type[DataError], tuple[str, int, str]]:
        return DataError, (self.path, self.line, self.what)


class _BadRecord(ValueError):
    """A record that breaks the format; ``reason`` is the key it is counted under."""

    def __init__(self, reason: str, what: str) -> None:
        super().__init__(what)
        self.reason = reason
        self.what = what


@dataclass
class CorpusStats:
    """What reading a corpus saw.

    ``n_read`` counts non-blank lines, ``n_kept`` the records returned, ``n_filtered`` the valid
    records left out by the partition filter, ``skipped`` the bad lines by reason (only with
    ``on_error="skip"``), ``first_errors`` the first few ``"file:line: what"`` messages.
    """

    n_read: int = 0
    n_kept: int = 0
    n_filtered: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)

    def add_skip(self, error: DataError, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.first_errors) < MAX_FIRST_ERRORS:
            self.first_errors.append(str(error))


@dataclass
class CodeSearchCorpus:
    """Records in the CodeSearchNet format (every field of ``CODE_SEARCH_FIELDS`` present)."""

    records: list[dict[str, Any]]
    stats: CorpusStats = field(default_factory=CorpusStats)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def docstrings(self) -> list[str]:
        return [r["docstring"] for r in self.records]

    def codes(self) -> list[str]:
        return [r["code"] for r in self.records]

    def to_hf_dataset(self) -> datasets.Dataset:
        """The records as a ``datasets.Dataset`` (one column per field)."""
        import datasets

        return datasets.Dataset.from_list(self.records)


def _normalize_record(obj: object, required: Iterable[str] = ("docstring", "code")) -> dict[str, Any]:
    """Check one record and return it with every format field present (defaults ``""`` / ``[]``).

    Raises ``_BadRecord`` (internal) with a reason; callers turn it into a ``DataError``.
    """
    if not isinstance(obj, dict):
        raise _BadRecord("not_object", f"expected a JSON object, got {type(obj).__name__}")
    missing = [name for name in required if obj.get(name) is None]
    if missing:
        raise _BadRecord("missing_field", f"missing required field(s) {', '.join(map(repr, missing))}")
    for name in required:
        if name not in CODE_SEARCH_FIELDS and not isinstance(obj[name], str):
            raise _BadRecord("wrong_type", f"field {name!r} must be a string, got {type(obj[name]).__name__}")
    record: dict[str, Any] = {}
    for name in CODE_SEARCH_FIELDS:
        value = obj.get(name)
        if value is None:
            record[name] = [] if name in _LIST_FIELDS else ""
        elif name in _LIST_FIELDS:
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise _BadRecord("wrong_type", f"field {name!r} must be a list of strings")
            record[name] = value
        elif isinstance(value, str):
            record[name] = value
        else:
            raise _BadRecord("wrong_type", f"field {name!r} must be a string, got {type(value).__name__}")
    for name, value in obj.items():
        if name not in record:
            record[name] = value
    return record


def files_below(folder: Path, keep: Callable[[str], bool]) -> list[Path]:
    """The files below ``folder`` whose name ``keep`` accepts, hidden files and folders left out,
    sorted by their path relative to ``folder``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath, f) for f in filenames if not f.startswith(".") and keep(f)]
    return sorted(found, key=lambda f: f.relative_to(folder).as_posix())


def shard_files(sources: PathLike | Iterable[PathLike]) -> list[Path]:
    """The shard files named by ``sources``: files as given, directories expanded.

    A directory contributes every ``*.jsonl`` / ``*.jsonl.gz`` / ``*.parquet`` below it (hidden
    files and folders left out), sorted by relative path. Raises ``FileNotFoundError`` for a missing
    path and ``ValueError`` for a file of another kind or a directory without shards.
    """
    paths = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not paths:
        raise ValueError("no sources given")
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = files_below(p, lambda name: name.endswith(READ_SUFFIXES))
            if not found:
                raise ValueError(f"{p}: no *.jsonl, *.jsonl.gz or *.parquet files in this directory")
            files += found
        elif p.is_file():
            if not p.name.endswith(READ_SUFFIXES):
                raise ValueError(f"{p}: expected a .jsonl, .jsonl.gz or .parquet file or a directory")
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return files


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


_JSON_TYPES = (str, int, float, bool, list, dict, type(None))


def _bad_line(error: DataError, reason: str, stats: CorpusStats, on_error: OnError) -> None:
    """Raise ``error``, or with ``on_error="skip"`` count it under ``reason``."""
    if on_error == "raise":
        raise error
    stats.add_skip(error, reason)


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a parquet file as dicts, a record batch at a time (never the whole file)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        for batch in f.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                yield {k: v if isinstance(v, _JSON_TYPES) else str(v) for k, v in row.items()}


def _iter_parquet(
    path: Path, stats: CorpusStats, on_error: OnError, required: tuple[str, ...]
) -> Iterator[dict[str, Any]]:
    """Stream the valid records of one parquet file; a row's number is its "line"."""
    import pyarrow as pa

    rows, lineno = _parquet_rows(path), 0
    while True:
        try:
            obj = next(rows)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as e:
            _bad_line(DataError(path, lineno + 1, f"unreadable parquet after {lineno} row(s): {e}"), "truncated",
                      stats, on_error)  # fmt: skip
            return
        lineno += 1
        stats.n_read += 1
        try:
            yield _normalize_record(obj, required)
        except _BadRecord as e:
            _bad_line(DataError(path, lineno, e.what), e.reason, stats, on_error)


def _iter_records(
    path: Path, stats: CorpusStats, on_error: OnError, required: tuple[str, ...]
) -> Iterator[dict[str, Any]]:
    """Stream the valid records of one file (line by line: a gz file is never held in memory)."""
    if path.name.endswith(".parquet"):
        yield from _iter_parquet(path, stats, on_error, required)
        return
    lineno = 0

    def fail(reason: str, what: str) -> None:
        _bad_line(DataError(path, lineno, what), reason, stats, on_error)

    with _open_binary(path) as f:
        lines = iter(f)
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                lineno += 1
                fail("truncated", f"truncated or corrupt gzip stream after {lineno - 1} line(s): {e}")
                return
            lineno += 1
            if not raw.strip():
                continue
            stats.n_read += 1
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                fail("encoding", f"invalid UTF-8 at byte {e.start}")
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                fail("json", f"malformed JSON: {e}")
                continue
            try:
                yield _normalize_record(obj, required)
            except _BadRecord as e:
                fail(e.reason, e.what)


def read_code_search(
    sources: PathLike | Iterable[PathLike],
    *,
    partition: str | Iterable[str] | None = None,
    on_error: OnError = "raise",
    required: Iterable[str] = ("docstring", "code"),
) -> CodeSearchCorpus:
    """Read CodeSearchNet-format records from files and directories of ``.jsonl[.gz]`` / ``.parquet`` shards.

    ``partition`` keeps only records whose ``partition`` field is that value (or one of those
    values). ``on_error="raise"`` stops at the first bad line with a ``DataError`` naming its file
    and line; ``"skip"`` skips it and counts it in ``corpus.stats``. ``required`` lists the fields
    a record must have. Records come back in file order, files in the order of ``shard_files``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    required = tuple(required)
    wanted = None if partition is None else {partition} if isinstance(partition, str) else set(partition)
    stats = CorpusStats()
    records = []
    for path in shard_files(sources):
        for record in _iter_records(path, stats, on_error, required):
            if wanted is not None and record["partition"] not in wanted:
                stats.n_filtered += 1
                continue
            records.append(record)
    stats.n_kept = len(records)
    if stats.skipped:
        logger.warning(
            "skipped %d bad line(s) %s; first: %s", sum(stats.skipped.values()), stats.skipped, stats.first_errors[0]
        )
    return CodeSearchCorpus(records, stats)


def write_code_search(records: Iterable[Mapping[str, Any]], out_path: PathLike) -> int:
    """Write records as ``.jsonl`` or ``.jsonl.gz`` (by the name), atomically; return the count.

    Each record is checked (``docstring`` and ``code`` required, field types as in the module
    docs) and written with every format field, in ``CODE_SEARCH_FIELDS`` order, extra fields after.
    The data goes to a temporary file next to ``out_path`` that replaces it only once complete, so
    a failure (a bad record, a full disk, an interrupt) leaves any previous file untouched and no
    partial file behind. Gzip output carries no timestamp, so the same records give the same bytes.
    """
    out = Path(out_path)
    if not out.name.endswith(SHARD_SUFFIXES):
        raise ValueError(f"{out}: the output name must end with .jsonl or .jsonl.gz")
    n = 0
    with atomic_file(out, "wb") as raw:
        stream: IO[bytes] = (
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if out.name.endswith(".gz") else raw
        )
        try:
            for n, obj in enumerate(records, start=1):
                try:
                    record = _normalize_record(dict(obj) if isinstance(obj, Mapping) else obj)
                    line = json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
                except _BadRecord as e:
                    raise DataError(out, n, f"record {n}: {e.what}") from None
                except (TypeError, ValueError) as e:  # not JSON-serializable, lone surrogates
                    raise DataError(out, n, f"record {n} cannot be written: {e}") from None
                stream.write(line)
        finally:
            if stream is not raw:
                stream.close()
    return n
