"""BM25 over an index's items and the rank fusion of hybrid search."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.lexical import LexicalIndex, reciprocal_rank_fusion


def test_reciprocal_rank_fusion_by_hand():
    dense = np.array([[10, 20, 30]])
    lexical = np.array([[30, 40, -1]])
    scores, ids = reciprocal_rank_fusion([dense, lexical], k=4, c=60)
    # 30: 1/63 + 1/61; 10: 1/61; 40: 1/62; 20: 1/62 (ties by id)
    assert ids[0].tolist() == [30, 10, 20, 40]
    assert scores[0, 0] == pytest.approx(1 / 63 + 1 / 61)
    # weighted: the second list counts a quarter (30: 1/63 + 0.25/61); at weight 0, dense order
    scores, ids = reciprocal_rank_fusion([dense, lexical], k=4, c=60, weights=[1.0, 0.25])
    assert ids[0].tolist() == [30, 10, 20, 40] and scores[0, 0] == pytest.approx(1 / 63 + 0.25 / 61)
    assert scores[0, 3] == pytest.approx(0.25 / 62)
    _, ids = reciprocal_rank_fusion([dense, lexical], k=4, c=60, weights=[1.0, 0.0])
    assert ids[0].tolist()[:3] == [10, 20, 30]
    with pytest.raises(ValueError, match="one non-negative weight"):
        reciprocal_rank_fusion([dense, lexical], k=4, weights=[1.0])


def test_lexical_index_matches_identifier_parts_and_respects_filters(tmp_path):
    texts = ["def parseHTTPHeader(raw): ...", "def load_user(name): ...", "def sort_items(xs): ..."]
    lex = LexicalIndex.build([7, 8, 9], texts)
    lex.save(tmp_path / "lex")
    lex = LexicalIndex.load(tmp_path / "lex")
    _, ids = lex.search(["parse http header", "load the user", "nothing matches zzz"], 2)
    assert ids[0, 0] == 7 and ids[1, 0] == 8 and (ids[2] == -1).all()
    _, ids = lex.search(["parse http header"], 2, allowed=np.array([8, 9]))
    assert 7 not in ids


def test_lexical_index_scores_as_the_eval_bm25_and_orders_ties_by_row(tmp_path):
    """The index's BM25 is ``mmssl.bm25``'s (in float32), an item without tokens included."""
    from mmssl.bm25 import BM25Index, code_search_tokens

    texts = ["def read_csv(path): ...", "", "def read_csv(path): ...", "def write_csv(rows): ...", "read csv"]
    lex = LexicalIndex.build([10, 11, 12, 13, 14], texts)
    lex.save(tmp_path / "lex")
    query = "read csv file"
    scores, ids = LexicalIndex.load(tmp_path / "lex").search([query], 5)
    assert ids[0].tolist() == [14, 10, 12, 13, -1]  # 10 and 12 tie: by row; the empty item matches nothing
    want = BM25Index.from_documents([code_search_tokens(t) for t in texts]).scores([code_search_tokens(query)])
    np.testing.assert_allclose(scores[0, :4], want[0][[4, 0, 2, 3]], rtol=1e-6)
