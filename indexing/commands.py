"""``mmssl index build | add | remove | search | info``.

A collection is a JSONL(.gz) file or folder of records (CodeSearchNet format, or any records with
a text field): the indexed text is ``--text-field`` (default: ``code`` for a code index,
``docstring`` for a text index), every other field except token lists becomes the payload a hit
shows. Item ids are the records' positions in the collection (after ``--partition``), from 0.

For an image-text model the collection is image-caption pairs in any layout ``mmssl train --task
image-text`` reads: an image index holds the images (payload: ``path``, ``caption`` and the
record's other fields; its text, for BM25, is the caption), a caption index (``--modality text``)
the captions (same payload), searched by image. Bad images are skipped and counted.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from indexing.embed import read_items
from mmssl.console import get_logger, setup_logging

log = get_logger("index")


def collection_card(data: str, partition: str | None, available: int | None = None) -> dict:
    """What an index holds, for its manifest: the data's path and partition, the number of items the
    collection (partition) had before ``--max-items`` (``available``) and, from a dataset card
    (``dataset.json`` in the data folder, as ``mmssl data make-images`` writes), its kind, what it
    holds and its licences; a card that is not a JSON object is left out, with a warning."""
    from mmssl.io import read_json_object

    card = {"data": data, "partition": partition, "available": available}
    path = Path(data) / "dataset.json"
    if path.is_file():
        try:
            info = read_json_object(path)
        except ValueError as e:
            log.warning("%s", e)
            return card
        card.update({k: info[k] for k in ("kind", "holds", "licences") if k in info})
    return card


def _where(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--where {pair!r}: use FIELD=VALUE, e.g. --where repo=requests")
        out[key] = value
    return out


@dataclass(frozen=True)
class IndexBuildConfig:
    """Embed a collection with a dual encoder and build a search index directory from it."""

    model: str = field(
        metadata={"help": "dual encoder directory (mmssl train output), or its ONNX export (mmssl export)"}
    )
    data: str = field(metadata={"help": "collection: JSONL(.gz) file or folder (CodeSearchNet format or any records)"})
    out: str = field(metadata={"help": "index directory to write (atomically)"})
    modality: str | None = field(default=None, metadata={"help": "what the items are (default: the model's 2nd side)"})
    text_field: str | None = field(default=None, metadata={"help": "record field to index (default by modality)"})
    partition: str | None = field(default=None, metadata={"help": "only records of this partition"})
    max_items: int | None = field(default=None, metadata={"help": "index only the first N records"})
    dim: int | None = field(
        default=None,
        metadata={"help": "index the first N dimensions, L2-normalized again (a Matryoshka model's prefix)"},
    )
    index_type: Literal["auto", "flat", "hnsw", "ivf_flat", "ivf_fastscan", "ivf_pq"] = field(
        default="auto", metadata={"help": "index kind (auto: from the size and the memory budget)"}
    )
    embedding_dtype: Literal["auto", "float32", "float16", "int8", "binary"] = field(
        default="auto",
        metadata={
            "help": "how the index stores vectors: float32, float16, int8 (scalar quantizer), binary (sign bits, "
            "Hamming search, the best candidates rescored with float32 vectors kept on disk); auto: float32, "
            "or the first smaller one that fits --memory-budget"
        },
    )
    factory: str | None = field(default=None, metadata={"help": "any FAISS factory string (overrides index_type)"})
    memory_budget: str | None = field(default=None, metadata={"help": "RAM the index may use, e.g. 2G"})
    target_recall: float = field(default=0.95, metadata={"help": "recall@10 vs exact search that tuning aims for"})
    opq: bool = field(default=False, metadata={"help": "rotate with OPQ before PQ (when PQ is chosen)"})
    ondisk: bool = field(default=False, metadata={"help": "IVF lists on disk, memory-mapped (beyond RAM)"})
    lexical: bool = field(default=False, metadata={"help": "also build a BM25 index (for --mode lexical/hybrid)"})
    embeddings: str | None = field(
        default=None, metadata={"help": "embedding shards directory (default OUT.embeddings; resumable)"}
    )
    shard_size: int = field(default=50_000, metadata={"help": "items per embedding shard"})
    dtype: Literal["float32", "float16"] = field(
        default="float32",
        metadata={"help": "dtype of the embedding shards on disk (not the index's: --embedding-dtype)"},
    )
    batch_size: int = field(default=128, metadata={"help": "embedding batch size"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda[:N]"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing index at OUT"})
    seed: int = field(default=0, metadata={"help": "seed of training and tuning samples"})
    engine: Literal["local", "spark"] = field(
        default="local", metadata={"help": "embed in this process (local, or torchrun) or on Spark, a task per file"}
    )
    spark_master: str | None = field(
        default=None, metadata={"help": "Spark master: local[N], spark://HOST:PORT, yarn (default: spark-submit's)"}
    )


def prefix_of(shards, dim: int | None, model):
    """(the shards to index: cut to ``dim`` when given, the manifest's ``embedding`` record). A size
    the model was not trained for (its ``matryoshka_dims``) is allowed, with a warning."""
    from indexing.embed import PrefixShards

    trained = list(getattr(model.config, "matryoshka_dims", ()) or ())
    record = {"model_dim": int(shards.dim), "dim": int(dim or shards.dim), "matryoshka_dims": trained}
    if dim is None or dim == shards.dim:
        return shards, record
    if dim not in trained:
        log.warning(
            "--dim %d: the model was not trained for %d dims (its Matryoshka sizes: %s); a plain model's prefix "
            "loses more quality", dim, dim, trained or "none",
        )  # fmt: skip
    return PrefixShards(shards, dim), record


def build_main(config: IndexBuildConfig) -> int:
    from indexing.create import build_index_dir, check_target
    from indexing.embed import ShardDir, embed_collection, embed_texts
    from indexing.plan import parse_budget
    from mmssl.distributed import get_rank, init_distributed
    from mmssl.io import model_fingerprint
    from mmssl.matryoshka import truncate

    setup_logging()
    budget = parse_budget(config.memory_budget)
    out = Path(config.out)
    check_target(out, config.overwrite)  # before minutes of embedding, not after
    init_distributed()
    from mmssl.export.onnx_encoder import load_encoder

    model = load_encoder(config.model, config.device)
    first, second = model.config.modalities
    if config.dim is not None and config.dim > model.config.embed_dim:  # before minutes of embedding
        raise ValueError(f"--dim {config.dim}: the model embeds in {model.config.embed_dim} dimensions")
    modality = config.modality or second
    if modality not in (first, second):
        raise ValueError(f"--modality {modality!r}: the model embeds {first} and {second}")
    query_modality = first if modality == second else second
    sha = model_fingerprint(config.model)
    emb_dir = Path(config.embeddings or f"{out}.embeddings")
    if config.engine == "spark":
        texts, payloads, queries, available = _embed_on_spark(config, modality, sha, emb_dir)
    else:
        collection = read_items(model, config.data, modality, config.text_field, config.partition, config.max_items)
        texts, payloads, queries, available = (
            collection.texts, collection.payloads, collection.queries, collection.available
        )  # fmt: skip
        embed_collection(
            model,
            modality,
            collection.items,
            np.arange(len(texts), dtype=np.int64),
            emb_dir,
            model_sha256=sha,
            shard_size=config.shard_size,
            dtype=config.dtype,
            batch_size=config.batch_size,
            replace_stale=config.overwrite,  # --overwrite rebuilds: shards of another collection are not reused
        )
    ids = np.arange(len(texts), dtype=np.int64)
    if get_rank() != 0:
        return 0
    shards, embedding = prefix_of(ShardDir(emb_dir), config.dim, model)

    def tune_queries() -> np.ndarray | None:
        """The collection's own queries (docstrings, captions) embedded: up to 1,000, at least 50."""
        if queries is None:
            return None
        sample = np.random.default_rng(config.seed + 1).permutation(len(queries))[:1000]
        pick = [i for i in sample if not isinstance(queries[i], str) or queries[i].strip()]
        if len(pick) < 50:
            return None
        xq = embed_texts(model, query_modality, [queries[i] for i in pick], config.batch_size)
        return truncate(xq, shards.dim) if config.dim else xq

    manifest = build_index_dir(
        out,
        shards,
        (ids, texts, payloads),
        memory_budget=budget,
        index_type=config.index_type,
        factory=config.factory,
        opq=config.opq,
        ondisk=config.ondisk,
        embedding_dtype=config.embedding_dtype,
        target_recall=config.target_recall,
        tune_queries=tune_queries,
        lexical=config.lexical,
        model_path=config.model,
        model_sha256=sha,
        modality=modality,
        query_modality=query_modality,
        collection=collection_card(config.data, config.partition, available),
        embedding=embedding,
        overwrite=config.overwrite,
        seed=config.seed,
        filler=_spark_fill(config, out) if config.engine == "spark" else None,
    )
    t = manifest.tuning
    recall = f", recall@10 {t['recall']:.3f} at {manifest.search_params}" if manifest.search_params else ""
    print(f"{out}: {manifest.count:,} {modality} items, {manifest.factory}{recall}; embeddings in {emb_dir}")
    return 0


def _embed_on_spark(config: IndexBuildConfig, modality: str, sha: str, emb_dir: Path):
    """(texts, payloads, queries, available) of the collection, embedded into ``emb_dir`` on Spark."""
    from indexing.spark import embed_on_spark

    if config.max_items is not None:
        raise ValueError("--max-items with --engine spark: a Spark build indexes whole files (give fewer files)")
    emb = embed_on_spark(
        config.model, config.data, emb_dir, modality=modality, model_sha256=sha, text_field=config.text_field,
        partition=config.partition, master=config.spark_master, batch_size=config.batch_size, dtype=config.dtype,
    )  # fmt: skip
    return emb.texts, emb.payloads, emb.queries, emb.available


def _spark_fill(config: IndexBuildConfig, out: Path):
    from indexing.spark import SparkFill

    return SparkFill(out.parent, config.spark_master)


@dataclass(frozen=True)
class IndexAddConfig:
    """Embed more records with the index's own model and add them to an index directory."""

    index: str = field(metadata={"help": "index directory"})
    data: str = field(metadata={"help": "records to add: JSONL(.gz) file or folder"})
    text_field: str | None = field(default=None, metadata={"help": "record field to index (default by modality)"})
    partition: str | None = field(default=None, metadata={"help": "only records of this partition"})
    batch_size: int = field(default=128, metadata={"help": "embedding batch size"})


def add_main(config: IndexAddConfig) -> int:
    from indexing.index import SearchIndex
    from indexing.store import fingerprints
    from indexing.update import add_items

    setup_logging()
    with SearchIndex.load(config.index) as index:
        model = index.model()
        modality = index.manifest.modality or model.config.modalities[1]
        collection = read_items(model, config.data, modality, config.text_field, config.partition)
        items, texts, payloads = collection.items, collection.texts, collection.payloads
        given = len(texts)
        keep = index.store.unseen(fingerprints(texts, payloads))  # a retry embeds only what did not land
        items, texts, payloads = [items[i] for i in keep], [texts[i] for i in keep], [payloads[i] for i in keep]
        vectors = index.embed(modality, items, config.batch_size) if keep else None
    if keep:
        ids = add_items(config.index, vectors, texts, payloads)
    else:  # nothing new (a retry of an add that landed): the lock still clears what a killed writer left
        from indexing.lock import write_lock

        with write_lock(config.index):
            ids = np.zeros(0, dtype=np.int64)
    skipped = given - len(ids)
    dup = f"; skipped {skipped:,} already in the index" if skipped else ""
    span = f" (ids {ids.min()}..{ids.max()})" if len(ids) else ""
    print(f"{config.index}: added {len(ids):,} items{span}{dup}")
    return 0


@dataclass(frozen=True)
class IndexRemoveConfig:
    """Remove items from an index directory, by id or by payload field."""

    index: str = field(metadata={"help": "index directory"})
    ids: list[int] | None = field(default=None, metadata={"help": "item ids to remove"})
    where: list[str] | None = field(default=None, metadata={"help": "FIELD=VALUE filters on the payload"})


def remove_main(config: IndexRemoveConfig) -> int:
    from indexing.index import SearchIndex
    from indexing.update import remove_items

    setup_logging()
    if not config.ids and not config.where:
        raise ValueError("give --ids or --where")
    ids = list(config.ids or [])
    if config.where:
        with SearchIndex.load(config.index, verify=False) as index:
            ids += index.filter_ids(_where(config.where)).tolist()
    n = remove_items(config.index, ids)
    print(f"{config.index}: removed {n:,} items")
    return 0


@dataclass(frozen=True)
class IndexSearchConfig:
    """Search an index with text (or image) queries: ranked results with scores and payloads."""

    index: str = field(metadata={"help": "index directory"})
    query: list[str] = field(
        metadata={"help": "query text (repeat for several); an image file for an index searched by image"}
    )
    k: int = field(default=10, metadata={"aliases": ["-k"], "help": "results per query"})
    mode: Literal["dense", "lexical", "hybrid"] | None = field(
        default=None, metadata={"help": "dense, BM25, or both (RRF); default: the index's own (else dense)"}
    )
    lexical_weight: float | None = field(
        default=None, metadata={"help": "BM25's weight in hybrid fusion (dense: 1); default: the index's own (else 1)"}
    )
    where: list[str] | None = field(default=None, metadata={"help": "FIELD=VALUE payload filters, e.g. repo=json"})
    json: bool = field(default=False, metadata={"help": "print JSON (one list per query)"})
    verify: bool = field(default=False, metadata={"help": "check every file's sha256 before searching"})


def search_main(config: IndexSearchConfig) -> int:
    from indexing.index import SearchIndex

    setup_logging("WARNING")
    with SearchIndex.load(config.index, verify=config.verify) as index:
        chosen = index.manifest.search_defaults  # chosen on validation queries (indexing.modes), or {}
        mode = config.mode or chosen.get("mode", "dense")
        weight = config.lexical_weight if config.lexical_weight is not None else chosen.get("lexical_weight", 1.0)
        results = index.search(config.query, config.k, mode=mode, where=_where(config.where), lexical_weight=weight)
    if config.json:
        print(json.dumps([[h.to_dict() for h in hits] for hits in results], ensure_ascii=False, indent=1))
        return 0
    for query, hits in zip(config.query, results):
        print(f"query: {query}")
        if not hits:
            print("  (no results)")
        for h in hits:
            p = h.payload
            where = " ".join(str(p[k]) for k in ("repo", "path", "func_name") if p.get(k))
            first = next((line.strip() for line in h.text.splitlines() if line.strip()), "")
            print(f"{h.rank:>3}. {h.score:8.4f}  id={h.id}  {where}")
            print(f"       {first[:100]}")
    return 0


@dataclass(frozen=True)
class IndexInfoConfig:
    """Show what an index directory holds (from its manifest), after checking its files."""

    index: str = field(metadata={"help": "index directory"})
    json: bool = field(default=False, metadata={"help": "print JSON"})
    verify: bool = field(default=True, metadata={"help": "check every file's sha256"})


def info_main(config: IndexInfoConfig) -> int:
    from indexing.index import SearchIndex

    setup_logging("WARNING")
    with SearchIndex.load(config.index, verify=config.verify, use_gpu=False) as index:
        info = index.info()
    if config.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key == "tuning":
            value = {k: v for k, v in value.items() if k != "curve"}
        sys.stdout.write(f"{key:<{width}}  {value}\n")
    return 0
