"""Quantized indexes: float16 / int8 scalar quantizers, binary codes with float rescoring, each
against exact search; their manifests, updates, filters and the command."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import faiss
import numpy as np
import pytest

from indexing import ArrayShards, IndexDirError, SearchIndex, add_items, build_index_dir, remove_items
from indexing.binary import VECTORS_FILE, BinaryIndex, BinaryParams, binary_codes
from indexing.tune import exact_neighbours, recall_at
from tests.indexing.helpers import brute_force, items_for


def low_rank(n: int, d: int, seed: int = 0, latent: int = 16, centers: int = 50) -> np.ndarray:
    """Unit vectors of a Gaussian mixture in a ``latent``-dimensional space mapped to D by one fixed
    random matrix, plus a little noise: what embeddings look like (their signs carry their angles)."""
    rng = np.random.default_rng(seed)
    fixed = np.random.default_rng(99)
    proj, mu = fixed.normal(size=(latent, d)), fixed.normal(size=(centers, latent))
    x = (mu[rng.integers(0, centers, n)] + rng.normal(size=(n, latent))) @ proj + 0.1 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_binary_codes_are_packed_signs_and_faiss_counts_the_flipped_ones():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 70)).astype(np.float32)  # 70 dims: the last byte is padded
    x[0, :5] = 0.0  # zero is not positive: bit 0
    codes = binary_codes(x)
    np.testing.assert_array_equal(codes, np.packbits(x > 0, axis=1))
    assert codes.shape == (300, 9) and codes[0, 0] >> 3 == 0
    index = BinaryIndex.new(70)
    index.add_with_ids(x, np.arange(300) + 1000)
    q = rng.normal(size=(4, 70)).astype(np.float32)
    dist, pos = index.codes.search(binary_codes(q), 300)
    flips = ((q[:, None, :] > 0) != (x[None, :, :] > 0)).sum(axis=2)  # the slow reference: (4, 300)
    np.testing.assert_array_equal(dist, np.take_along_axis(flips, pos, axis=1))
    np.testing.assert_array_equal(np.sort(dist, axis=1), np.sort(flips, axis=1))


def test_ivf_lists_hold_the_sign_bits_and_rank_as_the_exact_hamming_scan():
    xb = low_rank(3_000, 40)
    index = BinaryIndex.new(40, nlist=8)
    index.train(xb)
    index.add_with_ids(xb, np.arange(3_000) + 500)
    lists = index.codes.invlists
    for no in range(8):  # FAISS's layout of the same signs: 1 where < 0, first dimension in the lowest bit
        size = lists.list_size(no)
        pos = faiss.rev_swig_ptr(lists.get_ids(no), size).copy()
        codes = faiss.rev_swig_ptr(lists.get_codes(no), size * 5).reshape(size, 5)
        np.testing.assert_array_equal(codes, np.packbits(xb[pos] < 0, axis=1, bitorder="little"))
    q = low_rank(6, 40, seed=8)
    dist, pos = index.codes.search(q, 3_000, params=faiss.SearchParametersIVF(nprobe=8))  # every list
    flips = ((q[:, None, :] > 0) != (xb[None, :, :] > 0)).sum(axis=2)  # the slow reference
    np.testing.assert_array_equal(dist, np.take_along_axis(flips, pos, axis=1))
    ref_s, ref_i = brute_force(q, xb, np.arange(3_000) + 500, 10)
    scores, found = index.search(q, 10, BinaryParams(rescore=300, nprobe=8))  # every item: exact
    np.testing.assert_array_equal(found, ref_i)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-5, atol=1e-5)


def test_a_binary_ivf_of_earlier_versions_still_loads_and_searches(tmp_path, monkeypatch):
    def earlier_new(cls, d, nlist=0, workdir=None):  # k-means over the codes themselves: IndexBinaryIVF
        fd, scratch = tempfile.mkstemp(suffix=".f32", dir=workdir)
        os.close(fd)
        quantizer = faiss.IndexBinaryFlat(d)
        index = cls(faiss.IndexBinaryIVF(quantizer, d, nlist), d, np.zeros(0, np.int64), Path(scratch), owns_file=True)
        index._keep = quantizer
        return index

    xb = low_rank(3_000, 32)
    path = tmp_path / "idx"
    monkeypatch.setattr(BinaryIndex, "new", classmethod(earlier_new))
    build_index_dir(path, ArrayShards(xb), items_for(np.arange(3_000)), embedding_dtype="binary", index_type="ivf_flat")
    monkeypatch.undo()
    assert (path / "index.faiss").read_bytes()[:4] == b"IBwF"
    with SearchIndex.load(path, verify=True) as index:
        assert isinstance(index.index.codes, faiss.IndexBinaryIVF) and index.manifest.tuning["reached"]
        np.testing.assert_array_equal(index.search_vectors(xb[:5], 3)[1][:, 0], np.arange(5))
    faiss.write_index(faiss.IndexFlatIP(32), str(path / "index.faiss"))  # not sign codes at all
    with pytest.raises(ValueError, match="a IndexFlatIP, not sign codes"):
        BinaryIndex.load(path / "index.faiss", 3_000, 32)


def test_binary_ivf_tuning_keeps_the_depth_and_nprobe_that_read_the_fewest_bytes():
    from indexing.tune import _tune_one, search_parameters, tune

    xb = low_rank(12_000, 64)
    index = BinaryIndex.new(64, nlist=64)
    index.train(xb)
    index.add_with_ids(xb, np.arange(12_000))
    # bytes a query reads: the lists' codes and ids (8 + 8 bytes an item), then the float rows
    assert index.bytes_read(BinaryParams(rescore=5, nprobe=16), 10) == 12_000 * 16 // 64 * 16 + 5 * 10 * 256
    flat = BinaryIndex.new(64)
    flat.add_with_ids(xb, np.arange(12_000))
    assert flat.bytes_read(BinaryParams(rescore=5), 10) == 12_000 * 8 + 5 * 10 * 256
    xq = low_rank(300, 64, seed=2)
    exact = exact_neighbours(xq, ArrayShards(xb), 10)
    chosen = tune(index, xq, exact, 0.95)
    assert chosen.reached
    smallest = _tune_one(index, xq, exact, 0.95, "rescore", 256, 2, {"nprobe": 64}).params["rescore"]
    at_smallest = _tune_one(index, xq, exact, 0.95, "nprobe", 64, 1, {"rescore": smallest})
    assert chosen.params["rescore"] >= smallest
    cost = index.bytes_read(search_parameters(index, chosen.params), 10)
    assert cost <= index.bytes_read(search_parameters(index, at_smallest.params), 10)


def test_rescoring_recovers_exact_top_k():
    xb = low_rank(2_000, 64)
    ids = np.arange(2_000, dtype=np.int64) * 3 + 7
    xq = low_rank(30, 64, seed=4)
    index = BinaryIndex.new(64)
    index.add_with_ids(xb, ids)
    ref_s, ref_i = brute_force(xq, xb, ids, 10)
    scores, found = index.search(xq, 10, BinaryParams(rescore=200))  # every item a candidate: exact
    np.testing.assert_array_equal(found, ref_i)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-5, atol=1e-5)
    _, shallow = index.search(xq, 10, BinaryParams(rescore=1))  # Hamming order alone: worse
    assert recall_at(shallow, ref_i) < recall_at(index.search(xq, 10, BinaryParams(rescore=8))[1], ref_i) <= 1
    np.testing.assert_array_equal(index.reconstruct_batch(ids[[5, 0, 1999]]), xb[[5, 0, 1999]])
    with pytest.raises(RuntimeError):
        index.reconstruct_batch(np.array([8]))


@pytest.mark.parametrize("dtype", ["float16", "int8", "binary"])
@pytest.mark.parametrize("index_type", ["flat", "ivf_flat"])
def test_quantized_index_reaches_its_target_on_held_out_queries(tmp_path, dtype, index_type):
    n, d = 12_000, 64
    xb = low_rank(n, d)
    shards = ArrayShards(xb, shard_size=5_000)
    build_index_dir(tmp_path / "f32", shards, index_type="flat")
    manifest = build_index_dir(
        tmp_path / "idx", shards, items_for(np.arange(n)), index_type=index_type, embedding_dtype=dtype,
        tune_queries=low_rank(300, d, seed=2),
    )  # fmt: skip
    assert (manifest.embedding_dtype, manifest.index_type) == (dtype, index_type)
    assert manifest.tuning["reached"] and manifest.tuning["recall"] >= 0.95
    if dtype == "binary":
        params = manifest.search_params
        assert params["rescore"] >= 1 and (index_type == "flat") == ("nprobe" not in params)
    xq = low_rank(200, d, seed=3)
    exact = exact_neighbours(xq, shards, 10)
    with SearchIndex.load(tmp_path / "idx", verify=True) as index, SearchIndex.load(tmp_path / "f32") as full:
        scores, found = index.search_vectors(xq, 10)
        assert recall_at(found, exact) >= 0.93
        if dtype == "binary":  # rescored with the float vectors: the scores are exact inner products
            np.testing.assert_allclose(scores[:, 0], np.einsum("qd,qd->q", xq, xb[found[:, 0]]), atol=1e-5)
        info, f32 = index.info(), full.info()
        assert info["embedding_dtype"] == dtype
        ratio = info["bytes_per_item"]["memory"] / f32["bytes_per_item"]["memory"]
        # a binary IVF's float centroids weigh at this size (~9 bytes an item of 24)
        assert ratio < {"float16": 0.55, "int8": 0.3, "binary": 0.1 if index_type == "flat" else 0.15}[dtype]
        assert info["bytes_per_item"]["disk"] == (4 * d if dtype == "binary" else 0)
        hits = index.search_vectors(xq[:5], 10, ids=np.arange(0, n, 3))[1]  # a filter: exact among the kept
        assert (hits % 3 == 0).all() and recall_at(hits, brute_force(xq[:5], xb[::3], np.arange(0, n, 3), 10)[1]) > 0.9


def test_binary_index_adds_removes_and_filters_widely(tmp_path, monkeypatch):
    n, d = 6_000, 32
    xb = low_rank(n, d)
    path = tmp_path / "idx"
    build_index_dir(path, ArrayShards(xb), items_for(np.arange(n)), embedding_dtype="binary", index_type="ivf_flat")
    new = low_rank(3, d, seed=9)
    added = add_items(path, new, ["a", "b", "c"], [{"repo": "new"}] * 3)
    np.testing.assert_array_equal(added, [n, n + 1, n + 2])
    with SearchIndex.load(path, verify=True) as index:
        assert index.manifest.count == n + 3 and (path / VECTORS_FILE).stat().st_size == (n + 3) * d * 4
        assert index.search_vectors(new, 1)[1][:, 0].tolist() == added.tolist()
    assert remove_items(path, [n + 1, 5]) == 2
    monkeypatch.setattr("indexing.index.EXACT_FILTER_MAX", 10)  # filters go through the candidates
    with SearchIndex.load(path) as index:
        assert len(index) == n + 1
        found = index.search_vectors(new, 5)[1]
        assert n + 1 not in found and found[0, 0] == n and found[2, 0] == n + 2
        kept = index.filter_ids({"repo": "repo3"})
        hits = index.search_vectors(low_rank(20, d, seed=5), 10, ids=kept)[1]
        assert np.isin(hits[hits >= 0], kept).all() and (hits >= 0).sum() >= 150


def test_manifest_and_files_of_a_quantized_index_are_checked(tmp_path):
    xb = low_rank(3_000, 16)
    path = tmp_path / "idx"
    build_index_dir(path, ArrayShards(xb), embedding_dtype="binary", index_type="flat")
    manifest = path / "manifest.json"
    raw = json.loads(manifest.read_text())
    for value, match in (
        ("float16", r"cannot read it \(a binary index\?\); manifest.json says embedding_dtype float16"),
        ("int4", "field 'embedding_dtype' is 'int4'"),
    ):
        manifest.write_text(json.dumps({**raw, "embedding_dtype": value}))
        with pytest.raises(IndexDirError, match=match):
            SearchIndex.load(path)
    files = {k: v for k, v in raw["files"].items() if k != VECTORS_FILE}
    manifest.write_text(json.dumps({**raw, "files": files}))
    with pytest.raises(IndexDirError, match="does not list vectors.f32"):
        SearchIndex.load(path)
    manifest.write_text(json.dumps(raw))
    with open(path / VECTORS_FILE, "r+b") as f:
        f.truncate(100)
    with pytest.raises(IndexDirError, match="vectors.f32: 100 bytes.*truncated"):
        SearchIndex.load(path)


def test_quantized_choices_are_refused_where_they_do_not_apply(tmp_path):
    shards = ArrayShards(low_rank(500, 16))
    for kwargs, match in (
        ({"index_type": "ivf_pq"}, "goes with --index-type flat or ivf_flat"),
        ({"ondisk": True}, "on-disk lists hold float32"),
        ({"factory": "IVF16,Flat"}, "not both"),
    ):
        with pytest.raises(ValueError, match=match):
            build_index_dir(tmp_path / "x", shards, embedding_dtype="int8", **kwargs)
    assert not (tmp_path / "x").exists()


def test_index_build_command_takes_the_embedding_dtype(tmp_path, code_corpus, tiny_model, capsys):
    from mmssl import cli

    out = tmp_path / "idx"
    argv = ["index", "build", "--model", str(tiny_model), "--data", code_corpus, "--out", str(out)]
    assert cli.main([*argv, "--embedding-dtype", "binary", "--max-items", "200"]) == 0
    capsys.readouterr()
    assert cli.main(["index", "info", "--index", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["embedding_dtype"] == "binary" and "rescore" in info["search_params"]
    with SearchIndex.load(out) as index:
        hits = index.search(["read a file"], k=3)[0]
        assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
