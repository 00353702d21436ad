"""The model card ``mmssl train`` writes into each saved model (``mmssl.models.card``), and ``mmssl push``
(its checks and the upload call, with no network)."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from mmssl import cli
from mmssl.io import sha256_file


def card_of(model_dir) -> str:
    return (model_dir / "README.md").read_text()


def test_a_trained_model_carries_a_card_of_its_data_config_steps_and_metric(code_corpus, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--train", code_corpus, "--out", str(out), "--preset", "tiny", "--vocab-size", "300"]
    argv += ["--batch-size", "32", "--max-steps", "6", "--eval-every", "3", "--embed-dim", "16", "--device", "cpu"]
    assert cli.main(argv) == 0
    for saved in ("final", "best"):
        card = card_of(out / saved)
        assert card.startswith("---\nlibrary_name: mmssl\nlicense: other\n") and "- text-code" in card
        assert f"sha256 `{sha256_file(code_corpus)}`" in card and "partition: 'train'" in card
        config = json.loads(re.search(r"```json\n(.*?)\n```", card, re.S).group(1))
        assert config["max_steps"] == 6 and config["train"] == code_corpus and config["preset"] == "tiny"
        assert re.search(r"best validation mrr: 0\.\d{4}; last validation \(step 6\): mrr 0\.\d{4}", card)
        assert "CodeSearchNet protocol" in card and "## Intended use and limits" in card
    assert "- 6 of 6 steps in" in card_of(out / "final") and "steps in" not in card_of(out / "best")


def test_a_card_names_its_base_models_licence_and_says_when_nothing_was_scored(tmp_path):
    from mmssl.models.card import write_model_card
    from mmssl.recipes.text_code_eval import sentence_encoder

    model = tmp_path / "minilm"
    sentence_encoder("minilm", "cpu").save_pretrained(model)
    write_model_card(model, {"train": str(tmp_path / "gone.jsonl")}, {"best": float("-inf"), "valid": None}, "mrr")
    card = card_of(model)
    assert "license: apache-2.0" in card and "base_model: minilm" in card and "Base model licence: apache-2.0." in card
    assert "no validation split was scored" in card and "gone.jsonl` (no longer there)" in card


def test_push_lists_what_it_would_upload_and_refuses_what_is_not_a_carded_model(tiny_model, tmp_path, capsys):
    assert cli.main(["push", "--model", str(tiny_model), "--repo", "me/tiny", "--dry-run"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert "README.md" in listed and "dual_encoder.json" in listed and "heads.safetensors" in listed
    assert sorted(listed) == sorted(str(p.relative_to(tiny_model)) for p in tiny_model.rglob("*") if p.is_file())
    bare = shutil.copytree(tiny_model, tmp_path / "bare")
    (bare / "README.md").unlink()
    for argv, message in (
        (["--model", str(bare), "--repo", "me/tiny"], "no README.md model card"),
        (["--model", str(tmp_path), "--repo", "me/tiny"], "not an mmssl model or export"),
        (["--model", str(tiny_model), "--repo", "tiny"], "namespace/name"),
    ):
        assert cli.main(["push", *argv, "--dry-run"]) == 2 and message in capsys.readouterr().err


def test_push_creates_the_repo_and_uploads_exactly_the_listed_files(tiny_model, monkeypatch):
    pytest.importorskip("huggingface_hub")
    import huggingface_hub

    from mmssl.export.push import files_to_push, push_folder

    calls = {}
    monkeypatch.setattr(
        huggingface_hub.HfApi,
        "create_repo",
        lambda self, repo, **kw: calls.update(create=(repo, kw)) or f"https://hf.co/{repo}",
    )
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.update(upload=kw))
    assert push_folder(tiny_model, "me/tiny", private=True) == "https://hf.co/me/tiny"
    assert calls["create"] == ("me/tiny", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls["upload"]["repo_id"] == "me/tiny" and calls["upload"]["folder_path"] == str(tiny_model)
    assert calls["upload"]["allow_patterns"] == [rel for rel, _ in files_to_push(tiny_model, "me/tiny")]
