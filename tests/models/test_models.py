"""Towers, pooling, the BPE tokenizer and the dual encoder's directory format."""

from __future__ import annotations

import json

import pytest
import torch

from mmssl.models import DualEncoder, DualEncoderConfig, TowerConfig
from mmssl.models.text import pool
from mmssl.models.tokenizer import train_bpe_tokenizer

TEXTS = [
    "def add(a, b):\n    return a + b",
    "Add two numbers.",
    "def sub(a, b): return a - b",
    "Subtract b from a.",
    "naïve ünïcode → works",
    "x" * 300,
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(TEXTS * 20, vocab_size=400, min_frequency=1)


def test_pooling_against_explicit_loops():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    for i in range(3):
        n = int(mask[i].sum())
        assert torch.allclose(pool(hidden, mask, "mean")[i], hidden[i, :n].mean(0))
        assert torch.equal(pool(hidden, mask, "last")[i], hidden[i, n - 1])
        assert torch.equal(pool(hidden, mask, "cls")[i], hidden[i, 0])
    with pytest.raises(ValueError, match="pooling"):
        pool(hidden, mask, "max")


def test_bpe_tokenizer_round_trips_and_saves(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    ids = tokenizer("naïve ünïcode → works")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "naïve ünïcode → works"
    assert tokenizer.unk_token_id not in ids  # byte-level: nothing is unknown
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("def add(a, b)")["input_ids"] == tokenizer("def add(a, b)")["input_ids"]


def _tiny(tokenizer, shared=False, code_arch="gpt2"):
    cfg = DualEncoderConfig(
        towers={
            "text": TowerConfig(preset="tiny", max_length=32),
            "code": TowerConfig(preset="tiny", arch=code_arch, pooling="last", max_length=64),
        },
        shared=shared,
        embed_dim=16,
    )
    torch.manual_seed(0)
    return DualEncoder.build(cfg, {"text": tokenizer, "code": tokenizer})


@pytest.mark.parametrize("shared", [False, True])
def test_dual_encoder_save_load_round_trip(tokenizer, tmp_path, shared):
    from transformers import AutoModel

    model = _tiny(tokenizer, shared=shared).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    model.save_pretrained(tmp_path / "m")
    loaded = DualEncoder.from_pretrained(tmp_path / "m").eval()
    for modality in ("text", "code"):
        a, b = model.embed(modality, TEXTS), loaded.embed(modality, TEXTS)
        assert a.shape == (len(TEXTS), 16)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a.norm(dim=1), torch.ones(len(TEXTS)))
    assert loaded.logit_scale.item() == 3.0
    towers = sorted(p.name for p in (tmp_path / "m" / "towers").iterdir())
    assert towers == (["text"] if shared else ["code", "text"])
    assert (
        loaded.towers["text"] is loaded.towers["code"] if shared else loaded.towers["text"] is not loaded.towers["code"]
    )
    # Each tower directory is a plain transformers model.
    for sub in towers:
        assert AutoModel.from_pretrained(tmp_path / "m" / "towers" / sub).config.hidden_size == 64


def test_embed_keeps_input_order_despite_length_sorting(tokenizer):
    model = _tiny(tokenizer).eval()
    together = model.embed("text", TEXTS, batch_size=2)
    for i, t in enumerate(TEXTS):
        torch.testing.assert_close(together[i], model.embed("text", [t])[0], atol=1e-5, rtol=1e-5)


def test_loading_bad_directories_fails_clearly(tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="no dual_encoder.json"):
        DualEncoder.from_pretrained(tmp_path)
    model = _tiny(tokenizer)
    model.save_pretrained(tmp_path / "m")
    cfg_path = tmp_path / "m" / "dual_encoder.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        DualEncoder.from_pretrained(tmp_path / "m")
    cfg_path.write_text(json.dumps({**cfg, "embed_dim": 8}))
    with pytest.raises(ValueError, match=r"text.proj.weight is \(16, 64\), expected \(8, 64\)"):
        DualEncoder.from_pretrained(tmp_path / "m")


def test_pickle_only_weights_are_refused(tmp_path):
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    bert.config.save_pretrained(tmp_path)
    torch.save(bert.state_dict(), tmp_path / "pytorch_model.bin")  # a pickle: never loaded by mmssl
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors weights"):
        DualEncoder.build(
            DualEncoderConfig(
                towers={"text": TowerConfig(init=str(tmp_path)), "code": TowerConfig(init=str(tmp_path))}, shared=True
            )
        )


def test_minilm_tower_starts_as_the_sentence_transformers_model():
    """With an identity projection, our MiniLM tower is all-MiniLM-L6-v2: mean pooling, normalized,
    computed here independently with plain transformers."""
    from transformers import AutoModel, AutoTokenizer

    from mmssl.models.text import resolve_init

    path = resolve_init("minilm")
    model = DualEncoder.build(
        DualEncoderConfig(
            towers={"text": TowerConfig(init="minilm"), "code": TowerConfig(init="minilm")}, shared=True, embed_dim=384
        )
    ).eval()
    tok, bert = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    sentences = ["sort a list of numbers", "open a file and read its lines"]
    enc = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = bert(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)
    torch.testing.assert_close(model.embed("text", sentences), ref, atol=1e-5, rtol=1e-4)


def test_nbow_preset_is_a_bag_of_embeddings(tokenizer, tmp_path):
    # No transformer layer: the pooled output is the masked mean of the embedding layer's output,
    # and the saved tower still loads with transformers alone.
    from transformers import AutoModel

    nbow = TowerConfig(preset="nbow", max_length=32)
    cfg = DualEncoderConfig(towers={"text": nbow, "code": nbow}, shared=True, embed_dim=8)
    model = DualEncoder.build(cfg, {"text": tokenizer, "code": tokenizer}).eval()
    backbone = model.towers["text"].backbone
    assert backbone.config.num_hidden_layers == 0
    batch = model.tokenize("text", TEXTS[:3])
    with torch.no_grad():
        hidden = backbone.embeddings(input_ids=batch["input_ids"])
        want = torch.nn.functional.normalize(model.towers["text"].proj(pool(hidden, batch["attention_mask"], "mean")))
        torch.testing.assert_close(model.encode("text", batch), want)
    model.save_pretrained(tmp_path / "m")
    assert AutoModel.from_pretrained(tmp_path / "m" / "towers" / "text").config.num_hidden_layers == 0


def test_split_identifiers_tokenizer_shares_words_between_code_and_prose(tmp_path):
    from transformers import AutoTokenizer

    corpus = ["def getUserName(self):\n    return self._user_name", "Return the user name of the HTTPServer."] * 30
    plain = train_bpe_tokenizer(corpus, vocab_size=300, min_frequency=1)
    split = train_bpe_tokenizer(corpus, vocab_size=300, min_frequency=1, split_identifiers=True)

    def words(tok, text):
        return set(tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"]))

    code, prose = "getUserName(self) or self._user_name", "the user name"
    # Plain byte-level BPE: "user" in an identifier and " user" in prose are different tokens.
    assert not {"user", "name"} <= words(plain, code) & words(plain, prose)
    assert {"user", "name"} <= words(split, code) & words(split, prose)
    assert {"http", "server"} <= words(split, "HTTPServer")
    # The splitting lives in tokenizer.json: the saved tokenizer alone reproduces it.
    split.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(code)["input_ids"] == split(code)["input_ids"]


def test_a_model_directory_with_custom_code_is_loaded_without_running_it(tmp_path, monkeypatch):
    """A directory whose config names its own Python classes (``auto_map``): transformers never asks
    "run the custom code? [y/N]" (a user here answers y), and the code is never run."""
    import json
    import shutil

    from mmssl.models import TowerConfig
    from mmssl.models.text import TextTower, resolve_init

    model_dir = tmp_path / "model"
    shutil.copytree(resolve_init("minilm"), model_dir)
    marker = tmp_path / "ran"
    (model_dir / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('pwned')\n"
        "from transformers import BertConfig, BertModel\n"
        "class EvilConfig(BertConfig):\n    model_type = 'evilbert'\n"
        "class EvilModel(BertModel):\n    config_class = EvilConfig\n"
    )
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil.EvilModel", "AutoConfig": "evil.EvilConfig"}
    config["model_type"] = "evilbert"  # a type transformers does not know: only the custom code could load it
    (model_dir / "config.json").write_text(json.dumps(config))
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt="": asked.append(prompt) or "y")
    try:
        TextTower.build(TowerConfig(init=str(model_dir), pooling="mean", max_length=16), 32)
    except ValueError:
        pass  # refusing the directory is as good as ignoring its code: what matters is that none ran
    assert not asked and not marker.exists()
