"""Command values: every numeric option of every command has a range, and every command refuses a
bad value (out of range, NaN, wrong type, not a choice) in one line naming it, before it writes."""

from __future__ import annotations

import dataclasses
import math

import pytest

from mmssl import cli
from mmssl.checks import RANGES, bad_values, check_value, option_fields, unchecked_options


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_numeric_option_has_a_range_and_its_default_is_in_it(name):
    cls = cli.config_class(name)
    assert unchecked_options(cls) == []
    for f, tp in option_fields(cls):
        if f.default is not dataclasses.MISSING:
            check_value(f.name, f.default, tp)


def _cases():
    seen = set()
    for name in sorted(cli.COMMANDS):
        for option, bad, kind in bad_values(cli.config_class(name)):
            if kind == "range" and (name, option, bad) not in seen:
                seen.add((name, option, bad))
                yield pytest.param(name, option, bad, id=f"{name}--{option}={bad}")


@pytest.mark.parametrize("name,option,bad", list(_cases()))
def test_a_bad_value_is_one_line_naming_the_option_before_anything_is_written(
    name, option, bad, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    flag = "--" + option.replace("_", "-")
    argv = [*name.split(), *cli.placeholder_argv(name), flag, bad]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mmssl {name}: error: {flag} ") and len(err.splitlines()) == 1, err
    assert "must be" in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_config_file_value_is_checked_as_a_flag_is(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('batch_size = 1.5\nout = "r"\n')
    assert cli.main(["train", "--config", str(cfg)]) == 2
    assert "--batch-size 1.5: must be a whole number" in capsys.readouterr().err
    cfg.write_text('[engine]\nprecision = "fp8"\n')
    assert cli.main(["train", "--config", str(cfg)]) == 2
    assert "--precision 'fp8': choose one of fp32, bf16, fp16" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.toml"]


@pytest.mark.parametrize(
    "value,tp,message",
    [
        (True, int, "must be a number"),
        ("3", int, "must be a number"),
        (2.5, int, "must be a whole number"),
        (math.inf, float, "must be a finite number"),
        (-math.inf, float | None, "must be a finite number"),
    ],
)
def test_check_value_refuses_wrong_types(value, tp, message):
    with pytest.raises(ValueError, match=message):
        check_value("max_minutes", value, tp)


def test_ranges_read_as_written():
    assert str(RANGES["batch_size"]) == ">= 1"
    assert str(RANGES["beta2"]) == ">= 0 and < 1"
    assert RANGES["temperature"].holds(1e-9) and not RANGES["temperature"].holds(0.0)
    check_value("dropout", None, float | None)  # None where the type allows it


@pytest.mark.parametrize("argv,message", [
    (["train", "--batch-size", "2.5"], "mmssl train: error: --batch-size: invalid int value: '2.5'"),
    (["train", "--lr", "many"], "mmssl train: error: --lr: invalid float value: 'many'"),
    (["index", "search", "--index", "x"], "mmssl index search: error: the following arguments are required: --query"),
])  # fmt: skip
def test_a_value_argparse_cannot_read_is_one_line_too(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_config_file_that_does_not_parse_is_named(tmp_path, capsys):
    for name, text in (("run.toml", "lr = [1,\n"), ("run.json", "{"), ("run.yaml", "a: [")):
        (tmp_path / name).write_text(text)
        assert cli.main(["train", "--config", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mmssl train: error: --config {tmp_path / name}: ") and err.count("\n") == 1, err
