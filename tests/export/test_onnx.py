"""``mmssl export --format onnx`` and ``OnnxEncoder``: parity with PyTorch, int8, the index layer on an
export, a query path without torch, and bad export directories."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

from mmssl import cli

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def corpus_texts(code_corpus):
    records = [json.loads(line) for line in gzip.open(code_corpus, "rt")]
    return [r["docstring"] for r in records[:200]], [r["code"] for r in records[:200]]


@pytest.fixture(scope="module")
def exports(tiny_model, tmp_path_factory):
    """The tiny text-code model exported twice: fp32 and int8."""
    root = tmp_path_factory.mktemp("onnx")
    for name, extra in (("fp32", []), ("int8", ["--quantize", "int8"])):
        assert cli.main(["export", "--model", str(tiny_model), "--out", str(root / name), *extra]) == 0
    return root / "fp32", root / "int8"


def test_an_fp32_export_embeds_as_the_model_does_and_tokenizes_as_its_towers_do(tiny_model, exports, corpus_texts):
    from mmssl.export.onnx_encoder import OnnxEncoder
    from mmssl.models import DualEncoder

    model = DualEncoder.from_pretrained(tiny_model).eval()
    encoder = OnnxEncoder.from_dir(exports[0])
    assert encoder.config.modalities == model.config.modalities and encoder.config.embed_dim == model.config.embed_dim
    for modality, texts in zip(("text", "code"), corpus_texts):
        ids = encoder.tokenize(modality, texts[:50])
        want = model.tokenize(modality, texts[:50])
        assert np.array_equal(ids["input_ids"], want["input_ids"].numpy())
        assert np.array_equal(ids["attention_mask"], want["attention_mask"].numpy())
        got, ref = encoder.embed(modality, texts, batch_size=64), model.embed(modality, texts).numpy()
        assert np.abs(got - ref).max() <= 1e-4 and (got * ref).sum(1).min() >= 0.9999
    long = ["def f():\n" + "    x = 1\n" * 5000]  # truncated at the tower's max length, as TextPrep does
    assert np.abs(encoder.embed("code", long) - model.embed("code", long).numpy()).max() <= 1e-4


def test_an_int8_export_is_close_smaller_and_says_what_it_is(tiny_model, exports, corpus_texts):
    from mmssl.export.onnx_encoder import OnnxEncoder, OnnxEncoderConfig
    from mmssl.models import DualEncoder

    fp32, int8 = exports
    config = OnnxEncoderConfig.load(int8)
    assert config.quantize == "int8" and OnnxEncoderConfig.load(fp32).quantize is None
    assert all(p["min_cosine"] >= 0.95 for p in config.parity.values())
    assert (int8 / "code.onnx").stat().st_size < (fp32 / "code.onnx").stat().st_size
    model = DualEncoder.from_pretrained(tiny_model).eval()
    got = OnnxEncoder.from_dir(int8).embed("code", corpus_texts[1])
    ref = model.embed("code", corpus_texts[1]).numpy()
    cosine = (got * ref).sum(1)
    assert cosine.mean() >= 0.97 and not np.allclose(got, ref, atol=1e-4)  # close, but not the same


def test_an_index_built_on_an_export_searches_without_importing_torch(exports, code_corpus, tmp_path):
    out = tmp_path / "index"
    argv = ["index", "build", "--model", str(exports[1]), "--data", code_corpus, "--max-items", "300"]
    assert cli.main([*argv, "--lexical", "--out", str(out)]) == 0
    script = (
        "import sys; from indexing import SearchIndex\n"
        f"index = SearchIndex.load({str(out)!r})\n"
        "hits = index.search(['Return the sum of the numbers.'], k=5, mode='hybrid')[0]\n"
        "print(len(hits), type(index.model()).__name__, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["5", "OnnxEncoder", "False"]


def test_an_index_of_the_model_is_searched_by_its_fp32_export_alike_and_refuses_the_int8_one(
    tiny_model, exports, code_corpus, tmp_path
):
    from indexing import IndexDirError, SearchIndex

    out = tmp_path / "index"
    argv = ["index", "build", "--model", str(tiny_model), "--data", code_corpus, "--max-items", "300"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    queries = ["Return the sum of the numbers.", "Parse the given text.", "Open the file."]
    with SearchIndex.load(out) as index:
        want = index.search(queries, k=10)
    with SearchIndex.load(out) as index:
        index.model(str(exports[0]))
        got = index.search(queries, k=10)
    assert [[h.id for h in row] for row in got] == [[h.id for h in row] for row in want]
    with SearchIndex.load(out) as index, pytest.raises(IndexDirError, match="not the model this index was built"):
        index.model(str(exports[1]))


def test_export_refuses_an_existing_out_and_damaged_exports_are_named(tiny_model, exports, tmp_path, capsys):
    from mmssl.export.onnx_encoder import CONFIG_NAME, OnnxEncoder

    assert cli.main(["export", "--model", str(tiny_model), "--out", str(exports[0])]) == 2
    assert "already holds an export; pass --overwrite" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's own folder")
    argv = ["export", "--model", str(tiny_model), "--out", str(tmp_path / "mine"), "--overwrite"]
    assert cli.main(argv) == 2 and (tmp_path / "mine" / "notes.txt").is_file()
    assert "does not hold an export" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    config = json.loads((exports[0] / CONFIG_NAME).read_text())
    (broken / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match=r"broken/text\.onnx: missing from the ONNX export"):
        OnnxEncoder.from_dir(broken)
    del config["towers"]["code"]
    (broken / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"onnx_encoder\.json: field 'towers' must hold both modalities"):
        OnnxEncoder.from_dir(broken)


def test_minilm_exports_with_its_embeddings_intact(tmp_path):
    """The real pretrained MiniLM (a shared tower: one graph, two truncation lengths)."""
    from mmssl.export.onnx import export_onnx
    from mmssl.export.onnx_encoder import OnnxEncoder
    from mmssl.recipes.text_code_eval import sentence_encoder

    model = sentence_encoder("minilm", "cpu").eval()
    model.save_pretrained(tmp_path / "minilm")
    config = export_onnx(tmp_path / "minilm", tmp_path / "onnx")
    assert sorted(p.name for p in (tmp_path / "onnx").glob("*.onnx")) == ["text.onnx"]
    assert config.towers["text"].graph == config.towers["code"].graph
    texts = ["how to read a json file", "def read(path):\n    with open(path) as f:\n        return json.load(f)"]
    got = OnnxEncoder.from_dir(tmp_path / "onnx").embed("code", texts)
    assert np.abs(got - model.embed("code", texts).numpy()).max() <= 1e-4
