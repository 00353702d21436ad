"""``mmssl export --format sentence-transformers``: a directory ``SentenceTransformer`` loads offline
that embeds as ``DualEncoder.embed`` does, for two towers (a Router) and for one shared tower."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from mmssl import cli

pytest.importorskip("sentence_transformers")


def cosines(got, want) -> np.ndarray:
    return (np.asarray(got) * np.asarray(want)).sum(1)


def test_two_towers_become_query_and_document_routes_that_embed_as_mmssl(tiny_model, code_corpus, tmp_path):
    from sentence_transformers import SentenceTransformer

    from mmssl.models import DualEncoder

    records = [json.loads(line) for line in gzip.open(code_corpus, "rt")][:200]
    queries, codes = [r["docstring"] for r in records], [r["code"] for r in records]
    out = tmp_path / "st"
    assert cli.main(["export", "--model", str(tiny_model), "--out", str(out), "--format", "sentence-transformers"]) == 0
    model = DualEncoder.from_pretrained(tiny_model).eval()
    st = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    assert cosines(st.encode_query(queries), model.embed("text", queries)).min() >= 0.9999
    assert cosines(st.encode_document(codes), model.embed("code", codes)).min() >= 0.9999
    # the two towers differ: the query route is not the document route
    assert cosines(st.encode_query(codes[:20]), model.embed("code", codes[:20])).min() < 0.99


def test_minilm_as_one_shared_pipeline_and_refusals(tmp_path, capsys):
    from sentence_transformers import SentenceTransformer

    from mmssl.recipes.text_code_eval import sentence_encoder

    model = sentence_encoder("minilm", "cpu").eval()
    model.save_pretrained(tmp_path / "minilm")
    out = tmp_path / "st"
    assert (
        cli.main(
            ["export", "--model", str(tmp_path / "minilm"), "--out", str(out), "--format", "sentence-transformers"]
        )
        == 0
    )
    st = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    texts = ["how to read a json file", "def read(path):\n    with open(path) as f:\n        return json.load(f)"]
    assert cosines(st.encode(texts), model.embed("code", texts)).min() >= 0.9999
    assert st.get_embedding_dimension() == 384
    argv = ["export", "--model", str(tmp_path / "minilm"), "--out", str(tmp_path / "x"), "--quantize", "int8"]
    assert cli.main([*argv, "--format", "sentence-transformers"]) == 2
    assert "--quantize: only with --format onnx" in capsys.readouterr().err
