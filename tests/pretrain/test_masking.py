"""Identifier and span masking (``mmssl.pretrain.masking``), untied embeddings and pretraining from
a tower that ships no LM head (``mmssl pretrain mlm --untie-embeddings``, ``--init minilm``)."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from mmssl.engine import Trainer
from mmssl.pretrain import pack
from mmssl.pretrain.commands import MLMConfig, build_pretraining
from mmssl.pretrain.corpus import identifier_groups
from mmssl.pretrain.masking import IGNORE, UnitMasker, _spread
from tests.pretrain.test_pretrain import CPU, tiny

CODE = [
    "def get_user_name(self): return self.userName",
    "parseHTTPHeader(raw_bytes, max_len=10) # read a header",
    "for item_index in range(total_count): values[item_index] += 1",
]


@pytest.fixture(scope="module")
def code_tokenizer():
    from mmssl.models.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(CODE * 40, vocab_size=300, min_frequency=1, split_identifiers=True)


def test_identifier_groups_join_every_sub_token_of_one_identifier(code_tokenizer):
    text = CODE[0]
    enc = code_tokenizer(text, return_offsets_mapping=True)
    groups, end = identifier_groups(text, enc["offset_mapping"], first=100)
    pieces = {}
    for (a, b), g in zip(enc["offset_mapping"], groups):
        pieces.setdefault(g, []).append(text[a:b])
    words = {"".join(p) for p in pieces.values()}
    # snake_case and camelCase names are split by the tokenizer and joined again by their group
    assert {"get_user_name", "userName", "self", "def", "return"} <= words
    assert "(" in words and "." in words  # punctuation: a unit of its own
    assert len(set(groups)) == len(pieces) and min(groups) >= 100 and end > max(groups)
    assert len(enc["input_ids"]) > len(words)  # some identifier has several tokens


def _blocks(code_tokenizer):
    return pack(code_tokenizer, CODE * 200, block_size=32, with_groups=True)


def _units(blocks):
    """(B, T) unit index and the number of tokens of each unit."""
    g = blocks.groups
    change = torch.zeros_like(g)
    change[:, 1:] = (g[:, 1:] != g[:, :-1]).long()
    return change.cumsum(1)


@pytest.mark.parametrize("span", [False, True])
def test_a_chosen_unit_is_masked_whole_at_the_rates_asked(code_tokenizer, span):
    blocks = _blocks(code_tokenizer)
    masker = UnitMasker(code_tokenizer.mask_token_id, len(code_tokenizer), 0.15, 0.8, 0.1, span=span)
    torch.manual_seed(0)
    inputs, labels = masker(blocks)
    masked = labels != IGNORE
    special = blocks.special_tokens_mask
    assert not masked[special].any()
    assert torch.equal(labels[masked], blocks.input_ids[masked])
    assert torch.equal(inputs[~masked], blocks.input_ids[~masked])
    unit = _units(blocks)
    # every token of a unit is masked or none is; a masked unit is <mask> throughout or nowhere
    fates = {}
    for row in range(len(blocks)):
        for t in range(blocks.block_size):
            if not special[row, t]:
                is_mask = bool(inputs[row, t] == code_tokenizer.mask_token_id)
                fates.setdefault((row, int(unit[row, t])), set()).add((bool(masked[row, t]), is_mask))
    assert all(len(f) == 1 for f in fates.values())
    assert any(len(set(groups.tolist())) < blocks.block_size for groups in blocks.groups)  # units of several tokens
    eligible = int((~special).sum())
    rate = masked.sum().item() / eligible
    assert abs(rate - 0.15) < 0.03, rate  # units of several tokens: a looser band than per token
    chosen = [next(iter(f)) for f in fates.values() if next(iter(f))[0]]
    to_mask = sum(m for _, m in chosen) / len(chosen)
    assert abs(to_mask - 0.8) < 5 * math.sqrt(0.16 / len(chosen)) + 0.02
    if span:  # masked units come in runs: their mean length (in units) is SpanBERT's, about 3.5
        runs = []
        for row in range(len(blocks)):
            chosen_units = sorted({int(unit[row, t]) for t in range(blocks.block_size) if masked[row, t]})
            if chosen_units:
                breaks = sum(b - a > 1 for a, b in zip(chosen_units, chosen_units[1:]))
                runs.append((len(chosen_units), breaks + 1))
        mean = sum(n for n, _ in runs) / sum(k for _, k in runs)
        assert 2.0 < mean < 5.0, mean


def test_spans_cover_exactly_their_units():
    starts = torch.tensor([[True, False, False, False, True, False, False]])
    lengths = torch.tensor([[2, 9, 9, 9, 5, 1, 1]])
    assert _spread(starts, lengths).tolist() == [[True, True, False, False, True, True, True]]


@pytest.mark.parametrize("masking", ["identifier", "span"])
def test_mlm_pretrains_with_identifier_and_span_masking(code_corpus, tmp_path, masking):
    torch.manual_seed(0)
    config = tiny(MLMConfig, code_corpus, tmp_path / masking, max_steps=20, masking=masking)
    task = build_pretraining(config, CPU)
    assert task.data.groups is not None and task.valid.groups is not None
    before = task.evaluate()["perplexity"]
    after = Trainer(task, config, CPU).fit()["valid"]["perplexity"]
    assert after < 0.7 * before


def test_untied_embeddings_train_apart_and_reload_untied(code_corpus, tmp_path):
    from transformers import AutoModelForMaskedLM

    torch.manual_seed(0)
    config = tiny(MLMConfig, code_corpus, tmp_path / "untied", max_steps=5, untie_embeddings=True)
    task = build_pretraining(config, CPU)
    model = task.model
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    start = model.get_input_embeddings().weight.detach().clone()
    torch.testing.assert_close(model.get_output_embeddings().weight, start)  # a copy to start from
    Trainer(task, config, CPU).fit()
    inp, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert not torch.equal(inp, out)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "untied" / "final")
    assert loaded.get_output_embeddings().weight is not loaded.get_input_embeddings().weight
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    tied = build_pretraining(tiny(MLMConfig, code_corpus, tmp_path / "tied", max_steps=1), CPU).model
    assert tied.get_output_embeddings().weight is tied.get_input_embeddings().weight  # the default


def test_a_tower_without_an_lm_head_gets_a_new_one_and_says_so(code_corpus, tmp_path, caplog):
    """MiniLM's case (a sentence encoder, no MLM head), on a tiny BERT saved the same way."""
    from transformers import AutoModel, BertConfig

    from mmssl.models.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer(CODE * 40, vocab_size=300, min_frequency=1)
    encoder = AutoModel.from_config(
        BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.pad_token_id)
    )  # fmt: skip
    encoder.save_pretrained(tmp_path / "encoder")
    tok.save_pretrained(tmp_path / "encoder")
    config = tiny(MLMConfig, code_corpus, tmp_path / "dapt", init=str(tmp_path / "encoder"), max_steps=3)
    with caplog.at_level(logging.WARNING, logger="mmssl"):
        task = build_pretraining(config, CPU)
    assert "has no masked-LM head" in caplog.text and "cls.predictions" in caplog.text
    for name, tensor in encoder.state_dict().items():  # the encoder's own weights, unchanged
        if not name.startswith("pooler."):
            assert torch.equal(task.model.bert.state_dict()[name], tensor), name
    Trainer(task, config, CPU).fit()
    assert (tmp_path / "dapt" / "final" / "model.safetensors").is_file()


def test_minilm_pretrains_with_a_new_head(tmp_path, code_corpus, caplog):
    config = tiny(MLMConfig, code_corpus, tmp_path / "minilm", init="minilm", max_steps=1, batch_size=4,
                  masking="identifier", lr=1e-5)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="mmssl"):
        task = build_pretraining(config, CPU)
    assert "minilm has no masked-LM head" in caplog.text
    assert task.data.groups is not None  # identifier groups from MiniLM's WordPiece offsets
    Trainer(task, config, CPU).fit()
