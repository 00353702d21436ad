"""CodeSearchNet data layer: reading and validating shards, atomic writes, the Python miner, the command."""

from __future__ import annotations

import ast
import gzip
import json
import os
import pickle
import random
import re
import sysconfig
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from mmssl.data import code_search as cs
from mmssl.data.code_search import (
    CODE_SEARCH_FIELDS,
    DataError,
    load_code_search_dataset,
    read_code_search,
    write_code_search,
)
from mmssl.data.commands import MineCodeConfig
from mmssl.data.commands import mine_code as main
from mmssl.data.mine import mine_python
from mmssl.data.sources import assign_partitions


def _rec(i: int, partition: str = "train", **extra) -> dict:
    return {
        "repo": f"org/repo{i % 3}",
        "path": f"src/m{i}.py",
        "func_name": f"f{i}",
        "original_string": f"def f{i}():\n    return {i}",
        "language": "python",
        "code": f"def f{i}():\n    return {i}",
        "code_tokens": ["def", f"f{i}", "(", ")", ":", "return", str(i)],
        "docstring": f"Return the number {i}.",
        "docstring_tokens": ["Return", "the", "number", str(i), "."],
        "url": f"https://example.org/m{i}.py#L1-L2",
        "partition": partition,
        **extra,
    }


def _write_lines(path: Path, lines: list[bytes]) -> Path:
    data = b"".join(lines)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _jsonl(records: list[dict]) -> list[bytes]:
    return [json.dumps(r).encode() + b"\n" for r in records]


# ------------------------------------------------------------------------------------------ reading


def test_read_files_directories_and_gz_shards_in_sorted_order(tmp_path):
    root = tmp_path / "corpus"
    (root / "b").mkdir(parents=True)
    (root / ".hidden").mkdir()
    _write_lines(root / "b" / "shard_0.jsonl.gz", _jsonl([_rec(2, "valid"), _rec(3, "test")]))
    _write_lines(root / "a_0.jsonl", [*_jsonl([_rec(0), _rec(1)]), b"\n", b"   \n"])
    _write_lines(root / ".hidden" / "x.jsonl", _jsonl([_rec(99)]))
    (root / "notes.txt").write_text("not a shard")

    corpus = read_code_search(root)
    assert [r["func_name"] for r in corpus] == ["f0", "f1", "f2", "f3"]
    assert corpus.records[0] == _rec(0)
    assert (corpus.stats.n_read, corpus.stats.n_kept, corpus.stats.skipped) == (4, 4, {})
    assert (
        len(corpus) == 4 and corpus.docstrings()[2] == "Return the number 2." and corpus.codes()[1] == _rec(1)["code"]
    )

    both = read_code_search([root / "b" / "shard_0.jsonl.gz", str(root / "a_0.jsonl")])
    assert [r["func_name"] for r in both] == ["f2", "f3", "f0", "f1"]


def test_partition_filter(tmp_path):
    path = _write_lines(tmp_path / "c.jsonl", _jsonl([_rec(0), _rec(1, "valid"), _rec(2, "test"), _rec(3)]))
    train = read_code_search(path, partition="train")
    assert [r["func_name"] for r in train] == ["f0", "f3"]
    assert (train.stats.n_read, train.stats.n_kept, train.stats.n_filtered) == (4, 2, 2)
    assert [r["func_name"] for r in read_code_search(path, partition={"valid", "test"})] == ["f1", "f2"]


def test_a_byte_order_mark_on_the_first_line_is_accepted(tmp_path):
    path = _write_lines(tmp_path / "bom.jsonl", [b"\xef\xbb\xbf", *_jsonl([_rec(0)])])
    assert read_code_search(path).records == [_rec(0)]


def test_minimal_records_get_defaults_and_extra_fields_are_kept(tmp_path):
    path = _write_lines(tmp_path / "m.jsonl", [b'{"docstring": "Sort a list.", "code": "sorted(x)", "sha": "abc"}\n'])
    (record,) = read_code_search(path).records
    assert set(CODE_SEARCH_FIELDS) < set(record) and record["sha"] == "abc"
    assert record["code_tokens"] == [] and record["repo"] == "" and record["partition"] == ""
    assert read_code_search(path, partition="train").records == []


