"""Configs in typed groups (``mmssl.options.GroupedConfig``): plain flag names, --help sections,
config files flat or nested by group, and the groups each builder takes."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from mmssl import cli
from mmssl.options import GroupedConfig
from mmssl.recipes.config import TrainConfig


def test_plain_names_go_to_their_group_and_replace_keeps_the_rest():
    config = TrainConfig.from_flat(lr=0.01, preset="tiny", image_model="mmssl-vit-micro", hard_negatives=3)
    assert (config.engine.lr, config.text_code.preset, config.image_text.image_model) == (
        0.01,
        "tiny",
        "mmssl-vit-micro",
    )
    assert config.negatives.hard_negatives == 3 and config.engine.batch_size == 64
    changed = config.replace(lr=0.5, max_code_length=32)
    assert (changed.engine.lr, changed.text_code.max_code_length, changed.text_code.preset) == (0.5, 32, "tiny")
    assert config.engine.lr == 0.01  # frozen: replace makes a copy
    assert changed.flat()["lr"] == 0.5 and len(changed.flat()) == len(TrainConfig.field_owner())
    with pytest.raises(TypeError, match="unknown option 'lrr'"):
        TrainConfig.from_flat(lrr=1.0)


@dataclass(frozen=True)
class _A:
    x: int = 0


@dataclass(frozen=True)
class _B:
    x: int = 1


@dataclass(frozen=True)
class _Both(GroupedConfig):
    a: _A = field(default_factory=_A)
    b: _B = field(default_factory=_B)


def test_a_name_in_two_groups_is_refused():
    with pytest.raises(TypeError, match="option 'x' is in groups a and b"):
        _Both.field_owner()


def test_help_shows_each_group_as_a_section(capsys):
    with pytest.raises(SystemExit):
        cli.parse_config("train", ["--help"])
    out = capsys.readouterr().out
    for title in (
        "engine:",
        "data:",
        "model: towers and loss",
        "hard negatives:",
        "text-code recipe:",
        "image-text recipe:",
    ):
        assert title in out, title
    assert "--max-code-length" in out and "--lock-text" in out  # the flags keep their names


def test_a_config_file_may_nest_options_by_group(tmp_path):
    cfg = tmp_path / "train.toml"
    cfg.write_text('train = "corpus.jsonl"\n[engine]\nlr = 0.002\nbatch-size = 8\n[text_code]\npreset = "tiny"\n')
    config = cli.parse_config("train", ["--config", str(cfg), "--max-steps", "3"])
    assert (config.data.train, config.engine.lr, config.engine.batch_size) == ("corpus.jsonl", 0.002, 8)
    assert (config.text_code.preset, config.engine.max_steps) == ("tiny", 3)
    cfg.write_text('[engine]\npreset = "tiny"\n')  # an option of another group
    with pytest.raises(ValueError, match=r"unknown option 'preset' in \[engine\]"):
        cli.parse_config("train", ["--config", str(cfg)])


def test_mine_negatives_embeds_the_mining_settings(tmp_path):
    config = cli.parse_config(
        "mine-negatives", ["--data", "d.jsonl", "--out", "n.jsonl", "--top-k", "20", "--keep", "5"]
    )
    assert (config.run.data, config.mining.top_k, config.mining.keep) == ("d.jsonl", 20, 5)
    with pytest.raises(ValueError, match="--keep 5: must be <= --top-k"):  # MiningSettings validates itself
        cli.parse_config("mine-negatives", ["--data", "d", "--out", "o", "--top-k", "2", "--keep", "5"])
