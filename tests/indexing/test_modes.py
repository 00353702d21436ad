"""``indexing.modes``: an index's default search mode chosen on validation queries, kept in its manifest."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from indexing import SearchIndex
from indexing.modes import choose_mode, save_search_defaults
from mmssl import cli


@pytest.fixture(scope="module")
def code_index(tiny_model, code_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("modes") / "code-index"
    argv = ["index", "build", "--model", str(tiny_model), "--data", code_corpus, "--lexical", "--out", str(out)]
    assert cli.main([*argv, "--max-items", "300"]) == 0
    return out


def test_the_mode_with_the_best_validation_mrr_is_chosen_and_kept_in_the_manifest(code_index):
    with SearchIndex.load(code_index) as index:
        rows = index.store.get(list(range(0, 300, 3)))
        queries = [rows[i][1]["docstring"] for i in sorted(rows)]
        targets = [{i} for i in sorted(rows)]
        choice = choose_mode(index, queries, targets, weights=(0.5, 2.0), depth=20)
        assert set(choice["mrr"]) == {"dense", "lexical", "hybrid@0.5", "hybrid@2"} and choice["queries"] == 100
        key = choice["mode"] if choice["mode"] != "hybrid" else f"hybrid@{choice['lexical_weight']:g}"
        assert choice["mrr"][key] == max(choice["mrr"].values())
        # the reference: SearchIndex.search in each mode, each hit's rank read off
        for key, mode, weight in (("dense", "dense", 1), ("lexical", "lexical", 1), ("hybrid@2", "hybrid", 2.0)):
            hits = index.search(queries, k=20, mode=mode, lexical_weight=weight)
            slow = [next((1 / h.rank for h in row if h.id in right), 0.0) for row, right in zip(hits, targets)]
            assert choice["mrr"][key] == pytest.approx(sum(slow) / len(slow), abs=1e-4), key
    before = json.loads((code_index / "manifest.json").read_text())
    save_search_defaults(code_index, choice, "every third item: docstring -> its code")
    after = json.loads((code_index / "manifest.json").read_text())
    assert after["search_defaults"] == {**choice, "chosen_on": "every third item: docstring -> its code"}
    assert {k: v for k, v in after.items() if k not in ("search_defaults", "updated")} == {
        k: v for k, v in before.items() if k not in ("search_defaults", "updated")
    }
    with SearchIndex.load(code_index, verify=True) as index:  # the files still match the manifest
        assert index.manifest.search_defaults["mode"] == choice["mode"]


def fake_index(lexical: bool):
    """An index whose dense and BM25 rankings are the same: items 0, 1, 2 ... for every query."""

    def ranking(queries, k):
        return np.ones((len(queries), k)), np.tile(np.arange(k), (len(queries), 1))

    return SimpleNamespace(
        manifest=SimpleNamespace(count=10),
        embed_queries=lambda queries: queries,
        search_vectors=ranking,
        lexical=SimpleNamespace(search=ranking) if lexical else None,
    )


def test_ties_go_to_the_simpler_mode_and_an_index_without_bm25_is_dense():
    choice = choose_mode(fake_index(True), ["q", "r"], [{1}, {5}])
    assert choice["mode"] == "dense" and set(choice["mrr"].values()) == {round((1 / 2 + 1 / 6) / 2, 4)}
    assert set(choose_mode(fake_index(False), ["q"], [{7}])["mrr"]) == {"dense"}
    with pytest.raises(ValueError, match="as many"):
        choose_mode(fake_index(True), ["q", "r"], [{7}])