BAD_LINES = {
    "json": b'{"docstring": "d", "code": \n',
    "not_object": b'["docstring", "code"]\n',
    "missing_field": b'{"docstring": "Sort a list."}\n',
    "wrong_type": b'{"docstring": 3, "code": "x"}\n',
    "wrong_type_tokens": b'{"docstring": "d", "code": "x", "code_tokens": ["a", 1]}\n',
    "encoding": b'{"docstring": "caf\xe9", "code": "x"}\n',
}


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_each_bad_line_names_file_and_line_or_is_skipped_and_counted(tmp_path, kind, suffix):
    good = _jsonl([_rec(0)])
    path = _write_lines(tmp_path / f"bad{suffix}", [*good, b"\n", BAD_LINES[kind], *_jsonl([_rec(1)])])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:3: ") as e:
        read_code_search(path)
    assert (e.value.path, e.value.line) == (str(path), 3)

    corpus = read_code_search(path, on_error="skip")
    reason = kind.removesuffix("_tokens")
    assert [r["func_name"] for r in corpus] == ["f0", "f1"]
    assert corpus.stats.skipped == {reason: 1} and corpus.stats.n_read == 3 and corpus.stats.n_kept == 2
    assert corpus.stats.first_errors == [str(e.value)]


def test_required_fields_are_configurable(tmp_path):
    path = _write_lines(tmp_path / "c.jsonl", [b'{"docstring": "Sort a list.", "code": "x"}\n'])
    with pytest.raises(DataError, match=r":1: missing required field\(s\) 'url'"):
        read_code_search(path, required=("docstring", "code", "url"))


def test_truncated_gzip_names_file_and_line_reached(tmp_path):
    records = [_rec(i) for i in range(400)]
    full = gzip.compress(b"".join(_jsonl(records)))
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=r"truncated or corrupt gzip") as e:
        read_code_search(path)
    assert e.value.path == str(path) and 1 < e.value.line < 400

    corpus = read_code_search(path, on_error="skip")
    assert len(corpus) == e.value.line - 1 and corpus.records == records[: len(corpus)]
    assert corpus.stats.skipped == {"truncated": 1}

    path.write_bytes(full[:-4])  # only the trailer is missing: every line is there, the file is not
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:401: truncated"):
        read_code_search(path)


def test_not_gzip_data_in_a_gz_file(tmp_path):
    path = _write_lines(tmp_path / "plain.jsonl", _jsonl([_rec(0)])).rename(tmp_path / "plain.jsonl.gz")
    with pytest.raises(DataError, match=r"plain\.jsonl\.gz:1: truncated or corrupt gzip"):
        read_code_search(path)


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        read_code_search(tmp_path / "missing.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no \*\.jsonl"):
        read_code_search(tmp_path / "empty")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"x\.csv: expected a \.jsonl"):
        read_code_search(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="on_error"):
        read_code_search(tmp_path, on_error="ignore")  # type: ignore[arg-type]


def test_data_error_is_a_value_error_and_pickles():
    e = DataError("a/b.jsonl", 7, "malformed JSON")
    assert isinstance(e, ValueError) and str(e) == "a/b.jsonl:7: malformed JSON"
    back = pickle.loads(pickle.dumps(e))
    assert (str(back), back.path, back.line, back.what) == (str(e), e.path, e.line, e.what)


# ------------------------------------------------------------------------------------------ writing


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_write_then_read_round_trips(tmp_path, name):
    records = [_rec(i, ["train", "valid", "test"][i % 3]) for i in range(7)]
    records[3]["docstring"] = "Unicode: café ∑ 😀"
    out = tmp_path / "sub" / name
    assert write_code_search(records, out) == 7
    assert read_code_search(out).records == records
    first = out.read_bytes()
    write_code_search(records, out)
    assert out.read_bytes() == first  # same records, same bytes (no timestamp in the gzip header)
    assert list(out.parent.iterdir()) == [out]


def test_write_fills_defaults_in_field_order(tmp_path):
    out = tmp_path / "o.jsonl"
    write_code_search([{"code": "x = 1", "docstring": "Set x.", "extra": 1}], out)
    assert list(json.loads(out.read_text())) == [*CODE_SEARCH_FIELDS, "extra"]


