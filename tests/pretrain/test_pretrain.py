"""Masked-LM and causal-LM pretraining: documents, packing, masking statistics, learning, resume,
and towers initialized from the output holding exactly the pretrained weights."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math

import pytest
import torch

from mmssl import cli
from mmssl.data import DataError
from mmssl.engine import Trainer
from mmssl.pretrain import pack, read_documents, split_documents
from mmssl.pretrain.commands import CLMConfig, MLMConfig, build_pretraining
from tests.conftest import fit_or_crash

CPU = torch.device("cpu")


def tiny(cls, corpus, out, **overrides):
    base = dict(
        data=[corpus],
        out=str(out),
        preset="tiny",
        vocab_size=300,
        block_size=32,
        batch_size=16,
        max_steps=30,
        warmup_steps=3,
        lr=3e-3,
        eval_every=0,
        save_every=0,
        log_every=1,
        valid_fraction=0.1,
        eval_max_blocks=64,
        device="cpu",
    )
    return cls(**{**base, **overrides})


@pytest.fixture(scope="module")
def tokenizer():
    from mmssl.models.tokenizer import train_bpe_tokenizer

    texts = ["def add(a, b): return a + b", "Parse the user file.", "Load the matrix from a path."]
    return train_bpe_tokenizer(texts * 20, vocab_size=300, min_frequency=1)


def _losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


# ---- documents and packing ----------------------------------------------------------------------


def test_documents_from_jsonl_fields_partitions_and_text_files(tmp_path):
    jl = tmp_path / "a.jsonl.gz"
    with gzip.open(jl, "wt") as f:
        f.write(json.dumps({"caption": "a cat", "partition": "train"}) + "\n")
        f.write(json.dumps({"caption": "a dog", "partition": "test"}) + "\n")
        f.write(json.dumps({"caption": "a cow"}) + "\n")  # no partition field: kept
    assert read_documents([jl], ["caption"]) == ["a cat", "a cow"]
    assert read_documents([jl], ["caption"], partition="") == ["a cat", "a dog", "a cow"]
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("first line\n\n  \nsecond line\n")
    (folder / "sub" / "c.txt").write_text("third\n")
    (folder / "skip.md").write_text("not matched\n")
    assert read_documents([folder]) == ["first line", "second line", "third"]
    assert read_documents([folder], unit="file") == ["first line\n\n  \nsecond line\n", "third\n"]


def test_bad_input_names_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nbroken \xff here\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: invalid UTF-8"):
        read_documents([bad])
    jl = tmp_path / "x.jsonl"
    jl.write_text(json.dumps({"caption": "ok"}) + "\n" + json.dumps({"text": "no caption"}) + "\n")
    with pytest.raises(DataError, match=r"x\.jsonl:2: missing required field\(s\) 'caption'"):
        read_documents([jl], ["caption"])
    jl.write_text(json.dumps({"caption": 3}) + "\n")
    with pytest.raises(DataError, match=r"x\.jsonl:1: field 'caption' must be a string"):
        read_documents([jl], ["caption"])
    with pytest.raises(ValueError, match="no record has partition 'train'"):
        jl.write_text(json.dumps({"caption": "c", "partition": "test"}) + "\n")
        read_documents([jl], ["caption"])
    with pytest.raises(FileNotFoundError, match="nope"):
        read_documents([tmp_path / "nope"])


def test_documents_from_a_saved_datasets_folder(tmp_path):
    import datasets

    from mmssl.pretrain import load_dataset_documents

    datasets.Dataset.from_dict({"text": ["one doc", "", "two doc"], "n": [1, 2, 3]}).save_to_disk(tmp_path / "ds")
    assert load_dataset_documents(str(tmp_path / "ds")) == ["one doc", "two doc"]
    with pytest.raises(ValueError, match="no column 'body'"):
        load_dataset_documents(str(tmp_path / "ds"), ["body"])


def test_split_documents_is_seeded_and_disjoint():
    docs = [f"d{i}" for i in range(100)]
    train, valid = split_documents(docs, 0.1, seed=3)
    assert len(valid) == 10 and sorted(train + valid) == sorted(docs)
    assert split_documents(docs, 0.1, seed=3) == (train, valid)
    assert split_documents(docs, 0.1, seed=4)[1] != valid


def test_packing_concatenates_documents_with_their_special_tokens_and_drops_the_tail(tokenizer):
    docs = ["def add(a, b): return a + b", "Parse the user file.", "x", "Load the matrix from a path."]
    stream = [t for d in docs for t in tokenizer(d)["input_ids"]]
    blocks = pack(tokenizer, docs, block_size=8, with_offsets=True)
    n = len(stream) // 8
    assert blocks.input_ids.shape == (n, 8) and blocks.offsets.shape == (n, 8, 2)
    assert blocks.input_ids.flatten().tolist() == stream[: n * 8]
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id}
    assert blocks.special_tokens_mask.flatten().tolist() == [t in special for t in stream[: n * 8]]
    assert tokenizer.pad_token_id not in blocks.input_ids  # no padding anywhere
    with pytest.raises(ValueError, match="not one block"):
        pack(tokenizer, ["x"], block_size=64)


# ---- masking ------------------------------------------------------------------------------------


def _mlm_task(code_corpus, tmp_path, **overrides):
    torch.manual_seed(0)
    config = tiny(MLMConfig, code_corpus, tmp_path / "mlm", **overrides)
    return build_pretraining(config, CPU)


def test_masking_rates_match_bert_15_80_10_10(code_corpus, tmp_path):
    task = _mlm_task(code_corpus, tmp_path)
    blocks = task.data
    torch.manual_seed(1)
    batch = task.batch(torch.arange(len(blocks)))
    original, inputs, labels = blocks.input_ids, batch["input_ids"], batch["labels"]
    special = blocks.special_tokens_mask
    masked = labels != -100
    assert not masked[special].any()  # <s> and </s> are never chosen
    assert torch.equal(labels[masked], original[masked])  # the labels are the original tokens
    assert torch.equal(inputs[~masked], original[~masked])  # nothing else changes
    eligible = int((~special).sum())
    # Binomial counts: each rate within 5 standard deviations of its target.
    rate = masked.sum().item() / eligible
    assert abs(rate - 0.15) < 5 * math.sqrt(0.15 * 0.85 / eligible), rate
    m = int(masked.sum())
    to_mask = (inputs[masked] == task.tokenizer.mask_token_id).float().mean().item()
    kept = (inputs[masked] == original[masked]).float().mean().item()
    other = 1 - to_mask - kept
    for got, want in ((to_mask, 0.8), (kept, 0.1), (other, 0.1)):
        assert abs(got - want) < 5 * math.sqrt(want * (1 - want) / m) + 1 / len(task.tokenizer), (got, want)


def test_whole_word_masking_masks_every_piece_of_a_chosen_word(code_corpus, tmp_path):
    task = _mlm_task(code_corpus, tmp_path, masking="word")
    blocks = task.data
    torch.manual_seed(2)
    labels = task.batch(torch.arange(len(blocks)))["labels"]
    masked = labels != -100
    starts, ends = blocks.offsets[..., 0], blocks.offsets[..., 1]
    # A token continues the previous one's word when it starts where that one ended (same document).
    cont = (starts[:, 1:] == ends[:, :-1]) & ~blocks.special_tokens_mask[:, 1:] & ~blocks.special_tokens_mask[:, :-1]
    assert cont.any()  # the corpus has multi-token words
    assert torch.equal(masked[:, 1:][cont], masked[:, :-1][cont])
    assert 0.05 < masked.float().mean() < 0.3


def test_fast_mlm_head_gives_the_transformers_loss(code_corpus, tmp_path):
    task = _mlm_task(code_corpus, tmp_path)
    task.model.eval()
    torch.manual_seed(3)
    batch = task.batch(torch.arange(16))
    ours = task.training_forward(batch)[0]["mlm_loss"]
    theirs = task.model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


# ---- training -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [MLMConfig, CLMConfig])
def test_pretraining_lowers_validation_perplexity_and_saves_a_transformers_model(cls, code_corpus, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    torch.manual_seed(0)
    out = tmp_path / "run"
    config = tiny(cls, code_corpus, out, max_steps=40)
    task = build_pretraining(config, CPU)
    before = task.evaluate()
    result = Trainer(task, config, CPU).fit()
    after = result["valid"]
    assert result["metric"] == "perplexity" and result["best"] == pytest.approx(after["perplexity"])
    assert after["perplexity"] < 0.5 * before["perplexity"], (before, after)
    assert before["perplexity"] > 0.5 * len(task.tokenizer)  # an untrained model is near uniform
    # Validation masks are fixed: the same blocks give the same score.
    assert {**task.evaluate(), "step": 40, "split": "valid"} == after
    auto = AutoModelForMaskedLM if cls is MLMConfig else AutoModelForCausalLM
    loaded = auto.from_pretrained(out / "best")
    tok = AutoTokenizer.from_pretrained(out / "best")
    assert tok("def add(a, b)")["input_ids"] == task.tokenizer("def add(a, b)")["input_ids"]
    for name, tensor in task.model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    assert (out / "curves.png").stat().st_size > 1000


def test_pretraining_resumes_exactly(code_corpus, tmp_path, monkeypatch):
    def run(out, crash_at=None, resume=False):
        torch.manual_seed(0)
        config = tiny(MLMConfig, code_corpus, out, max_steps=8, save_every=4, resume=resume)
        task = build_pretraining(config, CPU)
        fit_or_crash(Trainer(task, config, CPU), monkeypatch, crash_at)

    run(tmp_path / "a")
    run(tmp_path / "b", crash_at=6)
    run(tmp_path / "b", resume=True)
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")  # same blocks, same masks, same dropout


# ---- towers from a pretraining directory ---------------------------------------------------------


@pytest.mark.parametrize(("cls", "pooling"), [(MLMConfig, "cls"), (CLMConfig, "last")])
def test_tower_initialized_from_pretraining_holds_exactly_its_weights(cls, pooling, code_corpus, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from mmssl.models import DualEncoder, DualEncoderConfig, TowerConfig

    torch.manual_seed(0)
    out = tmp_path / "pre"
    config = tiny(cls, code_corpus, out, max_steps=3)
    task = build_pretraining(config, CPU)
    Trainer(task, config, CPU).fit()
    lm = (AutoModelForMaskedLM if cls is MLMConfig else AutoModelForCausalLM).from_pretrained(out / "final")
    tower = TowerConfig(init=str(out / "final"), pooling=pooling, max_length=32)
    dual = DualEncoder.build(DualEncoderConfig(towers={"text": tower, "code": tower}, shared=True, embed_dim=64), {})
    backbone = dual.towers["text"].backbone.state_dict()
    pretrained = lm.base_model.state_dict()
    assert set(pretrained) <= set(backbone)
    for name, tensor in pretrained.items():
        assert torch.equal(backbone[name], tensor), name
    extra = set(backbone) - set(pretrained)  # only an unused pooler; the LM head is dropped
    assert all(k.startswith("pooler.") for k in extra), extra
    assert dual.towers["text"].tokenizer("parse the file")["input_ids"] == task.tokenizer("parse the file")["input_ids"]
    wrong = "last" if pooling == "cls" else "cls"
    with pytest.raises(ValueError, match="pools"):
        DualEncoder.build(
            DualEncoderConfig(towers={"text": dataclasses.replace(tower, pooling=wrong), "code": tower}, embed_dim=64),
            {},
        )
    with pytest.raises(ValueError, match=r"max length 64 tokens exceeds the \d+ positions"):
        DualEncoder.build(
            DualEncoderConfig(towers={"text": dataclasses.replace(tower, max_length=64), "code": tower}, embed_dim=64),
            {},
        )


def test_dual_encoder_trains_from_a_pretraining_directory(code_corpus, tmp_path):
    from mmssl.io import sha256_file
    from mmssl.recipes.config import TrainConfig
    from mmssl.recipes.text_code import RECIPE as TEXT_CODE

    config = tiny(MLMConfig, code_corpus, tmp_path / "pre", max_steps=0)  # the random-init control
    assert cli.main(["pretrain", "mlm", "--config", _write_toml(tmp_path, config)]) == 0
    card = (tmp_path / "pre" / "final" / "README.md").read_text()  # its model card
    assert card.startswith("---\nlibrary_name: mmssl") and "# mlm pretraining with mmssl" in card
    assert "masked-LM" in card and "--text-init DIR" in card and "from scratch" in card
    assert sha256_file(code_corpus) in card and "partition: 'train'" in card and '"max_steps": 0' in card
    train = TrainConfig.from_flat(
        train=code_corpus,
        out=str(tmp_path / "dual"),
        text_init=str(tmp_path / "pre" / "final"),
        shared=True,
        batch_size=16,
        max_steps=2,
        max_text_length=32,
        max_code_length=32,
        eval_max_pairs=50,
        device="cpu",
    )
    task = TEXT_CODE.build_task(train, CPU)
    assert task.model.config.embed_dim == 64  # the tiny preset's hidden size
    assert Trainer(task, train.engine, CPU).fit()["step"] == 2


def _write_toml(tmp_path, config) -> str:
    lines = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is not None:
            lines.append(f"{f.name} = {json.dumps(value)}")
    path = tmp_path / "pre.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_pretrain_commands_have_help(capsys):
    for kind in ("mlm", "clm"):
        with pytest.raises(SystemExit) as e:
            cli.main(["pretrain", kind, "--help"])
        assert e.value.code == 0
        assert "--block-size" in capsys.readouterr().out
    assert cli.main(["pretrain", "mlm", "--out", "x"]) == 2  # no data: a one-line error
    assert "--data" in capsys.readouterr().err
