"""Matryoshka through the commands: `mmssl train --matryoshka` records its sizes, `mmssl index build
--dim` indexes a prefix (queries and added items cut the same way), `mmssl eval --dims` scores each."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmssl import cli


@pytest.fixture(scope="module")
def nested_model(code_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("matryoshka") / "run"
    argv = ["train", "--train", code_corpus, "--out", str(out), "--preset", "tiny", "--vocab-size", "300"]
    argv += ["--batch-size", "32", "--max-steps", "20", "--eval-every", "0", "--embed-dim", "16", "--device", "cpu"]
    argv += ["--lr", "2e-3", "--warmup-steps", "3", "--matryoshka", "4,16,8", "--matryoshka-weights", "1,1,0.5"]
    assert cli.main(argv) == 0
    return out / "final"


def test_train_records_its_sizes_and_an_index_of_a_prefix_searches_and_adds_at_that_size(
    nested_model, code_corpus, tmp_path, capsys
):
    from indexing import SearchIndex
    from mmssl.matryoshka import truncate
    from mmssl.models import DualEncoder

    config = json.loads((nested_model / "dual_encoder.json").read_text())
    assert config["matryoshka_dims"] == [16, 8, 4] and config["embed_dim"] == 16
    out = tmp_path / "idx8"
    argv = ["index", "build", "--model", str(nested_model), "--data", code_corpus, "--out", str(out)]
    assert cli.main([*argv, "--dim", "8", "--max-items", "300"]) == 0
    model = DualEncoder.from_pretrained(nested_model).eval()
    with SearchIndex.load(out) as index:
        assert index.manifest.dim == 8
        assert index.manifest.embedding == {"model_dim": 16, "dim": 8, "matryoshka_dims": [16, 8, 4]}
        assert index.info()["embedding"]["dim"] == 8
        from demo.panels import about
        from demo.search import LoadedIndex

        assert "8-d inner product (the first 8 of the model's 16 dims)" in about(LoadedIndex(out.name, out, index))
        rows = index.store.get([0, 1, 2])
        query = rows[1][1]["docstring"]
        hits = index.search([query], k=3)[0]
        # the slow reference: embed at full size, cut, renormalize, inner product with every item's cut code
        codes = [index.store.get([i])[i][0] for i in range(300)]
        xq = truncate(model.embed("text", [query]).numpy(), 8)
        xb = truncate(model.embed("code", codes).numpy(), 8)
        best = np.argsort(-(xb @ xq[0]))[:3]
        assert [h.id for h in hits] == best.tolist()
        assert np.allclose([h.score for h in hits], (xb @ xq[0])[best], atol=1e-5)
    extra = tmp_path / "extra.jsonl"
    record = {"repo": "new", "path": "new.py", "func_name": "load_data", "code": "def load_data(x):\n    return x",
              "docstring": "Load the data given as input.", "partition": "test"}  # fmt: skip
    extra.write_text(json.dumps(record) + "\n")
    assert cli.main(["index", "add", "--index", str(out), "--data", str(extra)]) == 0
    with SearchIndex.load(out) as index:
        assert index.manifest.count == 301
        assert index.search(["Load the data given as input."], k=1, where={"repo": "new"})[0][0].text == record["code"]
    capsys.readouterr()
    assert cli.main([*argv[:-2], "--out", str(tmp_path / "idx5"), "--dim", "5", "--max-items", "50"]) == 0
    assert "not trained for 5 dims" in capsys.readouterr().err
    assert cli.main([*argv[:-2], "--out", str(tmp_path / "idx99"), "--dim", "99", "--max-items", "50"]) == 2


def test_eval_scores_each_prefix_from_one_embedding(nested_model, code_corpus, capsys):
    argv = ["eval", "--model", str(nested_model), "--data", code_corpus, "--partition", "", "--max-pairs", "200"]
    assert cli.main([*argv, "--dims", "16,8,4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["baselines"]) == {"model@8", "model@4"}
    from mmssl.commands import EvalConfig
    from mmssl.matryoshka import PrefixEncoder
    from mmssl.models import DualEncoder
    from mmssl.recipes.text_code import RECIPE

    pairs = RECIPE.load_pairs(code_corpus, None).sample(200, EvalConfig.seed)
    model = DualEncoder.from_pretrained(nested_model).eval()
    alone = RECIPE.evaluate(PrefixEncoder(model, 4), pairs)  # no shared cache: the reference
    assert result["baselines"]["model@4"]["mrr"] == pytest.approx(alone["mrr"], abs=1e-6)
    assert cli.main([*argv, "--dims", "32"]) == 2
    assert "--dims '32': 32 exceeds the embedding size 16" in capsys.readouterr().err
