"""Code for pretraining (``mmssl.data.mine.mine_unlabeled``, ``mmssl data mine-code --unlabeled``):
what it keeps, that no valid or test code reaches it, and its untokenized fast path against the
tokenizing reference."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

import pytest

from mmssl.data import python_file as pf
from mmssl.data import python_rows as pr
from mmssl.data.code_search import read_code_search
from mmssl.data.commands import MineCodeConfig, mine_code
from mmssl.data.mine import code_key, mine_python, mine_unlabeled
from mmssl.pretrain import read_documents

MODULE = '''\
"""Tools for {name}."""
import os

LIMIT = 3
NAMES = ("a", "b")


@decorator
def documented_{name}(path, mode):
    """Open the {name} file at a path for reading.

    More words here.
    """
    handle = open(path, mode)
    data = handle.read()
    return data


def undocumented_{name}(items):
    total = 0
    for item in items:
        total += item
    return total


def tiny_{name}(x):
    return x


class Holder{name}:
    size = 4

    def grow_{name}(self, n):
        # a comment line
        self.size += n
        self.size *= 2
        return self.size


if __name__ == "__main__":
    print(LIMIT)
'''


def write_repos(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text("")
        (root / name / "core.py").write_text(MODULE.format(name=name))
    return root


def test_every_function_with_or_without_a_docstring_and_the_module_body(tmp_path):
    records, stats = mine_unlabeled(write_repos(tmp_path, ["alpha"]), test_fraction=0, valid_fraction=0, workers=1)
    by_name = {r["func_name"]: r for r in records}
    assert set(by_name) == {
        "documented_alpha",
        "undocumented_alpha",
        "Holderalpha.grow_alpha",
        "alpha.core",  # the module body
    }  # tiny_alpha has two lines of code, under min_code_lines; __init__.py is empty
    doc = by_name["documented_alpha"]
    assert doc["kind"] == "function" and doc["partition"] == "train"
    assert doc["docstring"] == "Open the alpha file at a path for reading.\n\nMore words here."
    assert doc["code"].startswith("def documented_alpha(path, mode):\n    handle") and '"""' not in doc["code"]
    assert by_name["undocumented_alpha"]["docstring"] == ""
    assert by_name["Holderalpha.grow_alpha"]["code"].startswith("def grow_alpha(self, n):\n    # a comment")
    body = by_name["alpha.core"]
    assert body["kind"] == "module" and body["docstring"] == "Tools for alpha."
    assert "import os" in body["code"] and "class Holderalpha:\n    size = 4" in body["code"]
    assert "def " not in body["code"] and "@decorator" not in body["code"] and "print(LIMIT)" in body["code"]
    assert stats.kept == {"function": 3, "module": 1}
    assert stats.labeled.functions_kept == 1  # only documented_alpha is a (docstring, code) pair
    # with the same rules every labeled pair's code is in the unlabeled corpus too
    labeled, _ = mine_python(tmp_path, test_fraction=0, valid_fraction=0, workers=1)
    assert {code_key(r["code"]) for r in labeled} <= {code_key(r["code"]) for r in records}


def test_no_valid_or_test_code_reaches_pretraining(tmp_path):
    names = [f"pkg{i}" for i in range(12)]
    root = write_repos(tmp_path / "src", names)
    # a copy of one function in another repo: whichever partition gets the original, the copy in a
    # train repo must not smuggle held-out code into pretraining
    copy = "def shared_helper(values):\n    '''Sum the values given here.'''\n    out = 0\n    out += sum(values)\n    return out\n"  # noqa: E501
    for name in names:
        (root / name / "extra.py").write_text(copy)
    options = dict(valid_fraction=0.25, test_fraction=0.25, seed=3, workers=1)
    labeled, _ = mine_python(root, **options)
    held = {r["repo"] for r in labeled if r["partition"] != "train"}
    held_code = {code_key(r["code"]) for r in labeled if r["partition"] != "train"}
    assert held and held != set(names)
    records, stats = mine_unlabeled(root, **options)
    assert records and all(r["partition"] == "train" for r in records)
    assert not {r["repo"] for r in records} & held
    assert not {code_key(r["code"]) for r in records} & held_code
    assert stats.held_out_repo > 0
    # the copied helper went to whichever partition its first repo drew; the copies elsewhere are
    # labeled duplicates, so whether it is held out decides whether train repos keep it
    helper = code_key(copy.replace("'''Sum the values given here.'''\n    ", ""))
    assert (helper in held_code) == (helper not in {code_key(r["code"]) for r in records})