def test_failed_write_leaves_old_file_intact_and_no_temp_file(tmp_path, monkeypatch):
    out = tmp_path / "corpus.jsonl.gz"
    write_code_search([_rec(0)], out)
    before = out.read_bytes()

    def failing():
        yield from (_rec(i) for i in range(100))
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_code_search(failing(), out)
    assert out.read_bytes() == before and os.listdir(tmp_path) == [out.name]

    with pytest.raises(DataError, match=rf"^{re.escape(str(out))}:3: record 3: field 'docstring' must be a string"):
        write_code_search([_rec(0), _rec(1), {"docstring": 5, "code": "x"}], out)
    with pytest.raises(DataError, match=r":2: record 2 cannot be written"):
        write_code_search([_rec(0), {"docstring": "d", "code": "x", "extra": object()}], out)
    assert out.read_bytes() == before and os.listdir(tmp_path) == [out.name]

    def no_replace(src, dst):
        raise OSError("replace failed")

    monkeypatch.setattr(cs.os, "replace", no_replace)
    with pytest.raises(OSError, match="replace failed"):
        write_code_search([_rec(5)], out)
    assert out.read_bytes() == before and os.listdir(tmp_path) == [out.name]


def test_write_rejects_other_names(tmp_path):
    with pytest.raises(ValueError, match=r"\.jsonl or \.jsonl\.gz"):
        write_code_search([_rec(0)], tmp_path / "out.json")


# ------------------------------------------------------------------------------------ datasets bridge


def test_hf_dataset_from_corpus_and_local_files(tmp_path):
    records = [_rec(i, ["train", "valid"][i % 2]) for i in range(6)]
    write_code_search(records, tmp_path / "d" / "c.jsonl.gz")
    ds = read_code_search(tmp_path / "d").to_hf_dataset()
    assert len(ds) == 6 and ds[4]["code_tokens"] == records[4]["code_tokens"]

    valid = load_code_search_dataset(tmp_path / "d", split="valid", cache_dir=str(tmp_path / "cache"))
    assert valid["func_name"] == ["f1", "f3", "f5"]
    every = load_code_search_dataset(
        [str(tmp_path / "d" / "c.jsonl.gz")], split=None, cache_dir=str(tmp_path / "cache")
    )
    assert every.to_list() == records


# ------------------------------------------------------------------------------------------- mining

CORE = '''\
"""A module docstring is not a function."""
import functools


def kept_function(a, b):
    """Add two numbers together.

    Longer description that is not part of the summary.
    """
    total = a + b
    total += 0
    return total


def short_doc(a):
    """Adds one"""
    x = a + 1
    y = x
    return y


def two_lines(a):
    """Return the argument unchanged."""
    return a


def no_doc(a):
    b = a
    c = b
    return c


def test_something():
    """Check that something works as expected."""

    def helper():
        """A helper nested in a test function."""
        z = 1
        return z

    assert helper() == 1


@functools.lru_cache(maxsize=None)
def decorated(n):
    """Compute the n-th square, cached."""
    # a comment line does not count as code
    sq = n * n
    return sq


async def fetch(url):
    """Fetch a url asynchronously and return the body."""
    body = await get(url)
    body = body.strip()
    return body


def outer(xs):
    """Apply the inner helper to every item."""

    def inner(x):
        """Double one item of the list."""
        y = x * 2
        return y

    return [inner(x) for x in xs]


def semi(a):
    """Return a plus two, computed inline."""; b = a + 1
    c = b + 1
    return c


class Widget:
    """A widget."""

    def __init__(self, size):
        """Create a widget of the given size."""
        self.size = size
        self.area = size * size

    def __repr__(self):
        """Show the widget with its size."""
        text = f"Widget({self.size})"
        return text

    def resize(self, factor):
        """Scale the widget by a factor.

        More text.
        """
        self.size *= factor
        self.area = self.size * self.size
        return self

    def abstract(self):
        """Subclasses must implement this method."""

    class Inner:
        def deep(self):
            """A method of a nested class."""
            value = 1
            return value


class Text:
    def block(self):
        """Return a block of text that keeps its layout."""
        text = """first
        second
third"""
        return text
'''

DUP = '''\
def kept_function(a,  b):
    """The same code as in core.py, spaced differently."""
    total  =  a + b
    total += 0

    return total
'''

