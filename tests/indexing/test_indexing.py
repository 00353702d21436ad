"""The indexing layer: index choice, recall against exact search, persistence, damage, updates, search modes."""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import indexing.index
from indexing import ArrayShards, IndexDirError, SearchIndex, add_items, build_index_dir, choose_index, remove_items
from indexing.embed import ShardDir, embed_collection
from indexing.lexical import LexicalIndex, reciprocal_rank_fusion
from indexing.plan import memory_estimate, parse_budget
from indexing.store import Manifest
from indexing.tune import exact_neighbours, recall_at
from mmssl import cli
from mmssl.io import model_fingerprint


def clustered(n: int, d: int, centers: int = 50, seed: int = 0) -> np.ndarray:
    """Unit vectors from a Gaussian mixture (what embeddings look like), not uniform noise."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(centers, d))
    x = mu[rng.integers(0, centers, n)] + 0.35 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(xq, xb, ids, k):
    s = xq @ xb.T
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, top, axis=1), ids[top]


def items_for(ids):
    texts = [f"def func_{i}(x):\n    return compute_value_{i}(x)" for i in ids]
    payloads = [{"repo": f"repo{i % 7}", "path": f"mod{i}.py"} for i in ids]
    return ids, texts, payloads


# ---- choice --------------------------------------------------------------------------------------


def test_choice_follows_size_and_memory_budget():
    assert choose_index(5_000, 256).index_type == "flat"
    medium = choose_index(1_000_000, 256)
    assert medium.index_type == "ivf_fastscan" and medium.factory == "IVF2048,PQ128x4fs,RFlat"
    # exact vectors fit, the fast-scan codes beside them do not: plain IVF-Flat
    flat_mem = memory_estimate("ivf_flat", 1_000_000, 256, 2048)
    assert flat_mem < medium.memory_bytes
    assert choose_index(1_000_000, 256, flat_mem).index_type == "ivf_flat"
    # smaller codes of the same vectors before PQ: float16, int8, then binary (rescored from disk)
    for dtype, factory in (("float16", "IVF2048,SQfp16"), ("int8", "IVF2048,SQ8"), ("binary", "IVF2048,BinarySign")):
        need = memory_estimate("ivf_flat", 1_000_000, 256, 2048, dtype=dtype)
        plan = choose_index(1_000_000, 256, need)
        assert (plan.embedding_dtype, plan.factory, plan.index_type) == (dtype, factory, "ivf_flat")
        assert plan.memory_bytes == need
    assert choose_index(1_000_000, 256, 200 * 2**20).embedding_dtype == "binary"  # int8 needs ~280 MB
    # PQ when not even the binary codes fit, or when the vectors must stay float32
    assert choose_index(1_000_000, 256, 40 * 2**20).index_type == "ivf_pq"
    budget = 200 * 2**20  # exact vectors need ~1 GiB
    tight = choose_index(1_000_000, 256, budget, embedding_dtype="float32")
    assert tight.index_type == "ivf_pq" and tight.memory_bytes <= budget
    m = int(tight.factory.split("PQ")[1].removesuffix("np"))
    assert 256 % m == 0 and memory_estimate("ivf_pq", 1_000_000, 256, tight.nlist, m) <= budget
    assert (
        memory_estimate("ivf_pq", 1_000_000, 256, tight.nlist, 2 * m) > budget or 2 * m > 128
    )  # the largest that fits
    assert choose_index(1_000_000, 256, budget, opq=True, embedding_dtype="float32").factory.startswith(f"OPQ{m},")
    assert choose_index(1_000_000, 256, 20 * 2**20).ondisk  # nothing fits in 20 MiB: lists on disk
    assert choose_index(1_000_000, 256, factory="IVF256,SQ8").factory == "IVF256,SQ8"
    with pytest.raises(ValueError, match="index type"):
        choose_index(10, 4, index_type="lsh")
    assert parse_budget("512M") == 512 * 2**20 and parse_budget("2GB") == 2 * 2**30 and parse_budget(None) is None
    with pytest.raises(ValueError, match="memory budget"):
        parse_budget("lots")


# ---- building and recall -------------------------------------------------------------------------


def test_adds_are_grouped_into_few_large_calls():
    from indexing.build import grouped

    xb = clustered(1000, 8)
    shards = ArrayShards(xb, np.arange(1000) + 5, shard_size=150)  # 7 shards, 4,800 bytes each (last 3,200)
    groups = list(grouped(shards, max_bytes=3 * 4800))
    assert [len(ids) for ids, _ in groups] == [450, 450, 100]
    np.testing.assert_array_equal(np.concatenate([ids for ids, _ in groups]), np.arange(1000) + 5)
    np.testing.assert_array_equal(np.concatenate([x for _, x in groups]), xb)
    assert len(list(grouped(shards))) == 1


def test_flat_index_equals_brute_force_and_round_trips(tmp_path):
    xb = clustered(2000, 32)
    ids = np.arange(1000, 3000, dtype=np.int64)
    xq = clustered(20, 32, seed=1)
    manifest = build_index_dir(tmp_path / "idx", ArrayShards(xb, ids), items_for(ids))
    assert manifest.index_type == "flat" and manifest.count == 2000 and manifest.next_id == 3000
    with SearchIndex.load(tmp_path / "idx") as index:
        scores, found = index.search_vectors(xq, 5)
    ref_s, ref_i = brute_force(xq, xb, ids, 5)
    np.testing.assert_array_equal(found, ref_i)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-5, atol=1e-5)
    saved = Manifest.from_file(tmp_path / "idx" / "manifest.json")
    assert saved == manifest and saved.files["index.faiss"].bytes > 2000 * 32 * 4


@pytest.mark.parametrize("index_type", ["auto", "ivf_flat"])
def test_ivf_index_reaches_its_target_recall_on_held_out_queries(tmp_path, index_type):
    xb = clustered(30_000, 32)
    shards = ArrayShards(xb, shard_size=7_000)
    tune_q = clustered(500, 32, seed=2)
    manifest = build_index_dir(tmp_path / "idx", shards, index_type=index_type, tune_queries=tune_q)
    assert manifest.index_type == ("ivf_fastscan" if index_type == "auto" else index_type)
    assert "nprobe" in manifest.search_params
    nprobe = manifest.search_params["nprobe"]
    assert manifest.tuning["reached"] and manifest.tuning["recall"] >= 0.95
    xq = clustered(400, 32, seed=3)  # other held-out queries than the tuning ones
    exact = exact_neighbours(xq, shards, 10)
    with SearchIndex.load(tmp_path / "idx") as index:
        _, found = index.search_vectors(xq, 10)
        assert recall_at(found, exact) >= 0.93  # the target, minus the noise of another query sample
        # and fewer lists than all of them: it is an approximate index, not a slow exact one
        assert nprobe < int(manifest.factory.split(",")[0][3:])


def test_pq_index_under_a_tight_budget_reports_what_it_reaches(tmp_path):
    xb = clustered(12_000, 32)
    budget = memory_estimate("ivf_flat", 12_000, 32, 128) // 3
    manifest = build_index_dir(tmp_path / "idx", ArrayShards(xb), memory_budget=budget, embedding_dtype="float32")
    assert manifest.index_type == "ivf_pq"
    t = manifest.tuning
    recalls = [r for _, r in t["curve"]]
    assert t["recall"] == pytest.approx(max(recalls), abs=0.006) or t["reached"]


def test_ondisk_index_matches_the_in_memory_one(tmp_path):
    xb = clustered(20_000, 16)
    shards = ArrayShards(xb, shard_size=6_000)
    xq = clustered(50, 16, seed=5)
    build_index_dir(tmp_path / "mem", shards, index_type="ivf_flat")
    on = build_index_dir(tmp_path / "disk", shards, ondisk=True)
    assert on.ondisk and (tmp_path / "disk" / "ivf.ondisk").stat().st_size >= 20_000 * 16 * 4
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "disk", moved)  # the lists are found next to the index, wherever it moved
    with SearchIndex.load(tmp_path / "mem") as a, SearchIndex.load(moved) as b:
        a.manifest = dataclasses.replace(a.manifest, search_params={"nprobe": 8})
        b.manifest = dataclasses.replace(b.manifest, search_params={"nprobe": 8})
        np.testing.assert_array_equal(a.search_vectors(xq, 10)[1], b.search_vectors(xq, 10)[1])


def test_hnsw_and_factory_overrides(tmp_path):
    xb = clustered(3000, 16)
    m = build_index_dir(tmp_path / "h", ArrayShards(xb), index_type="hnsw", target_recall=0.99)
    assert m.index_type == "hnsw" and "efSearch" in m.search_params and m.tuning["recall"] >= 0.99
    f = build_index_dir(tmp_path / "f", ArrayShards(xb), factory="IVF16,SQ8")
    assert f.factory == "IVF16,SQ8" and "nprobe" in f.search_params
    with pytest.raises(ValueError, match="factory string"):
        build_index_dir(tmp_path / "bad", ArrayShards(xb), factory="NotAnIndex")
    assert not (tmp_path / "bad").exists()


# ---- persistence and damage ----------------------------------------------------------------------


@pytest.fixture
def small_index(tmp_path):
    xb = clustered(1500, 16)
    ids = np.arange(1500, dtype=np.int64)
    build_index_dir(tmp_path / "idx", ArrayShards(xb, ids), items_for(ids), lexical=True)
    return tmp_path / "idx", xb


def test_damaged_or_mismatched_directories_fail_with_the_file_named(small_index, tmp_path):
    path, _ = small_index
    faiss_file = path / "index.faiss"
    good = faiss_file.read_bytes()
    faiss_file.write_bytes(good[: len(good) // 2])
    with pytest.raises(IndexDirError, match=r"index\.faiss.*truncated"):
        SearchIndex.load(path)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    faiss_file.write_bytes(bytes(flipped))
    with pytest.raises(IndexDirError, match=r"index\.faiss.*sha256"):
        SearchIndex.load(path, verify=True)  # the full check; by default only sizes and structure
    faiss_file.write_bytes(good)
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(IndexDirError, match="format_version 99"):
        SearchIndex.load(path)
    (path / "manifest.json").write_text(json.dumps({**manifest, "dim": 17}))
    with pytest.raises(IndexDirError, match="dimension 16"):
        SearchIndex.load(path)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with SearchIndex.load(path) as index:
        with pytest.raises(ValueError, match="dim 8"):
            index.search_vectors(np.ones((1, 8), np.float32))
    with pytest.raises(FileNotFoundError, match="not an mmssl index"):
        SearchIndex.load(tmp_path)


def test_build_refuses_to_clobber(small_index, tmp_path):
    path, xb = small_index
    before = (path / "manifest.json").read_text()
    with pytest.raises(ValueError, match="already holds an index; pass --overwrite"):
        build_index_dir(path, ArrayShards(xb))
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match="does not hold an index; choose another path"):
        build_index_dir(other, ArrayShards(xb))
    assert (path / "manifest.json").read_text() == before and (other / "todo.txt").read_text() == "mine"
    build_index_dir(path, ArrayShards(xb[:100]), overwrite=True)
    assert Manifest.from_file(path / "manifest.json").count == 100


# ---- updates and filters -------------------------------------------------------------------------


def test_add_and_remove_update_index_metadata_and_lexical_side(small_index):
    path, xb = small_index
    new = clustered(10, 16, seed=9)
    ids = add_items(path, new, ["def brand_new_helper(): pass"] * 10, [{"repo": "fresh"}] * 10)
    assert ids.tolist() == list(range(1500, 1510))
    with SearchIndex.load(path) as index:
        assert len(index) == 1510
        _, found = index.search_vectors(new, 1)
        assert found[:, 0].tolist() == ids.tolist()
        assert index.search(["brand new helper"], 3, mode="lexical")[0][0].id in set(ids.tolist())
    with pytest.raises(ValueError, match="already in"):
        add_items(path, new[:1], ["x"], [{}], ids=[5])
    assert remove_items(path, [1500, 3, 99_999]) == 2
    with SearchIndex.load(path) as index:
        assert len(index) == 1508
        _, found = index.search_vectors(np.stack([new[0], xb[3]]), 5)
        assert 1500 not in found and 3 not in found
        assert index.store.get([3, 1500]) == {}


@pytest.mark.parametrize("index_type", ["hnsw", "ivf_fastscan"])
def test_removal_uses_tombstones_where_faiss_cannot_drop_items(tmp_path, index_type):
    xb = clustered(800, 16)
    ids = np.arange(800, dtype=np.int64)
    build_index_dir(tmp_path / "h", ArrayShards(xb, ids), items_for(ids), index_type=index_type)
    assert remove_items(tmp_path / "h", [0, 1, 2]) == 3
    with SearchIndex.load(tmp_path / "h") as index:
        assert len(index) == 797 and index.info()["removed_tombstones"] == 3
        _, found = index.search_vectors(xb[:3], 5)
        assert not set(found.ravel()) & {0, 1, 2}
    with pytest.raises(ValueError, match="cannot be reused"):
        add_items(tmp_path / "h", xb[:1], ["x"], [{}], ids=[1])


@pytest.mark.parametrize("index_type", ["flat", "ivf_flat", "ivf_fastscan", "hnsw"])
def test_filtered_search_is_exact_among_the_kept_items(tmp_path, index_type, monkeypatch):
    xb = clustered(1500, 16)
    ids = np.arange(1500, dtype=np.int64)
    path = tmp_path / "idx"
    build_index_dir(path, ArrayShards(xb, ids), items_for(ids), index_type=index_type)
    xq = clustered(5, 16, seed=11)
    with SearchIndex.load(path) as index:  # IVF: the id lookup for reconstruct is built on first use
        keep = index.filter_ids({"repo": "repo3"})
        assert len(keep) == len(range(3, 1500, 7))
        scores, found = index.search_vectors(xq, 10, ids=keep)
        ref_s, ref_i = brute_force(xq, xb[keep], keep, 10)
        np.testing.assert_array_equal(found, ref_i)
        # a wide filter goes through FAISS's id selector (translated to the inner ids for fast-scan)
        monkeypatch.setattr(indexing.index, "EXACT_FILTER_MAX", 0)
        _, found = index.search_vectors(xq, 10, ids=keep)
        assert set(found[found >= 0].tolist()) <= set(keep.tolist())
        assert recall_at(found, ref_i) >= (1.0 if index_type == "flat" else 0.6)
        with pytest.raises(ValueError, match="plain payload field"):
            index.filter_ids({"repo'--": "x"})


# ---- lexical and fusion --------------------------------------------------------------------------


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


# ---- embedding shards, model checks, command line ------------------------------------------------


def test_embedding_resumes_after_a_crash_and_refuses_other_settings(tiny_model, tmp_path):
    from mmssl.models import DualEncoder

    model = DualEncoder.from_pretrained(tiny_model)
    texts = [f"def f{i}(x): return x + {i}" for i in range(250)]
    ids = np.arange(250) + 10
    sha = model_fingerprint(tiny_model)
    out = embed_collection(model, "code", texts, ids, tmp_path / "emb", model_sha256=sha, shard_size=100)
    first = ShardDir(out)
    full = np.concatenate([x for _, x in first])
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-0000[02].*")}
    (out / "shard-00001.ids.npy").unlink()  # a crash while shard 1 was being written
    with pytest.raises(ValueError, match="1 of 3 shards unfinished"):
        ShardDir(out)
    embed_collection(model, "code", texts, ids, out, model_sha256=sha, shard_size=100)
    again = ShardDir(out)
    np.testing.assert_allclose(np.concatenate([x for _, x in again]), full, atol=1e-6)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-0000[02].*")} == stamps  # not redone
    assert np.concatenate([i for i, _ in again]).tolist() == ids.tolist()
    with pytest.raises(ValueError, match="different shard_size"):
        embed_collection(model, "code", texts, ids, out, model_sha256=sha, shard_size=50)
    half = embed_collection(model, "code", texts, ids, tmp_path / "h", model_sha256=sha, dtype="float16")
    np.testing.assert_allclose(ShardDir(half).sample(250), full, atol=2e-3)


def test_embedding_shards_of_another_collection_are_never_reused(tiny_model, tmp_path):
    """Same model, settings and count, other texts: an error, or with replace_stale (index build
    --overwrite) new shards; never the old vectors under the new texts."""
    from mmssl.models import DualEncoder

    model = DualEncoder.from_pretrained(tiny_model)
    sha = model_fingerprint(tiny_model)
    ids = np.arange(120)
    old = [f"def old{i}(x): return x * {i}" for i in range(120)]
    new = [f"def parse_{i}(path): return open(path).read()" for i in range(120)]
    out = embed_collection(model, "code", old, ids, tmp_path / "emb", model_sha256=sha, shard_size=50)
    with pytest.raises(ValueError, match="different content_sha256.*--overwrite"):
        embed_collection(model, "code", new, ids, out, model_sha256=sha, shard_size=50)
    embed_collection(model, "code", new, ids, out, model_sha256=sha, shard_size=50, replace_stale=True)
    got = np.concatenate([x for _, x in ShardDir(out)])
    np.testing.assert_allclose(got, model.embed("code", new).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="different content_sha256"):  # other ids, same texts
        embed_collection(model, "code", new, ids + 1, out, model_sha256=sha, shard_size=50)


def test_index_commands_end_to_end(tiny_model, code_corpus, tmp_path, capsys):
    idx = str(tmp_path / "idx")
    assert (
        cli.main(["index", "build", "--model", str(tiny_model), "--data", code_corpus, "--out", idx, "--lexical"]) == 0
    )
    assert "1,000 code items" in capsys.readouterr().out
    assert cli.main(["index", "info", "--index", idx, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 1000 and info["modality"] == "code" and info["query_modality"] == "text"
    query = "Parse the user given as input."
    for mode in ("dense", "lexical", "hybrid"):
        argv = ["index", "search", "--index", idx, "--query", query, "-k", "5", "--mode", mode, "--json"]
        assert cli.main(argv) == 0
        hits = json.loads(capsys.readouterr().out)[0]
        assert len(hits) == 5 and [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
        if mode != "dense":
            assert hits[0]["text"].startswith("def parse_user(")
    argv = ["index", "search", "--index", idx, "--query", query, "--where", "repo=repo4", "--json"]
    assert cli.main(argv) == 0
    assert {h["payload"]["repo"] for h in json.loads(capsys.readouterr().out)[0]} == {"repo4"}
    assert cli.main(["index", "remove", "--index", idx, "--where", "repo=repo4"]) == 0
    assert "removed 40 items" in capsys.readouterr().out
    # records already indexed are skipped (a retry); the same records moved to another repo are new
    assert cli.main(["index", "add", "--index", idx, "--data", code_corpus, "--partition", "test"]) == 0
    assert "added 0 items; skipped 100 already in the index" in capsys.readouterr().out
    with gzip.open(code_corpus, "rt") as f:
        moved = [{**r, "repo": "moved"} for r in map(json.loads, f) if r["partition"] == "test"]
    more = tmp_path / "more.jsonl"
    more.write_text("".join(json.dumps(r) + "\n" for r in moved))
    assert cli.main(["index", "add", "--index", idx, "--data", str(more)]) == 0
    assert "added 100 items (ids 1000..1099)" in capsys.readouterr().out
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = Path(f"{Path(idx).parent}/.{Path(idx).name}.{dead.pid}.abcdefgh.tmp")  # a writer killed after its swap
    left.mkdir()
    assert cli.main(["index", "add", "--index", idx, "--data", str(more)]) == 0  # the retry adds nothing
    assert "added 0 items; skipped 100 already in the index" in capsys.readouterr().out
    assert not left.exists()  # and clears what the killed writer left
    with SearchIndex.load(idx) as index:
        assert len(index) == 1060 and len(index.filter_ids({"repo": "moved"})) == 100
    assert cli.main(["index", "search", "--index", idx, "--query", query]) == 0
    assert "1. " in capsys.readouterr().out
    # the model changed since the index was built: refuse to embed queries with it
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps({**manifest, "model_sha256": "0" * 64}))
    assert cli.main(["index", "search", "--index", idx, "--query", query]) == 2
    assert "not the model this index was built with" in capsys.readouterr().err


# ---- neighbours of many queries (hard-negative mining) ---------------------------------------------


@pytest.mark.parametrize("flat_max", [100_000, 500])
def test_knn_matches_brute_force_exact_and_tuned(flat_max):
    """Exact (flat) search returns the brute-force top-K; past ``flat_max`` an IVF index tuned to 95 %
    recall@K on a sample of the queries gets at least that on all of them."""
    from indexing.neighbors import knn

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 24))
    xb = (centers[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 24))).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = xb[rng.choice(3000, 300, replace=False)] + 0.05 * rng.normal(size=(300, 24)).astype(np.float32)
    scores, ids = knn(xb, xq, 10, flat_max=flat_max)
    sims = xq @ xb.T
    exact = np.argsort(-sims, axis=1, kind="stable")[:, :10]
    assert ids.shape == scores.shape == (300, 10)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, ids, 1), rtol=1e-4, atol=1e-5)
    if flat_max > len(xb):
        np.testing.assert_allclose(scores, np.take_along_axis(sims, exact, 1), rtol=1e-4, atol=1e-5)
    else:
        assert recall_at(ids, exact) >= 0.93
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    with pytest.raises(ValueError, match="dim"):
        knn(xb, xq[:, :5], 3)


def test_k_beyond_the_index_size_is_clamped_in_every_mode(tiny_model, code_corpus, tmp_path):
    """k = 10**9 on a small index answers with at most every item (it allocated Q x k before)."""
    idx = tmp_path / "idx"
    argv = ["index", "build", "--model", str(tiny_model), "--data", code_corpus, "--out", str(idx), "--lexical"]
    assert cli.main([*argv, "--max-items", "60"]) == 0
    index = SearchIndex.load(idx)
    for mode in ("dense", "lexical", "hybrid"):
        hits = index.search(["parse the file given as input"], k=10**9, mode=mode)[0]
        assert 0 < len(hits) <= 60 and len({h.id for h in hits}) == len(hits), mode
    scores, found = index.search_vectors(np.ones((2, index.manifest.dim), dtype=np.float32), k=10**9)
    assert scores.shape == found.shape == (2, 60)
    with pytest.raises(ValueError, match="k must be positive"):
        index.search(["x"], k=0)


def test_the_collections_queries_are_embedded_only_for_an_index_that_is_tuned(tiny_model, code_corpus, tmp_path,
                                                                               monkeypatch):  # fmt: skip
    import indexing.embed

    embedded = []
    real = indexing.embed.embed_texts

    def spy(model, modality, texts, *args, **kw):
        embedded.append((modality, len(texts)))
        return real(model, modality, texts, *args, **kw)

    monkeypatch.setattr(indexing.embed, "embed_texts", spy)  # the build imports it at its start
    argv = ["index", "build", "--model", str(tiny_model), "--data", code_corpus]
    assert cli.main([*argv, "--out", str(tmp_path / "flat")]) == 0
    assert [m for m, _ in embedded] == ["code"]  # an exact scan: nothing to tune, no docstring embedded
    assert cli.main([*argv, "--out", str(tmp_path / "ivf"), "--index-type", "ivf_flat"]) == 0
    assert embedded[1:] == [("code", 1000), ("text", 1000)]  # and the docstrings it is tuned on
    assert SearchIndex.load(tmp_path / "ivf").manifest.tuning["queries"] == 1000
