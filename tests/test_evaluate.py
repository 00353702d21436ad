"""Evaluation metrics against slow references written plainly here (loops), closed-form cases
(perfect and constant scorers), and, for BM25, a float64 transcription of the formula and the
``bm25s`` library (skipped when it is not installed). Integer-valued scores make ties common, so
the ties-count-against-the-model rule is exercised everywhere; ranks are compared exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmssl import evaluate as E
from mmssl.bm25 import BM25Index, code_search_tokens, top_k

# ------------------------------------------------------------------------------------------------
# slow references


def ref_rank(row_scores, pos):
    """Number of candidates scoring at least the positive, by a plain loop."""
    count = 0
    for s in row_scores:
        if s >= row_scores[pos]:
            count += 1
    return count


def ref_codesearchnet(score_matrix, n, chunk_size, seed):
    """The protocol spelled out: shuffle, full chunks only (one chunk of all if n < chunk), loops."""
    perm = [int(i) for i in np.random.default_rng(seed).permutation(n)]
    if n < chunk_size:
        chunks = [perm]
    else:
        chunks = [perm[j * chunk_size : (j + 1) * chunk_size] for j in range(n // chunk_size)]
    all_ranks, chunk_mrrs = [], []
    for chunk in chunks:
        ranks = []
        for q in chunk:
            row = [score_matrix[q][c] for c in chunk]
            ranks.append(ref_rank(row, chunk.index(q)))
        all_ranks += ranks
        chunk_mrrs.append(sum(1.0 / r for r in ranks) / len(ranks))
    return all_ranks, chunk_mrrs, sum(chunk_mrrs) / len(chunk_mrrs)


def ref_full_ranks(score_matrix):
    n = len(score_matrix)
    return [ref_rank([score_matrix[i][j] for j in range(n)], i) for i in range(n)]


def matrix_scores_fn(s):
    return lambda qi, ci: s[np.ix_(qi, ci)]


def int_scores(n, m=None, high=3, seed=0):
    return np.random.default_rng(seed).integers(0, high, size=(n, m or n)).astype(np.float64)


# ------------------------------------------------------------------------------------------------
# CodeSearchNet MRR


@pytest.mark.parametrize("n,chunk,seed", [(250, 50, 0), (257, 50, 3), (40, 100, 1), (60, 7, 5)])
def test_codesearchnet_mrr_matches_loop_reference_with_ties(n, chunk, seed):
    s = int_scores(n, high=3, seed=seed)
    got = E.codesearchnet_mrr(matrix_scores_fn(s), n, chunk_size=chunk, seed=seed)
    ranks, chunk_mrrs, mrr = ref_codesearchnet(s.tolist(), n, chunk, seed)
    assert got.ranks.tolist() == ranks
    assert got.chunk_mrrs == pytest.approx(chunk_mrrs, rel=1e-12)
    assert got.mrr == pytest.approx(mrr, rel=1e-12)
    assert got.mrr == pytest.approx(float(np.mean(1.0 / got.ranks)), rel=1e-12)
    assert got.n_queries_used == len(ranks) and got.n_chunks == len(chunk_mrrs)


def test_drops_last_partial_chunk():
    n = 2500

    def perfect(qi, ci):
        return (qi[:, None] == ci[None, :]).astype(np.float64)

    r = E.codesearchnet_mrr(perfect, n, chunk_size=1000, seed=0)
    assert (r.n_queries_used, r.n_chunks, r.chunk_size, r.short_set) == (2000, 2, 1000, False)
    perm = np.random.default_rng(0).permutation(n)
    np.testing.assert_array_equal(r.query_indices, perm[:2000])
    assert r.mrr == 1.0 and r.chunk_mrrs == (1.0, 1.0) and r.chunk_mrr_std == 0.0


def test_fewer_pairs_than_a_chunk_uses_one_chunk_of_all():
    s = int_scores(300, high=5, seed=2)
    r = E.codesearchnet_mrr(matrix_scores_fn(s), 300, chunk_size=1000)
    assert (r.n_queries_used, r.n_chunks, r.chunk_size, r.requested_chunk_size, r.short_set) == (
        300,
        1,
        300,
        1000,
        True,
    )
    assert sorted(r.query_indices.tolist()) == list(range(300))
    assert r.ranks.tolist() == ref_codesearchnet(s.tolist(), 300, 1000, 0)[0]


def test_constant_scorer_ranks_every_positive_last():
    r = E.codesearchnet_mrr(lambda qi, ci: np.zeros((len(qi), len(ci))), 2100, chunk_size=1000)
    assert (r.ranks == 1000).all() and r.mrr == pytest.approx(1 / 1000)


def test_shuffle_is_deterministic_for_a_seed():
    s = int_scores(120, seed=4)
    a = E.codesearchnet_mrr(matrix_scores_fn(s), 120, chunk_size=25, seed=7)
    b = E.codesearchnet_mrr(matrix_scores_fn(s), 120, chunk_size=25, seed=7)
    c = E.codesearchnet_mrr(matrix_scores_fn(s), 120, chunk_size=25, seed=8)
    np.testing.assert_array_equal(a.query_indices, b.query_indices)
    assert a.chunk_mrrs == b.chunk_mrrs and a.mrr == b.mrr
    assert not np.array_equal(a.query_indices, c.query_indices)
    chunks = E.codesearchnet_chunks(120, 25, 7)
    assert [len(ch) for ch in chunks] == [25] * 4
    np.testing.assert_array_equal(np.concatenate(chunks), a.query_indices)


def int_embeddings(n, d=3, high=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, high, (n, d)).astype(np.float64), rng.integers(0, high, (n, d)).astype(np.float64)


def test_embedding_mrr_equals_scores_fn_and_torch():
    torch = pytest.importorskip("torch")
    q, c = int_embeddings(230, seed=1)  # integer dot products: many exact ties
    got = E.codesearchnet_mrr_embeddings(q, c, chunk_size=50, seed=2)
    ref = ref_codesearchnet((q @ c.T).tolist(), 230, 50, 2)[0]
    assert got.ranks.tolist() == ref
    got_t = E.codesearchnet_mrr_embeddings(torch.from_numpy(q), torch.from_numpy(c), chunk_size=50, seed=2)
    np.testing.assert_array_equal(got_t.ranks, got.ranks)
    half = E.codesearchnet_mrr_embeddings(
        torch.from_numpy(q).half(), torch.from_numpy(c).bfloat16(), chunk_size=50, seed=2
    )
    np.testing.assert_array_equal(half.ranks, got.ranks)  # small ints are exact in half precision


def test_perfect_embeddings_give_mrr_and_recall_one():
    e = np.eye(300)
    assert E.codesearchnet_mrr_embeddings(e, e, chunk_size=100).mrr == 1.0
    assert E.recall_at_k(e, e, ks=(1, 5)) == {"recall@1": 1.0, "recall@5": 1.0}
    assert E.mrr_full(e, e, block_size=7) == 1.0


# ------------------------------------------------------------------------------------------------
# whole-set ranks, recall@k


@pytest.mark.parametrize("block_size", [None, 1, 7, 1000])
def test_recall_and_full_mrr_match_brute_force_with_ties(block_size):
    q, c = int_embeddings(97, d=3, seed=3)
    ref = ref_full_ranks((q @ c.T).tolist())
    ks = (1, 5, 10, 200)
    ranks = E.retrieval_ranks(q, c, block_size=block_size)
    assert ranks.tolist() == ref
    want = {f"recall@{k}": sum(r <= k for r in ref) / len(ref) for k in ks}
    assert E.recall_at_k(q, c, ks, block_size=block_size) == pytest.approx(want, rel=1e-15)
    assert E.mrr_full(q, c, block_size=block_size) == pytest.approx(sum(1 / r for r in ref) / len(ref), rel=1e-12)
    torch = pytest.importorskip("torch")
    t_ranks = E.retrieval_ranks(torch.from_numpy(q), torch.from_numpy(c).float(), block_size=block_size)
    np.testing.assert_array_equal(t_ranks, ranks)


@pytest.mark.parametrize("block_size", [None, 4])
def test_scores_fn_variants_match_brute_force(block_size):
    s = int_scores(53, high=4, seed=6)
    ref = ref_full_ranks(s.tolist())
    fn = matrix_scores_fn(s)
    assert E.retrieval_ranks_from_scores_fn(fn, 53, block_size=block_size).tolist() == ref
    want = {f"recall@{k}": sum(r <= k for r in ref) / 53 for k in (1, 3)}
    assert E.recall_at_k_from_scores_fn(fn, 53, (1, 3), block_size=block_size) == pytest.approx(want, rel=1e-15)
    assert E.mrr_full_from_scores_fn(fn, 53) == pytest.approx(sum(1 / r for r in ref) / 53, rel=1e-12)


def test_constant_scores_recall_counts_ties_against():
    z = np.zeros((20, 4))
    assert E.recall_at_k(z, z, ks=(1, 19, 20)) == {"recall@1": 0.0, "recall@19": 0.0, "recall@20": 1.0}


def test_preconditions():
    good = np.ones((4, 2))
    with pytest.raises(ValueError, match="same shape"):
        E.recall_at_k(good, np.ones((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        E.codesearchnet_mrr(lambda qi, ci: np.full((len(qi), len(ci)), np.nan), 10)
    with pytest.raises(ValueError, match="scores_fn must return"):
        E.codesearchnet_mrr(lambda qi, ci: np.zeros((len(qi), 3)), 10)
    with pytest.raises(ValueError, match="ks"):
        E.recall_at_k(good, good, ks=(0,))
    with pytest.raises(ValueError, match="positive int"):
        E.codesearchnet_mrr(lambda qi, ci: 0, 0)


# ------------------------------------------------------------------------------------------------
# BM25

CORPUS = [
    "def parse_http_header(line): return line.split(':')",
    "def add(a, b): return a + b",
    "class UserAccount: def getUserName(self): return self.user_name",
    "def read_json_file(path): with open(path) as f: return json.load(f)",
    "def add_many(items): return sum(items) + add(0, 0)",
    "",
]


def ref_bm25(query, docs, k1=1.2, b=0.75):
    """The formula term by term over the tokenized collection, float64."""
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    out = []
    for d in docs:
        total = 0.0
        for t in query:
            df = sum(1 for dd in docs if t in dd)
            tf = d.count(t)
            if tf == 0:  # an absent term adds nothing (and 0/0 for an empty document with b = 1)
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            total += idf * tf / (tf + k1 * (1 - b + b * len(d) / avgdl))
        out.append(total)
    return out


@pytest.mark.parametrize("k1,b", [(1.2, 0.75), (0.9, 0.4), (2.0, 1.0)])
def test_bm25_matches_formula_transcription(k1, b):
    docs = [code_search_tokens(c) for c in CORPUS]
    queries = [["add", "add", "return"], ["user", "name", "nothing_here"], ["json", "file", "path"], ["zzz"], []]
    index = BM25Index.from_documents(docs, k1=k1, b=b)
    got = index.scores(queries)
    want = np.array([ref_bm25(q, docs, k1, b) for q in queries])
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    # a subset keeps the whole collection's statistics: its columns equal the full columns
    sub = [4, 0, 2]
    np.testing.assert_allclose(index.scores(queries, sub), got[:, sub], rtol=0, atol=0)
    fn = index.scores_fn(queries)
    np.testing.assert_array_equal(fn(np.array([2, 0]), np.array(sub)), got[np.ix_([2, 0], sub)])


def test_bm25_agrees_with_bm25s_lucene():
    bm25s = pytest.importorskip("bm25s")
    rng = np.random.default_rng(0)
    words = [f"t{i}" for i in range(40)]
    docs = [list(rng.choice(words, rng.integers(1, 30))) for _ in range(60)]
    queries = [list(rng.choice(words, rng.integers(1, 6))) for _ in range(15)]
    peer = bm25s.BM25(k1=1.2, b=0.75, method="lucene", dtype="float64")
    peer.index(docs, show_progress=False)
    want = np.stack([peer.get_scores(q) for q in queries])
    got = BM25Index.from_documents(docs).scores(queries)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    # mmssl.bm25 is bm25s: the slow transcription of the formula is the independent check here
    # (random documents, queries with repeated terms)
    ref = np.array([ref_bm25(q, docs) for q in queries])
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-15)


def test_bm25_exact_token_query_ranks_its_document_first():
    docs = [code_search_tokens(c) for c in CORPUS]
    index = BM25Index.from_documents(docs)
    queries = [code_search_tokens(q) for q in ["parse HTTP header", "read json file", "get user name"]]
    targets = [0, 3, 2]
    s = index.scores(queries)
    assert s.argmax(1).tolist() == targets
    assert [ref_rank(s[i].tolist(), t) for i, t in enumerate(targets)] == [1, 1, 1]


def test_bm25_plugs_into_codesearchnet_mrr():
    docs = [code_search_tokens(f"def func_{i}(value_{i}): return helper{i}(value_{i})") for i in range(30)]
    queries = [code_search_tokens(f"func {i}") for i in range(30)]
    index = BM25Index.from_documents(docs)
    r = E.codesearchnet_mrr(index.scores_fn(queries), 30, chunk_size=10)
    assert r.mrr == 1.0 and r.n_chunks == 3
    assert E.recall_at_k_from_scores_fn(index.scores_fn(queries), 30, (1,)) == {"recall@1": 1.0}


def test_bm25_top_k_orders_equal_scores_by_document():
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0, 0.0], [0.0, 1.0, 5.0, 0.5, 2.0, 5.0]])
    s, cols = top_k(scores, 4)
    assert cols.tolist() == [[1, 2, 4, 3], [2, 5, 4, 1]] and s[0].tolist() == [3.0, 3.0, 3.0, 2.0]
    assert top_k(scores, 10)[1].tolist() == [[1, 2, 4, 3, 0, 5], [2, 5, 4, 1, 3, 0]]  # k >= N: all


def test_bm25_collection_without_tokens_scores_zero():
    index = BM25Index.from_documents([[], []])
    np.testing.assert_array_equal(index.scores([["a"], []]), np.zeros((2, 2)))


@pytest.mark.parametrize(
    "text,tokens",
    [
        (
            "def get_user_ID(self): return self.userName",
            ["def", "get", "user", "id", "self", "return", "self", "user", "name"],
        ),
        ("HTTPServer parseXML2Json __init__", ["http", "server", "parse", "xml", "2", "json", "init"]),
        ("a->b; x += 1 // ok", ["a", "b", "x", "1", "ok"]),
        (["getValue", "(", ")", "MAX_SIZE"], ["get", "value", "max", "size"]),
        ("größe_berechnen", ["größe", "berechnen"]),
        ("", []),
    ],
)
def test_code_search_tokens(text, tokens):
    assert code_search_tokens(text) == tokens


# ------------------------------------------------------------------------------------------------
# zero-shot and linear probe


def test_zero_shot_separable_and_against_loops():
    rng = np.random.default_rng(0)
    protos = np.linalg.qr(rng.normal(size=(16, 6)))[0].T  # (C=6, D=16), orthonormal rows
    labels = rng.integers(0, 6, 200)
    images = protos[labels] + 0.05 * rng.normal(size=(200, 16))
    assert E.zero_shot_accuracy(images, protos, labels) == {"top1": 1.0, "top5": 1.0}
    # ties with integer scores, against a loop
    x, w = rng.integers(0, 2, (50, 3)).astype(float), rng.integers(0, 2, (7, 3)).astype(float)
    y = rng.integers(0, 7, 50)
    ranks = [ref_rank((w @ x[i]).tolist(), y[i]) for i in range(50)]
    want = {f"top{k}": sum(r <= k for r in ranks) / 50 for k in (1, 2, 5)}
    assert E.zero_shot_accuracy(x, w, y, ks=(1, 2, 5), block_size=8) == pytest.approx(want, rel=1e-15)
    with pytest.raises(ValueError, match="labels"):
        E.zero_shot_accuracy(x, w, np.full(50, 7))


def test_linear_probe_separable_and_deterministic():
    rng = np.random.default_rng(0)
    centers = 4.0 * np.eye(3, 8)  # (3 classes, D=8)
    ytr, yte = rng.integers(0, 3, 150), rng.integers(0, 3, 60)
    xtr = centers[ytr] + 0.5 * rng.normal(size=(150, 8))
    xte = centers[yte] + 0.5 * rng.normal(size=(60, 8))
    acc = E.linear_probe(xtr, ytr, xte, yte, C=1.0, max_iter=500, seed=0)
    assert acc == 1.0
    shuffled = rng.permutation(ytr)  # labels unrelated to features: no better than chance-ish
    a1 = E.linear_probe(xtr, shuffled, xte, yte, C=1.0, max_iter=500, seed=0)
    assert a1 == E.linear_probe(xtr, shuffled, xte, yte, C=1.0, max_iter=500, seed=0)
    assert a1 < 0.8


def test_embedding_geometry_isotropic_collapsed_and_low_rank():
    rng = np.random.default_rng(0)
    iso = E.embedding_geometry(rng.standard_normal((4000, 16)))
    assert abs(iso["anisotropy"]) < 0.01
    assert 14.5 < iso["effective_rank"] <= 16
    assert iso["std_mean"] == pytest.approx(1 / math.sqrt(16), rel=0.05)
    # One common direction plus a little noise: cosines near 1, per-dimension spread near 0.
    common = rng.standard_normal(16)
    near = E.embedding_geometry(common + 0.01 * rng.standard_normal((500, 16)))
    assert near["anisotropy"] > 0.99 and near["std_mean"] < 0.01
    # Spread over exactly 3 equal orthogonal directions: effective rank 3.
    basis = np.linalg.qr(rng.standard_normal((16, 3)))[0].T  # (3, 16) orthonormal rows
    signs = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)  # mean 0, equal spread
    assert E.embedding_geometry(signs @ basis)["effective_rank"] == pytest.approx(3.0, abs=1e-9)
    assert E.embedding_geometry(np.ones((5, 4)))["effective_rank"] == 0.0


def test_embedding_geometry_anisotropy_matches_pairwise_loop_and_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 5)) + 0.7
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref = np.mean([u[i] @ u[j] for i in range(30) for j in range(30) if i != j])
    got = E.embedding_geometry(x)
    assert got["anisotropy"] == pytest.approx(ref, abs=1e-12)
    assert E.embedding_geometry(torch.tensor(x, dtype=torch.float32))["anisotropy"] == pytest.approx(ref, abs=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        E.embedding_geometry(x[:1])
    with pytest.raises(ValueError, match="NaN"):
        E.embedding_geometry(np.full((3, 2), np.nan))