OTHER = '''\
def other_function(x):
    """Return x squared plus one."""
    y = x * x
    return y + 1
'''

SINGLE = '''\
def single_function(x):
    """Return the string form of x."""
    s = str(x)
    return s
'''

LATIN = '''\
# -*- coding: latin-1 -*-
def menu(items):
    """Return the café menu, one item per line."""; sep = "\\n"
    text = sep.join(items)
    return text + "é"
'''

INIT = '''\
def init_helper(x):
    """Return x as an integer, base ten."""
    n = int(x, 10)
    return n
'''

# Files the walk must leave out, or skip as tests, each with a function that would be kept.
_TRAP = OTHER.replace("other_function", "trap")
SKIPPED = ["pkg/tests/test_core.py", "pkg/tests/helpers.py", "conftest.py", "foo_test.py"]
PRUNED = [".hidden/x.py", "pkg/__pycache__/cached.py", "site-packages/dep/mod.py", "dep-1.0.dist-info/x.py"]

EXPECTED_KEPT = {
    ("pkg/__init__.py", "init_helper"),
    ("pkg/core.py", "kept_function"),
    ("pkg/core.py", "decorated"),
    ("pkg/core.py", "fetch"),
    ("pkg/core.py", "outer"),
    ("pkg/core.py", "outer.inner"),
    ("pkg/core.py", "semi"),
    ("pkg/core.py", "Widget.resize"),
    ("pkg/core.py", "Widget.Inner.deep"),
    ("pkg/core.py", "Text.block"),
    ("other/mod.py", "other_function"),
    ("single.py", "single_function"),
    ("latin.py", "menu"),
}


@pytest.fixture
def src(tmp_path) -> Path:
    root = tmp_path / "src"
    files = {"pkg/__init__.py": INIT, "pkg/core.py": CORE, "pkg/dup.py": DUP, "other/mod.py": OTHER}
    files |= {"single.py": SINGLE, "broken.py": "def broken(:\n    pass\n"}
    files |= dict.fromkeys(SKIPPED + PRUNED, _TRAP)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    (root / "latin.py").write_bytes(LATIN.encode("latin-1"))
    return root


def test_mining_applies_every_rule(src):
    records, stats = mine_python(src)
    assert {(r["path"], r["func_name"]) for r in records} == EXPECTED_KEPT
    assert len(records) == len(EXPECTED_KEPT)
    assert stats.dropped == {
        "test": 2,  # test_something and the helper nested in it
        "dunder": 2,  # __init__, __repr__
        "no_docstring": 1,
        "short_docstring": 1,
        "short_code": 2,  # two_lines, and abstract (nothing but a docstring)
        "bad_code": 0,
        "duplicate": 1,  # kept_function again in pkg/dup.py
    }
    assert stats.functions_seen == stats.functions_kept + sum(stats.dropped.values()) == 22
    assert (stats.files_seen, stats.files_test, stats.files_parsed, stats.files_failed) == (11, 4, 6, {"syntax": 1})
    assert "broken.py:1: cannot parse" in stats.first_errors[0]
    assert sum(stats.partitions.values()) == len(records)

    by_name = {r["func_name"]: r for r in records}
    assert {r["repo"] for r in records} == {"pkg", "other", "single", "latin"}
    kept = by_name["kept_function"]
    assert kept["path"] == "pkg/core.py" and kept["language"] == "python"
    assert kept["docstring"] == "Add two numbers together."
    assert kept["docstring_tokens"] == ["Add", "two", "numbers", "together", "."]
    assert kept["code"] == "def kept_function(a, b):\n    total = a + b\n    total += 0\n    return total"
    assert kept["code_tokens"][:6] == ["def", "kept_function", "(", "a", ",", "b"]
    assert kept["code_tokens"][-2:] == ["return", "total"]
    first = CORE.splitlines().index("def kept_function(a, b):") + 1
    assert kept["url"] == f"{(src / 'pkg' / 'core.py').as_uri()}#L{first}-L{first + 7}"
    assert kept["original_string"] == "\n".join(CORE.splitlines()[first - 1 : first + 7])

    assert by_name["decorated"]["original_string"].startswith("def decorated(n):")  # CSN: starts at def
    assert "# a comment line" in by_name["decorated"]["code"]
    assert by_name["fetch"]["original_string"].startswith("async def fetch(url):")
    assert by_name["semi"]["code"] == "def semi(a):\n    b = a + 1\n    c = b + 1\n    return c"
    assert by_name["Widget.resize"]["docstring"] == "Scale the widget by a factor."
    assert by_name["Widget.resize"]["original_string"].startswith("def resize(self, factor):\n        ")
    assert by_name["Widget.Inner.deep"]["code"] == "def deep(self):\n    value = 1\n    return value"
    # Lines inside a multi-line string keep their bytes; the others lose the method's indentation.
    assert (
        by_name["Text.block"]["code"]
        == 'def block(self):\n    text = """first\n        second\nthird"""\n    return text'
    )
    assert (
        by_name["menu"]["code"]
        == 'def menu(items):\n    sep = "\\n"\n    text = sep.join(items)\n    return text + "é"'
    )
    assert by_name["menu"]["docstring"] == "Return the café menu, one item per line."
    assert '"""Double one item of the list."""' in by_name["outer"]["code"]  # the nested one's stays

    for r in records:
        tree = ast.parse(r["code"])  # code parses on its own, at column 0
        (fn,) = tree.body
        assert ast.get_docstring(fn) is None
        summary = r["docstring"].splitlines()[0]
        assert summary in r["original_string"] and summary not in r["code"]
        assert r["code_tokens"] and r["partition"] in ("train", "valid", "test")


