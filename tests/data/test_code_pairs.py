"""Self-supervised code pairs (``mmssl.pretrain.code_pairs``) and ``mmssl pretrain contrastive``:
the pair builder on hand-written functions, the held-out share, and a pretrain -> train round trip."""

from __future__ import annotations

import pytest
import torch

from mmssl import cli
from mmssl.data.code_pairs import as_training_pairs, code_pairs, held_out, name_words
from mmssl.models.text import resolve_init
from mmssl.recipes.code_pairs import CodePairsConfig, CodePairsRecipe

FACTORIAL = {
    "func_name": "Maths.compute_factorial",
    "kind": "function",
    "code": "def compute_factorial(n: int,\n                      cache=None) -> int:\n"
    "    if n < 2:\n        return 1\n    return n * compute_factorial(n - 1)",
}
CAMEL = {"func_name": "parseHTTPHeader", "kind": "function", "code": "def parseHTTPHeader(raw):\n    return raw"}
WRAPPER = {"func_name": "wrapper", "kind": "function", "code": "def wrapper(*a):\n    x = 1\n    return g(*a)"}
MODULE = {"func_name": "pkg.mod", "kind": "module", "code": "import os\n\nA = 1\nB = 2\n\nclass K:\n    pass"}


def test_name_words_split_snake_and_camel_case():
    assert name_words("Maths.compute_factorial") == "compute factorial"
    assert name_words("parseHTTPHeader") == "parse http header"


def test_each_view_of_hand_written_functions():
    pairs = {(p.view, p.source): p for p in code_pairs([FACTORIAL, CAMEL, WRAPPER, MODULE])}
    name = pairs["name", 0]
    assert name.query == "compute factorial"
    assert "compute_factorial" not in name.candidate  # the def line and the recursive call
    assert name.candidate.startswith("def _(n: int,") and "return n * _(n - 1)" in name.candidate
    signature = pairs["signature", 0]
    assert signature.query == "def compute_factorial(n: int,\n                      cache=None) -> int:"
    assert signature.candidate == "    if n < 2:\n        return 1\n    return n * compute_factorial(n - 1)"
    spans = pairs["spans", 0]
    assert spans.query == "def compute_factorial(n: int,\n                      cache=None) -> int:"
    assert spans.candidate.startswith("    if n < 2:")
    assert pairs["name", 1].query == "parse http header" and ("spans", 1) not in pairs  # 2 lines: too short
    assert ("name", 2) not in pairs and ("signature", 2) in pairs  # "wrapper" says nothing
    assert {view for view, source in pairs if source == 3} == {"spans"}  # a module body: halves only
    assert [p.view for p in code_pairs([FACTORIAL], ["name"])] == ["name"]
    with pytest.raises(ValueError, match="--views"):
        CodePairsRecipe(CodePairsConfig(views="name,colour"))


def test_views_of_one_function_and_functions_of_one_name_share_an_id():
    twin = {**FACTORIAL, "func_name": "compute_factorial", "code": FACTORIAL["code"].replace("n - 1", "n-1")}
    records = [FACTORIAL, CAMEL, twin, MODULE]
    pairs = code_pairs(records)
    ids = as_training_pairs(pairs, records).ids.tolist()
    by_source = {}
    for pair, i in zip(pairs, ids):
        by_source.setdefault(pair.source, set()).add(i)
    assert all(len(v) == 1 for v in by_source.values())
    assert by_source[0] == by_source[2]  # same name words: not each other's negatives
    assert len({*by_source[0], *by_source[1], *by_source[3]}) == 3


def test_the_held_out_share_is_deterministic_and_about_one_in_n():
    codes = [f"def f{i}(x):\n    return x + {i}" for i in range(5000)]
    held = [held_out(c, 50) for c in codes]
    assert held == [held_out(c, 50) for c in codes]
    assert 60 < sum(held) < 140


def test_pretrain_contrastive_then_train_from_it(code_corpus, tmp_path):
    from mmssl.models import DualEncoder

    out = tmp_path / "ssl"
    common = ["--preset", "tiny", "--vocab-size", "300", "--batch-size", "16", "--max-text-length", "32",
              "--max-code-length", "32", "--eval-max-pairs", "50", "--device", "cpu", "--save-every", "0"]  # fmt: skip
    argv = ["pretrain", "contrastive", "--train", code_corpus, "--out", str(out), "--max-steps", "4", *common]
    assert cli.main([*argv, "--valid-every", "5"]) == 0
    pretrained = DualEncoder.from_pretrained(out / "final")
    assert pretrained.config.shared and (out / "final" / "README.md").is_file()
    assert resolve_init(str(out / "final")) == str(out / "final" / "towers" / "text")
    # a dual encoder directory starts a tower like any other init: its weights exactly
    from mmssl.recipes.config import TrainConfig
    from mmssl.recipes.text_code import RECIPE

    train = TrainConfig.from_flat(
        train=code_corpus, out=str(tmp_path / "dual"), text_init=str(out / "final"), shared=True, batch_size=16,
        max_steps=1, max_text_length=32, max_code_length=32, eval_max_pairs=50, device="cpu",
    )  # fmt: skip
    task = RECIPE.build_task(train, torch.device("cpu"))
    mine = task.model.towers["text"].backbone.state_dict()
    for name, tensor in pretrained.towers["text"].backbone.state_dict().items():
        assert torch.equal(mine[name], tensor), name
    assert cli.main(["pretrain", "contrastive", "--train", code_corpus, "--out", str(tmp_path / "x"), "--shared",
                     "false", *common]) == 2  # fmt: skip


def test_a_broken_dual_encoder_directory_is_named(tmp_path):
    (tmp_path / "dual_encoder.json").write_text('{"modalities": ["text", "code"]}')
    with pytest.raises(FileNotFoundError, match="the text tower of"):
        resolve_init(str(tmp_path))