def test_the_command_writes_train_code_that_pretraining_reads(tmp_path, capsys):
    root = write_repos(tmp_path / "src", [f"pkg{i}" for i in range(6)])
    out = tmp_path / "code.jsonl.gz"
    config = MineCodeConfig(sources=[str(root)], out=str(out), unlabeled=True, valid_fraction=0.2, test_fraction=0.2)
    assert mine_code(config) == 0
    printed = capsys.readouterr().out
    assert "module bodies" in printed and "in valid/test repos" in printed
    records = read_code_search(out).records
    assert records and {r["partition"] for r in records} == {"train"}
    docs = read_documents([out], ["docstring", "code"])
    assert len(docs) == len(records) + sum(bool(r["docstring"]) for r in records)
    with pytest.raises(ValueError, match="--overwrite"):
        mine_code(config)  # never over an existing corpus without --overwrite


# ---- the untokenized fast path against the tokenizing reference --------------------------------

EDGE_CASES = '''\
def joined(a):
    x = ("first"
         "second")
    return x + a + "tail"


def backslash(a):
    s = "one \\
two"
    return s, a, a


def same_line(a): """Doc on the def line."""; return a


def tabs(a):
\tif a:
\t\treturn 1
\treturn 2


def raw_quotes(a):
    """Doc with \\""" inside."""
    pattern = r\'\'\'
  left as it is
\'\'\'
    return pattern, a


class K:
    def method(self):
        text = f"""
    {self!r}
        """
        # comment
        return text
'''


def _every_function(source: str):
    tree = ast.parse(source)
    lines = pf._LINE_RE.findall(source)
    rows = pr.file_rows(source, lines)
    for node, _, _ in pf._functions(tree):
        doc = ast.get_docstring(node, clean=False)
        if doc is not None and len(node.body) == 1:
            continue
        yield (
            node,
            pr.function_lines(lines, node, doc is not None, rows),
            pf._without_docstring(lines, node, doc is not None, parse=False),
        )


def test_the_fast_path_equals_the_tokenizing_reference_or_steps_aside():
    fast_used = 0
    for node, fast, slow in _every_function(EDGE_CASES):
        if fast is not None:  # where the fast path answers, it answers what tokenizing does
            fast_used += 1
            assert fast == (slow[1], slow[3]), node.name
    # the backslash-continued string and the docstring that shares its line go the slow way
    names = {node.name for node, fast, _ in _every_function(EDGE_CASES) if fast is None}
    assert names == {"backslash", "same_line"}
    assert fast_used == 4


@pytest.mark.parametrize("module", ["json", "email", "argparse.py", "inspect.py", "dataclasses.py"])
def test_the_fast_path_on_the_standard_library(module):
    root = Path(sysconfig.get_paths()["stdlib"]) / module
    files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
    checked = 0
    for path in files:
        for node, fast, slow in _every_function(path.read_text(encoding="utf-8")):
            if fast is not None and slow is not None:
                checked += 1
                assert fast == (slow[1], slow[3]), f"{path}:{node.lineno}"
    assert checked > 20


def test_the_unlabeled_pass_draws_the_labeled_miners_partitions_from_the_same_records():
    """Its labeled records are cut by the row scan (not tokenized): the same functions, code and
    partitions as ``mine_python``'s on real code, so the held-out repos are the same."""
    from mmssl.data.mine import MineOptions, _mine

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    roots = [stdlib / "json", stdlib / "email", stdlib / "argparse.py", stdlib / "inspect.py", stdlib / "asyncio"]
    options = dict(split_by="file", valid_fraction=0.2, test_fraction=0.2, seed=1, workers=1)
    labeled, _ = mine_python(roots, **options)
    drawn, code, stats, _ = _mine(roots, MineOptions(**options), unlabeled=True)
    keys = ("repo", "path", "func_name", "original_string", "code", "docstring", "partition", "url")
    assert [[r[k] for k in keys] for r in drawn] == [[r[k] for k in keys] for r in labeled]
    assert len(labeled) > 300 and code
    assert sum(not r["code_tokens"] for r in drawn) > len(drawn) // 2  # most were not tokenized
