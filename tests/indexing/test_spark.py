"""Embedding and index building on Spark (``local[2]``): the same index as a local build, a killed
task retried without duplicate ids, a rerun that embeds only unfinished parts."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import sys

import numpy as np
import pytest

from indexing import SearchIndex
from indexing.embed import ShardDir
from indexing.spark import FAULT_ENV, collection_parts, embed_on_spark
from indexing.tune import exact_neighbours, recall_at
from mmssl import cli
from mmssl.io import model_fingerprint

HAVE_SPARK = importlib.util.find_spec("pyspark") is not None and shutil.which("java") is not None
pytestmark = pytest.mark.skipif(
    not HAVE_SPARK and not os.environ.get("MMSSL_REQUIRE_SYSTEM_PACKAGES"),
    reason="pyspark or a Java runtime missing (.ci/run installs the spark extra and Debian's JDK)",
)


@pytest.fixture(scope="module")
def fault_flag(tmp_path_factory):
    """The flag of ``MMSSL_SPARK_FAULT``: present (disarmed) unless a test removes it."""
    flag = tmp_path_factory.mktemp("fault") / "flag"
    flag.write_text("disarmed\n")
    return flag


@pytest.fixture(scope="module")
def spark(fault_flag):
    """One local[2] session (2 attempts a task) for the module: the workers see the fault setting."""
    from pyspark.sql import SparkSession

    os.environ[FAULT_ENV] = f"1:{fault_flag}"  # before the JVM starts: its Python workers inherit it
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2,2]").appName("mmssl-tests").config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false").getOrCreate()
    )  # fmt: skip
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    os.environ.pop(FAULT_ENV, None)


@pytest.fixture(scope="module")
def folder(code_corpus, tmp_path_factory):
    """The test corpus as a folder of three JSONL.gz files (three parts)."""
    with gzip.open(code_corpus, "rt") as f:
        lines = f.readlines()
    out = tmp_path_factory.mktemp("parts")
    for i, chunk in enumerate((lines[:300], lines[300:650], lines[650:])):
        with gzip.open(out / f"part-{i}.jsonl.gz", "wt") as f:
            f.writelines(chunk)
    return out


def test_parts_are_the_collections_files(folder, tmp_path):
    assert [p.name for p in collection_parts(folder)] == ["part-0.jsonl.gz", "part-1.jsonl.gz", "part-2.jsonl.gz"]
    assert collection_parts(folder / "part-1.jsonl.gz") == [folder / "part-1.jsonl.gz"]
    (tmp_path / "a.tar").write_bytes(b"")
    (tmp_path / "b.tar").write_bytes(b"")
    assert [p.name for p in collection_parts(tmp_path)] == ["a.tar", "b.tar"]


def test_spark_build_equals_the_local_build(spark, folder, tiny_model, tmp_path):
    argv = ["index", "build", "--model", str(tiny_model), "--data", str(folder)]
    assert cli.main([*argv, "--out", str(tmp_path / "local")]) == 0
    assert cli.main([*argv, "--out", str(tmp_path / "spark"), "--engine", "spark"]) == 0
    local, distributed = ShardDir(tmp_path / "local.embeddings"), ShardDir(tmp_path / "spark.embeddings")
    assert distributed.spec.counts == (300, 350, 350) and distributed.count == local.count == 1000
    np.testing.assert_array_equal(distributed.all_ids(), np.arange(1000))
    x_local = np.concatenate([x for _, x in local])
    x_spark = np.concatenate([x for _, x in distributed])
    np.testing.assert_allclose(x_spark, x_local, atol=1e-6)  # batches differ per part: float rounding only
    with SearchIndex.load(tmp_path / "local") as a, SearchIndex.load(tmp_path / "spark", verify=True) as b:
        assert a.manifest.count == b.manifest.count == 1000 and a.manifest.factory == b.manifest.factory
        assert a.store.get(list(range(1000))) == b.store.get(list(range(1000)))
        queries = [a.store.get([i])[i][1]["docstring"] for i in range(0, 1000, 20)]
        xq = a.embed_queries(queries)
        s_a, found_a = a.search_vectors(xq, 10)
        s_b, found_b = b.search_vectors(xq, 10)
        np.testing.assert_allclose(s_b, s_a, atol=1e-5)
        exact = exact_neighbours(xq, local, 10)  # recall against exact search: the same for both
        assert recall_at(found_b, exact) == pytest.approx(recall_at(found_a, exact), abs=0.01)
        assert recall_at(found_b, found_a) >= 0.98  # only ties at equal scores may order differently


def test_a_killed_task_is_retried_and_each_id_is_indexed_once(spark, folder, tiny_model, tmp_path, fault_flag):
    fault_flag.unlink()  # armed: the first attempt at part 1 dies half way through its shard
    emb = embed_on_spark(
        str(tiny_model), str(folder), tmp_path / "emb", modality="code", model_sha256=model_fingerprint(tiny_model)
    )
    assert fault_flag.read_text().startswith("part 1 killed once")  # it did die, and Spark retried it
    shards = ShardDir(emb.path)
    ids = shards.all_ids()
    assert len(ids) == len(np.unique(ids)) == 1000 == len(emb.texts)
    assert not list(emb.path.glob("*.tmp"))  # the killed attempt's half-written file is gone


def test_a_rerun_embeds_only_the_parts_that_did_not_finish(spark, folder, tiny_model, tmp_path):
    sha = model_fingerprint(tiny_model)
    first = embed_on_spark(str(tiny_model), str(folder), tmp_path / "emb", modality="code", model_sha256=sha)
    assert first.embedded_parts == 3
    kept = (tmp_path / "emb" / "shard-00000.npy").stat().st_mtime_ns
    (tmp_path / "emb" / "shard-00002.part.json").unlink()  # as an interrupted job leaves part 2
    again = embed_on_spark(str(tiny_model), str(folder), tmp_path / "emb", modality="code", model_sha256=sha)
    assert again.embedded_parts == 1 and again.texts == first.texts
    assert (tmp_path / "emb" / "shard-00000.npy").stat().st_mtime_ns == kept
    stale = embed_on_spark(str(tiny_model), str(folder), tmp_path / "emb", modality="code", model_sha256="0" * 64)
    assert stale.embedded_parts == 3  # another model's parts are made again, not mixed in
    spec = json.loads((tmp_path / "emb" / "embeddings.json").read_text())
    assert spec["counts"] == [300, 350, 350] and spec["model_sha256"] == "0" * 64


def test_embed_on_spark_writes_the_same_parquet_as_the_local_engine(spark, folder, tiny_model, tmp_path):
    from tests.indexing.test_parquet import read_parquet

    argv = ["embed", "--model", str(tiny_model), "--data", str(folder)]
    assert cli.main([*argv, "--out", str(tmp_path / "local")]) == 0
    assert cli.main([*argv, "--out", str(tmp_path / "spark"), "--engine", "spark"]) == 0
    local, distributed = read_parquet(tmp_path / "local"), read_parquet(tmp_path / "spark")
    assert len(list((tmp_path / "spark").glob("part-*.parquet"))) == 3
    assert distributed["id"] == local["id"] == list(range(1000))
    assert distributed["text"] == local["text"] and distributed["payload"] == local["payload"]
    np.testing.assert_allclose(distributed["embedding"], local["embedding"], atol=1e-6)


@pytest.fixture
def three_shards(tmp_path):
    """An embeddings directory of three shards of their own sizes, as Spark writes, and its vectors."""
    from tests.indexing.test_quantized import low_rank

    emb = tmp_path / "emb"
    x = low_rank(6_000, 32)
    counts = (1_500, 2_500, 2_000)
    emb.mkdir()
    start = 0
    for i, n in enumerate(counts):
        np.save(emb / f"shard-{i:05d}.npy", x[start : start + n])
        np.save(emb / f"shard-{i:05d}.ids.npy", np.arange(start, start + n, dtype=np.int64))
        start += n
    spec = {"model_sha256": "0" * 64, "modality": "code", "dim": 32, "dtype": "float32", "shard_size": 2_500,
            "count": 6_000, "counts": list(counts)}  # fmt: skip
    (emb / "embeddings.json").write_text(json.dumps(spec))
    return ShardDir(emb)


def _same_answers(a_dir, b_dir, dim: int = 32) -> None:
    from tests.indexing.test_quantized import low_rank

    with SearchIndex.load(a_dir) as a, SearchIndex.load(b_dir, verify=True) as b:
        assert a.manifest.factory == b.manifest.factory and a.manifest.count == b.manifest.count
        xq = low_rank(50, 32, seed=7)[:, :dim]
        xq /= np.linalg.norm(xq, axis=1, keepdims=True)
        s_a, found_a = a.search_vectors(xq, 10)
        s_b, found_b = b.search_vectors(xq, 10)
        np.testing.assert_array_equal(found_b, found_a)
        np.testing.assert_allclose(s_b, s_a, atol=1e-6)


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_pq"])
def test_an_ivf_index_filled_on_spark_equals_one_filled_locally(spark, three_shards, tmp_path, caplog, kind):
    from indexing import build_index_dir
    from indexing.spark import SparkFill

    caplog.set_level("INFO")
    local = build_index_dir(tmp_path / "local", three_shards, index_type=kind)
    spread = build_index_dir(tmp_path / "spark", three_shards, index_type=kind, filler=SparkFill(tmp_path))
    assert spread.search_params == local.search_params and spread.tuning["curve"] == local.tuning["curve"]
    _same_answers(tmp_path / "local", tmp_path / "spark")
    assert "filled 3 shards on Spark" in caplog.text  # filled there, not on the driver
    assert not list(tmp_path.glob("fill-*"))  # the parts are merged and removed


def test_on_disk_lists_and_matryoshka_prefixes_are_filled_on_spark(spark, three_shards, tmp_path, caplog):
    from indexing import build_index_dir
    from indexing.embed import PrefixShards
    from indexing.spark import SparkFill

    caplog.set_level("INFO")
    local = build_index_dir(tmp_path / "local", three_shards, index_type="ivf_flat", ondisk=True)
    spread = build_index_dir(tmp_path / "spark", three_shards, index_type="ivf_flat", ondisk=True,
                             filler=SparkFill(tmp_path))  # fmt: skip
    assert spread.ondisk and spread.search_params == local.search_params
    assert (tmp_path / "spark" / "ivf.ondisk").stat().st_size == (tmp_path / "local" / "ivf.ondisk").stat().st_size
    _same_answers(tmp_path / "local", tmp_path / "spark")
    assert caplog.text.count("filled 3 shards on Spark") == 1
    assert not list((tmp_path / "spark").glob("part-*")) and not list(tmp_path.glob("spark.*/part-*"))
    # --dim 16: each task cuts its shard to the prefix and renormalizes, as the local fill does
    prefix = PrefixShards(three_shards, 16)
    build_index_dir(tmp_path / "local16", prefix, index_type="ivf_flat")
    build_index_dir(tmp_path / "spark16", prefix, index_type="ivf_flat", filler=SparkFill(tmp_path))
    assert caplog.text.count("filled 3 shards on Spark") == 2
    _same_answers(tmp_path / "local16", tmp_path / "spark16", dim=16)


def test_a_parquet_collection_builds_the_index_its_json_lines_build(spark, folder, tiny_model, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmssl.data.code_search import read_code_search

    (tmp_path / "pq").mkdir()
    for part in collection_parts(folder):
        rows = read_code_search(part).records
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pq" / part.name.replace(".jsonl.gz", ".parquet"))
    assert [p.suffix for p in collection_parts(tmp_path / "pq")] == [".parquet"] * 3
    argv = ["index", "build", "--model", str(tiny_model)]
    assert cli.main([*argv, "--data", str(folder), "--out", str(tmp_path / "jsonl")]) == 0
    assert cli.main([*argv, "--data", str(tmp_path / "pq"), "--out", str(tmp_path / "spark"), "--engine", "spark"]) == 0
    assert ShardDir(tmp_path / "spark.embeddings").spec.counts == (300, 350, 350)
    with SearchIndex.load(tmp_path / "jsonl") as a, SearchIndex.load(tmp_path / "spark") as b:
        assert a.store.get(list(range(1000))) == b.store.get(list(range(1000)))
        xq = a.embed_queries(["sort a list", "open a file"])
        np.testing.assert_array_equal(a.search_vectors(xq, 10)[1], b.search_vectors(xq, 10)[1])
