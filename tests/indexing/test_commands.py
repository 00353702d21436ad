"""Embedding a collection into shards (resume, reuse), the index commands end to end, and the
neighbours of many queries."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexing import SearchIndex
from indexing.embed import ShardDir, embed_collection
from indexing.tune import recall_at
from mmssl import cli
from mmssl.io import model_fingerprint


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
