"""``mmssl embed``: parquet files of ids, embeddings, texts and payloads, equal to what an index build embeds."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from indexing.embed import ShardDir
from mmssl import cli


def read_parquet(folder) -> dict:
    table = pq.read_table(sorted(folder.glob("part-*.parquet")))
    return {name: table.column(name).to_pylist() for name in table.column_names}


def test_embed_writes_parquet_rows_in_collection_order(code_corpus, tiny_model, tmp_path):
    out = tmp_path / "emb"
    argv = ["embed", "--model", str(tiny_model), "--data", code_corpus, "--out", str(out), "--shard-size", "400"]
    assert cli.main(argv) == 0
    rows = read_parquet(out)
    assert len(list(out.glob("part-*.parquet"))) == 3 and rows["id"] == list(range(1000))
    x = np.asarray(rows["embedding"], dtype=np.float32)
    np.testing.assert_allclose(x, np.concatenate([v for _, v in ShardDir(out / "shards")]), atol=0)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    first = json.loads(rows["payload"][0])
    assert "docstring" in first and "code" not in first and rows["text"][0].startswith("def ")
    assert cli.main(argv) == 0  # a rerun reuses the shards and rewrites the same files
    assert read_parquet(out)["id"] == rows["id"]