def test_parse_errors_can_raise(src):
    with pytest.raises(DataError, match=r"broken\.py:1: cannot parse"):
        mine_python(src, on_error="raise")


def test_undecodable_files_are_counted_and_crlf_files_are_mined(tmp_path):
    (tmp_path / "bad_bytes.py").write_bytes(b"x = 1\n# caf\xe9\n")
    (tmp_path / "crlf.py").write_bytes(OTHER.replace("\n", "\r\n").encode())
    records, stats = mine_python([tmp_path / "bad_bytes.py", tmp_path / "crlf.py"])
    assert stats.files_failed == {"decode": 1} and "bad_bytes.py:2: cannot decode" in stats.first_errors[0]
    (record,) = records
    assert record["code"] == "def other_function(x):\r\n    y = x * x\r\n    return y + 1"
    (tmp_path / "lf").mkdir()
    (tmp_path / "lf" / "lf.py").write_text(OTHER)
    (lf,) = mine_python(tmp_path / "lf")[0]
    assert lf["code"] == record["code"].replace("\r\n", "\n") and lf["code_tokens"] == record["code_tokens"]
    with pytest.raises(DataError, match=r"bad_bytes\.py:2: cannot decode"):
        mine_python(tmp_path / "bad_bytes.py", on_error="raise")


def test_a_root_that_is_a_package_is_one_repo_and_max_files(src):
    records, stats = mine_python([src / "pkg", src / "single.py"])
    assert {r["repo"] for r in records} == {"pkg", "single"}
    assert {r["path"] for r in records} == {"pkg/__init__.py", "pkg/core.py", "single.py"}
    records, stats = mine_python(src, max_files=2)
    assert stats.files_parsed + sum(stats.files_failed.values()) == 2


@pytest.mark.parametrize("split_by", ["repo", "file"])
def test_split_never_puts_one_repo_or_file_in_two_partitions(src, split_by):
    key = "repo" if split_by == "repo" else "path"
    used = set()
    for seed in range(6):
        records, stats = mine_python(src, split_by=split_by, valid_fraction=0.3, test_fraction=0.3, seed=seed)
        partitions = defaultdict(set)
        for r in records:
            partitions[r[key]].add(r["partition"])
        assert all(len(p) == 1 for p in partitions.values())
        assert sum(stats.partition_keys.values()) == len(partitions)
        used |= {r["partition"] for r in records}
    assert used == {"train", "valid", "test"}


