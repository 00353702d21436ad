"""A damaged or incomplete model directory, a missing tower folder or a hub name that cannot be
reached: one line naming the file, from the library and the command alike, never a traceback."""

from __future__ import annotations

import re
import shutil

import pytest
import torch

from mmssl import cli
from mmssl.models import DualEncoder
from mmssl.models.tower import read_checkpoint


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


CODE, TEXT = "towers/code", "towers/text"
DAMAGES = {
    "truncated weights": (lambda m: _truncate(m / CODE / "model.safetensors"), f"{CODE}/model.safetensors: damaged"),
    "truncated heads": (lambda m: _truncate(m / "heads.safetensors"), "heads.safetensors: damaged or truncated"),
    "missing tokenizer.json": (lambda m: (m / TEXT / "tokenizer.json").unlink(), f"{TEXT}/tokenizer.json: missing"),
    "missing tower folder": (lambda m: shutil.rmtree(m / CODE), f"{CODE}: missing (the code tower"),
    "config not JSON": (lambda m: (m / CODE / "config.json").write_text("{"), f"{CODE}: a local directory that"),
}  # fmt: skip


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_model_directory_is_one_line_naming_the_file(damage, tiny_model, code_corpus, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    spoil, message = DAMAGES[damage]
    spoil(model)
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
        DualEncoder.from_pretrained(model)
    assert cli.main(["eval", "--model", str(model), "--data", code_corpus, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mmssl eval: error: ") and message in err[-1]
    assert not any("Traceback" in line for line in err)


def test_a_tower_path_that_does_not_exist_is_not_taken_for_a_hub_name(code_corpus, tmp_path, capsys):
    argv = ["train", "--train", code_corpus, "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert cli.main([*argv, "--text-init", str(tmp_path / "no" / "tower")]) == 2
    assert f"{tmp_path / 'no' / 'tower'}: no such directory" in capsys.readouterr().err
    assert cli.main([*argv, "--text-init", "nobody-here/no-such-model"]) == 2  # offline in tests
    err = capsys.readouterr().err
    assert "nobody-here/no-such-model: not a local directory, and as a hub name it does not load" in err
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_file_with_a_pickled_object_is_refused_unexecuted(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"visual.weight": torch.zeros(2), "x": Payload()}, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="ckpt.pt: refused, holds more than weights"):
        read_checkpoint(str(tmp_path / "ckpt.pt"))
    _truncate_file = tmp_path / "cut.pt"
    torch.save({"w": torch.zeros(1000)}, _truncate_file)
    _truncate(_truncate_file)
    with pytest.raises(ValueError, match="cut.pt: damaged or truncated checkpoint"):
        read_checkpoint(str(_truncate_file))
    assert "ran" not in capsys.readouterr().out
