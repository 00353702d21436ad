"""The Python miner (``mmssl.data.mine``), its partitions and ``mmssl data mine-code``."""

from __future__ import annotations

import ast
import sysconfig
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from mmssl.data.code_search import DataError, read_code_search
from mmssl.data.commands import MineCodeConfig
from mmssl.data.commands import mine_code as main
from mmssl.data.mine import mine_python

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


def test_bad_mining_arguments(src, tmp_path):
    with pytest.raises(ValueError, match="sum to at most 1"):
        mine_python(src, valid_fraction=0.6, test_fraction=0.6)
    with pytest.raises(ValueError, match="split_by"):
        mine_python(src, split_by="function")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        mine_python(tmp_path / "nowhere")


def test_mining_is_deterministic(src):
    assert mine_python(src, seed=3) == mine_python(src, seed=3)


def test_mining_in_worker_processes_gives_the_records_and_counts_of_one_process(src, monkeypatch):
    """Duplicates across files (pkg/dup.py repeats pkg/core.py), a file that does not parse and the
    file order all come out as when one process mines: the duplicate rule runs in file order."""
    from mmssl.data import mine

    alone = mine_python(src, workers=1)
    monkeypatch.setattr(mine, "PARALLEL_FROM", 0)  # the pool even for this small tree
    pooled = mine_python(src, workers=2)
    assert pooled == alone and alone[1].dropped["duplicate"] == 1 and alone[1].files_failed == {"syntax": 1}
    with pytest.raises(DataError, match=r"broken\.py:1: cannot parse"):
        mine_python(src, workers=2, on_error="raise")


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
    records, stats = mine_python([stdlib / "json", stdlib / "email"], split_by="file")
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
