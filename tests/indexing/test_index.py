"""The FAISS layer: index choice, recall against exact search, persistence and damage, updates and filters."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

import indexing.index
from indexing import ArrayShards, IndexDirError, SearchIndex, add_items, build_index_dir, choose_index, remove_items
from indexing.plan import memory_estimate, parse_budget
from indexing.store import Manifest
from indexing.tune import exact_neighbours, recall_at
from tests.indexing.helpers import brute_force, clustered, items_for


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
