"""Command values: every numeric option of every command has a range, and every command refuses a
bad value (out of range, NaN, wrong type, not a choice) in one line naming it, before it writes."""

from __future__ import annotations

import dataclasses
import importlib
import math
import typing

import pytest

from mmssl import cli
from mmssl.checks import RANGES, Range, _kinds, check_value, unchecked_options
from mmssl.options import GroupedConfig


def _config_cls(name: str) -> type:
    spec = cli.COMMANDS[name]
    return getattr(importlib.import_module(spec.module), spec.config)


def _fields(config_cls: type) -> list[tuple[dataclasses.Field, typing.Any]]:
    parts = list(config_cls.group_types().values()) if issubclass(config_cls, GroupedConfig) else [config_cls]
    return [(f, typing.get_type_hints(p)[f.name]) for p in parts for f in dataclasses.fields(p)]


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_numeric_option_has_a_range_and_its_default_is_in_it(name):
    cls = _config_cls(name)
    assert unchecked_options(cls) == []
    for f, tp in _fields(cls):
        if f.default is not dataclasses.MISSING:
            check_value(f.name, f.default, tp)


def _bad_values(rng: Range, is_int: bool) -> list:
    bad = []
    step = 1 if is_int else 0.5
    if rng.low is not None:
        bad.append(type(step)(rng.low) if rng.open_low else type(step)(rng.low - step))
    if rng.high is not None:
        bad.append(type(step)(rng.high) if rng.open_high else type(step)(rng.high + step))
    if not is_int:
        bad.append(math.nan)
    return bad


def _cases():
    seen = set()
    for name in sorted(cli.COMMANDS):
        for f, tp in _fields(_config_cls(name)):
            numbers = _kinds(tp)[0]
            if not numbers or f.name not in RANGES:
                continue
            for bad in _bad_values(RANGES[f.name], float not in numbers):
                key = (name, f.name, str(bad))
                if key not in seen:
                    seen.add(key)
                    yield pytest.param(name, f.name, bad, id=f"{name}--{f.name}={bad}")


def _required_argv(name: str) -> list[str]:
    """Placeholder values for the command's required options (paths under the test's cwd)."""
    spec, argv = cli.COMMANDS[name], []
    for f, tp in _fields(_config_cls(name)):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            choices = _kinds(tp)[2]
            if f.name == spec.positional:
                argv = ["src", *argv]
            else:
                argv += [f"--{f.name}", choices[0] if choices else "out.jsonl" if f.name == "out" else "x"]
    return argv


@pytest.mark.parametrize("name,option,bad", list(_cases()))
def test_a_bad_value_is_one_line_naming_the_option_before_anything_is_written(
    name, option, bad, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    flag = "--" + option.replace("_", "-")
    argv = [*name.split(), *_required_argv(name), flag, str(bad)]
    if "--out" not in argv and "out" in {f.name for f, _ in _fields(_config_cls(name))}:
        argv += ["--out", "out"]
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
