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


def test_the_weak_match_threshold_is_where_queries_find_their_items_half_as_often():
    from indexing.modes import WEAK_SHARES, weak_match

    rng = np.random.default_rng(0)
    top = rng.uniform(0, 1, 400)
    found = top > 0.3  # below 0.3 nothing is found
    weak = weak_match(top, found)
    assert weak is not None and weak["queries"] == 400
    assert weak["found"] == pytest.approx(found.mean(), abs=1e-4)
    # the slow reference: every candidate threshold tried by hand, the highest that separates kept
    overall, kept = found.mean(), None
    for share in WEAK_SHARES:
        t = np.quantile(top, share)
        under = [f for s, f in zip(top, found) if s < t]
        if len(under) >= 10 and sum(under) / len(under) <= overall / 2:
            kept = (t, sum(under) / len(under), len(under) / 400)
    assert weak["below"] == pytest.approx(kept[0], abs=1e-6) and 0.3 < weak["below"] < 0.5
    assert weak["found_below"] == pytest.approx(kept[1], abs=1e-4) and weak["share"] == pytest.approx(kept[2])
    assert weak_match(top, rng.uniform(0, 1, 400) > 0.3) is None  # scores that say nothing: no cue
    assert weak_match(top[:15], found[:15]) is None  # too few queries
    assert weak_match(top, np.zeros(400, dtype=bool)) is None


def test_the_weak_note_holds_for_its_own_mode_and_hybrid_weight_only():
    from indexing.modes import weak_note

    defaults = {
        "lexical_weight": 0.5,
        "weak": {"dense": {"below": 0.4, "found_below": 0.2, "found": 0.8, "share": 0.1, "queries": 500},
                 "hybrid": {"below": 0.02, "found_below": 0.1, "found": 0.9, "share": 0.1, "queries": 500},
                 "lexical": None},
    }  # fmt: skip
    note = weak_note(defaults, "dense", 0.5, 0.31)
    assert note.startswith("Weak match") and "20%" in note and "80%" in note
    assert weak_note(defaults, "dense", 0.5, 0.41) == ""
    assert weak_note(defaults, "hybrid", 0.5, 0.01) != "" and weak_note(defaults, "hybrid", 2.0, 0.01) == ""
    assert weak_note(defaults, "lexical", 0.5, 0.0) == "" and weak_note({}, "dense", 1.0, 0.0) == ""
    assert weak_note(defaults, "dense", 0.5, None) == ""


def test_choose_mode_calibrates_each_mode_on_the_same_queries(code_index):
    with SearchIndex.load(code_index) as index:
        rows = index.store.get(list(range(0, 300, 2)))
        queries = [rows[i][1]["docstring"] for i in sorted(rows)]
        choice = choose_mode(index, queries, [{i} for i in sorted(rows)], weights=(0.5, 2.0), depth=20)
        assert set(choice["weak"]) == {"dense", "lexical", "hybrid"}
        for mode, weak in choice["weak"].items():
            if weak is not None:  # its threshold is a top score a search in that mode returns
                weight = choice["lexical_weight"]
                tops = [row[0].score for row in index.search(queries, k=1, mode=mode, lexical_weight=weight)]
                assert min(tops) <= weak["below"] <= max(tops), mode
                assert weak["found_below"] <= weak["found"] / 2
