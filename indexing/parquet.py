"""``mmssl embed``: a collection's embeddings as parquet (id, embedding, text, payload) for users who
index elsewhere, embedded in this process or on Spark (``indexing.spark``).

Layout of the output folder:
    OUT/part-00000.parquet   columns id (int64), embedding (fixed-size list of float32), text (string),
                             payload (string: the record's other fields as JSON); one file per embedding
                             shard (Spark: per part of the collection), each written to a temporary name
                             and renamed
    OUT/shards/              the embedding shards (``indexing.embed``): a rerun resumes from them
On Spark each part's file is written by a task of its own once every part is embedded (its ids
depend on the parts before it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from indexing.embed import ShardDir, shard_name
from mmssl.io import atomic_file


def write_part(path: Path, ids: np.ndarray, x: np.ndarray, texts: list[str], payloads: list[dict]) -> None:
    """One parquet file of ``len(ids)`` rows (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.ascontiguousarray(x, dtype=np.float32)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "embedding": embedding,
            "text": pa.array(texts, pa.string()),
            "payload": pa.array([json.dumps(p, ensure_ascii=False) for p in payloads], pa.string()),
        }
    )
    with atomic_file(path) as f:
        pq.write_table(table, f)


def _spark_part(job: tuple[str, int, int, str]) -> int:
    """Write the parquet file of one embedded part (a Spark task): (shards dir, part, first id, out)."""
    import gzip

    shards, part, start, out = job
    base = Path(shards) / shard_name(part)
    x = np.load(f"{base}.npy")
    with gzip.open(f"{base}.items.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    ids = np.arange(start, start + len(x), dtype=np.int64)
    write_part(Path(out) / f"part-{part:05d}.parquet", ids, x, [r["text"] for r in rows], [r["payload"] for r in rows])
    return len(x)


@dataclass(frozen=True)
class EmbedConfig:
    """Embed a collection with a dual encoder and write parquet files (id, embedding, text, payload)."""

    model: str = field(metadata={"help": "dual encoder directory (mmssl train output), or its ONNX export"})
    data: str = field(metadata={"help": "collection: JSONL(.gz) file or folder, image-caption data"})
    out: str = field(metadata={"help": "folder of part-NNNNN.parquet files to write"})
    modality: str | None = field(default=None, metadata={"help": "what the items are (default: the model's 2nd side)"})
    text_field: str | None = field(default=None, metadata={"help": "record field to embed (default by modality)"})
    partition: str | None = field(default=None, metadata={"help": "only records of this partition"})
    engine: Literal["local", "spark"] = field(default="local", metadata={"help": "this process, or Spark"})
    spark_master: str | None = field(default=None, metadata={"help": "Spark master: local[N], spark://HOST:PORT, yarn"})
    shard_size: int = field(default=50_000, metadata={"help": "items per file (local engine)"})
    batch_size: int = field(default=128, metadata={"help": "embedding batch size"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda[:N] (local engine)"})


def embed_main(config: EmbedConfig) -> int:
    from indexing.embed import embed_collection, read_items
    from mmssl.console import setup_logging
    from mmssl.export.onnx_encoder import load_encoder
    from mmssl.io import model_fingerprint

    setup_logging()
    out = Path(config.out)
    shards_dir = out / "shards"
    model = load_encoder(config.model, config.device if config.engine == "local" else "cpu")
    modality = config.modality or model.config.modalities[1]
    if modality not in model.config.modalities:
        raise ValueError(f"--modality {modality!r}: the model embeds {' and '.join(model.config.modalities)}")
    sha = model_fingerprint(config.model)
    if config.engine == "spark":
        from indexing.spark import embed_on_spark, spark_session

        emb = embed_on_spark(
            config.model, config.data, shards_dir, modality=modality, model_sha256=sha, text_field=config.text_field,
            partition=config.partition, master=config.spark_master, batch_size=config.batch_size,
        )  # fmt: skip
        spec = ShardDir(shards_dir).spec
        starts = [spec.shard_start(i) for i in range(spec.n_shards)]
        jobs = [(str(shards_dir), i, s, str(out)) for i, s in enumerate(starts)]
        session, own = spark_session(config.spark_master)
        try:
            written = sum(session.sparkContext.parallelize(jobs, len(jobs)).map(_spark_part).collect())
        finally:
            if own:
                session.stop()
        now = f"{emb.embedded_parts} part(s) embedded now"
        print(f"{out}: {written:,} {modality} embeddings in {len(jobs)} parquet file(s) ({now})")
        return 0
    collection = read_items(model, config.data, modality, config.text_field, config.partition)
    ids = np.arange(len(collection.texts), dtype=np.int64)
    embed_collection(model, modality, collection.items, ids, shards_dir, model_sha256=sha,
                     shard_size=config.shard_size, batch_size=config.batch_size)  # fmt: skip
    shards = ShardDir(shards_dir)
    for i, (shard_ids, x) in enumerate(shards):
        lo, hi = shards.spec.shard_start(i), shards.spec.shard_start(i) + len(shard_ids)
        write_part(out / f"part-{i:05d}.parquet", shard_ids, x, collection.texts[lo:hi], collection.payloads[lo:hi])
    print(f"{out}: {shards.count:,} {modality} embeddings in {shards.spec.n_shards} parquet file(s)")
    return 0