def test_partition_fractions_hold_with_a_few_huge_keys():
    rng = random.Random(0)
    sizes = {f"repo{i}": rng.randint(1, 40) for i in range(400)}
    sizes |= {"huge0": 900, "huge1": 700, "huge2": 500}
    total = sum(sizes.values())
    fractions = {"train": 0.8, "valid": 0.1, "test": 0.1}
    for seed in range(3):
        parts = assign_partitions(sizes, fractions, seed)
        counts = defaultdict(int)
        for key, part in parts.items():
            counts[part] += sizes[key]
        for part, frac in fractions.items():
            assert abs(counts[part] / total - frac) < 0.02, (seed, dict(counts))
    assert assign_partitions(sizes, fractions, 0) == assign_partitions(dict(reversed(sizes.items())), fractions, 0)
    assert assign_partitions(sizes, fractions, 0) != assign_partitions(sizes, fractions, 1)
    assert set(assign_partitions(sizes, {"train": 0.9, "valid": 0.0, "test": 0.1}).values()) == {"train", "test"}


def test_bad_mining_arguments(src, tmp_path):
    with pytest.raises(ValueError, match="sum to at most 1"):
        mine_python(src, valid_fraction=0.6, test_fraction=0.6)
    with pytest.raises(ValueError, match="split_by"):
        mine_python(src, split_by="function")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        mine_python(tmp_path / "nowhere")


def test_mining_is_deterministic(src):
    assert mine_python(src, seed=3) == mine_python(src, seed=3)


# ------------------------------------------------------------------------------------------ command


def test_command_writes_a_corpus_that_reads_back_identically(src, tmp_path, capsys):
    out = tmp_path / "out" / "corpus.jsonl.gz"
    config = MineCodeConfig(sources=[str(src)], out=str(out), split_by="file", seed=1)
    assert main(config) == 0
    summary = capsys.readouterr().out
    assert f"functions: 22 seen, {len(EXPECTED_KEPT)} kept" in summary and "duplicate 1" in summary
    records, _ = mine_python(src, split_by="file", seed=1)
    assert read_code_search(out).records == records
    first = out.read_bytes()
    with pytest.raises(ValueError, match="already holds a corpus; pass --overwrite to replace it"):
        main(config)  # never replaced silently
    assert main(replace(config, overwrite=True)) == 0 and out.read_bytes() == first


def test_command_refuses_to_write_an_empty_corpus(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "c.jsonl"
    with pytest.raises(ValueError, match="no functions kept"):
        main(MineCodeConfig(sources=[str(tmp_path / "empty")], out=str(out)))
    assert not out.exists()
    with pytest.raises(ValueError, match=r"\.jsonl or \.jsonl\.gz"):
        main(MineCodeConfig(sources=[str(tmp_path)], out=str(tmp_path / "c.csv")))


# ------------------------------------------------------------------------------ the real standard library


def test_mining_json_and_email_from_the_standard_library():
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    started = time.perf_counter()
    records, stats = mine_python([stdlib / "json", stdlib / "email"], split_by="file")
    assert time.perf_counter() - started < 10
    assert stats.files_failed == {} and stats.files_parsed >= 30
    assert {r["repo"] for r in records} == {"json", "email"}
    by_repo = defaultdict(list)
    for r in records:
        by_repo[r["repo"]].append(r)
    assert 5 <= len(by_repo["json"]) <= 40 and 60 <= len(by_repo["email"]) <= 400
    assert ("json/decoder.py", "JSONDecoder.decode") in {(r["path"], r["func_name"]) for r in records}
    assert 0.2 < stats.functions_kept / stats.functions_seen < 0.8
    for r in records:
        ast.parse(r["code"])
        assert len(r["docstring_tokens"]) >= 3 and r["url"].startswith("file://")


def test_a_repo_bigger_than_the_test_share_goes_to_train():
    """One package holding a third of all functions (torch in site-packages) must not land in
    valid or test, whatever its place in the hash order."""
    rng = random.Random(1)
    sizes = {f"repo{i}": rng.randint(1, 40) for i in range(300)}
    sizes["giant"] = sum(sizes.values()) // 2
    total = sum(sizes.values())
    fractions = {"train": 0.8, "valid": 0.1, "test": 0.1}
    for seed in range(6):
        parts = assign_partitions(sizes, fractions, seed)
        assert parts["giant"] == "train"
        for part in ("valid", "test"):
            share = sum(sizes[k] for k, p in parts.items() if p == part) / total
            assert abs(share - 0.1) < 0.02, (seed, part, share)
