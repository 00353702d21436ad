"""The text-code recipe's reading of pairs: records with nothing to match are left out, counted,
and a set with nothing left is refused before training (it would report H_n/n as its MRR)."""

from __future__ import annotations

import json

from mmssl import cli
from mmssl.recipes.text_code import RECIPE


def _write(path, docstrings):
    lines = [
        {"docstring": d, "code": f"def f{i}(x):\n    return x + {i}", "partition": p}
        for i, d in enumerate(docstrings)
        for p in ("train", "valid")
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return str(path)


def test_records_with_an_empty_docstring_are_left_out(tmp_path):
    data = _write(tmp_path / "c.jsonl", ["add one", "", "   ", "add three"])
    pairs = RECIPE.load_pairs(data, "train")
    assert pairs.queries == ["add one", "add three"]


def test_all_empty_docstrings_are_refused_before_training(tmp_path, capsys):
    data = _write(tmp_path / "c.jsonl", ["", " ", "\n"] * 10)
    argv = ["train", "--train", data, "--out", str(tmp_path / "run"), "--preset", "tiny", "--device", "cpu"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{data} (partition 'train'): every record has an empty docstring or code" in err
    assert not (tmp_path / "run").exists()
