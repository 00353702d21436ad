"""Embedding a collection into shards on disk, resumable and split across processes.

Shape legend: N items, S items per shard, D embedding size.

Layout of an embeddings directory:
    DIR/embeddings.json        model hash, modality, D, dtype, S, N: what every shard was made with
                               (a Spark build, ``indexing.spark``: each shard's own size, ``counts``)
    DIR/shard-00000.npy        (S, D) float32 or float16 embeddings, L2-normalized
    DIR/shard-00000.ids.npy    (S,) int64 item ids: written last, so its presence marks a finished shard

Each file is written to a temporary name and renamed, so a crash loses at most the shard being
embedded; a rerun with the same settings skips every finished shard. A rerun with different
settings (another model, dtype, shard size or collection size) is refused rather than mixed in.
Under ``torchrun`` rank r of W embeds shards r, r + W, r + 2W, ...; every rank reads the same
collection and skips what is not its own. Within a shard texts are sorted by length, so batches
carry little padding; the model runs under ``torch.inference_mode`` and, on a GPU, bf16 autocast.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from indexing.build import sample_rows
from mmssl.console import get_logger, progress
from mmssl.io import atomic_file
from mmssl.matryoshka import truncate

log = get_logger("index.embed")
SPEC = "embeddings.json"
DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class EmbeddingSpec:
    """What a shard directory holds: shards are reused only when every field matches, the
    collection's content (``content_sha256``: its items and ids) included."""

    model_sha256: str
    modality: str
    dim: int
    dtype: str
    shard_size: int
    count: int
    content_sha256: str = ""
    counts: tuple[int, ...] = ()  # shards of their own sizes (one per part of a Spark build), else () : shard_size each

    @property
    def n_shards(self) -> int:
        return len(self.counts) if self.counts else (self.count + self.shard_size - 1) // self.shard_size

    def shard_count(self, i: int) -> int:
        return self.counts[i] if self.counts else min(self.shard_size, self.count - i * self.shard_size)

    def shard_start(self, i: int) -> int:
        """The row of the collection shard ``i`` starts at."""
        return sum(self.counts[:i]) if self.counts else i * self.shard_size


def content_fingerprint(items: Sequence, ids: np.ndarray) -> str:
    """sha256 of a collection's items (texts; an image record by its ``where``) and their ids."""
    h = hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    for item in items:
        text = item if isinstance(item, str) else str(getattr(item, "where", item))
        h.update(text.encode("utf-8", "replace") + b"\0")
    return h.hexdigest()


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_file(path) as f:
        np.save(f, array)


class ShardDir:
    """A finished embeddings directory, read as ``Shards`` (float32, one shard in memory at a time)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        spec_file = self.path / SPEC
        if not spec_file.is_file():
            raise FileNotFoundError(f"{self.path}: not an embeddings directory (no {SPEC})")
        try:
            raw = json.loads(spec_file.read_text())
            self.spec = EmbeddingSpec(**{**raw, "counts": tuple(raw.get("counts", ()))})
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{spec_file}: malformed ({e})") from None
        self.dim, self.count = self.spec.dim, self.spec.count
        missing = [i for i in range(self.spec.n_shards) if not (self.path / f"{shard_name(i)}.ids.npy").is_file()]
        if missing:
            raise ValueError(
                f"{self.path}: {len(missing)} of {self.spec.n_shards} shards unfinished "
                f"(first: {shard_name(missing[0])}); rerun the embedding to complete them"
            )

    def shard(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        base = self.path / shard_name(i)
        try:
            x = np.load(f"{base}.npy", mmap_mode="r")
            ids = np.load(f"{base}.ids.npy")
        except (ValueError, OSError) as e:
            raise ValueError(
                f"{base}.npy: unreadable ({e}); delete the shard's files and rerun the embedding"
            ) from None
        expected = self.spec.shard_count(i)
        if x.shape != (expected, self.dim) or ids.shape != (expected,):
            raise ValueError(f"{base}.npy: shape {x.shape} / ids {ids.shape}, expected ({expected}, {self.dim})")
        return ids, np.asarray(x, dtype=np.float32)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(self.spec.n_shards):
            yield self.shard(i)

    def all_ids(self) -> np.ndarray:
        return np.concatenate([np.load(self.path / f"{shard_name(i)}.ids.npy") for i in range(self.spec.n_shards)])

    def sample(self, m: int, seed: int = 0) -> np.ndarray:
        """``m`` uniformly chosen rows (all rows if m >= N), read shard by shard."""
        if m >= self.count:
            return np.concatenate([x for _, x in self], axis=0)
        rows = sample_rows(self.count, m, seed)
        out = []
        for i in range(self.spec.n_shards):
            lo = self.spec.shard_start(i)
            mine = rows[(rows >= lo) & (rows < lo + self.spec.shard_count(i))] - lo
            if len(mine):
                x = np.load(self.path / f"{shard_name(i)}.npy", mmap_mode="r")
                out.append(np.asarray(x[mine], dtype=np.float32))
        return np.concatenate(out, axis=0)


class PrefixShards:
    """Shards read with each vector cut to its first ``dim`` dimensions and L2-normalized again (a
    Matryoshka prefix, ``mmssl index build --dim``): the same interface as ``ShardDir``."""

    def __init__(self, shards: ShardDir, dim: int) -> None:
        if not 1 <= dim <= shards.dim:
            raise ValueError(f"--dim {dim}: the embeddings have {shards.dim} dimensions")
        self.shards, self.dim, self.count, self.spec = shards, dim, shards.count, shards.spec

    def shard(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        ids, x = self.shards.shard(i)
        return ids, truncate(x, self.dim)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(self.spec.n_shards):
            yield self.shard(i)

    def all_ids(self) -> np.ndarray:
        return self.shards.all_ids()

    def sample(self, m: int, seed: int = 0) -> np.ndarray:
        return truncate(self.shards.sample(m, seed), self.dim)


def read_items(model, data: str, modality: str, text_field: str | None, partition: str | None, max_items=None):
    """A collection for ``model``'s ``modality`` (``mmssl.recipes.IndexItems``), read by the recipe of
    the model's modalities (``mmssl.recipes``)."""
    from mmssl.recipes import recipe_for_model

    return recipe_for_model(model).index_items(model, data, modality, text_field, partition, max_items)


def embed_texts(model, modality: str, texts: Sequence, batch_size: int = 128, bar=None) -> np.ndarray:
    """(len(texts), D) float32 L2-normalized embeddings by the model's ``embed`` (a ``DualEncoder``, or
    an ONNX export's ``OnnxEncoder``), in bf16 on a GPU
    (indexing's precision: fp32 elsewhere); an image modality's items are images."""
    precision = "bf16" if str(model.device).startswith("cuda") else "fp32"
    return np.asarray(model.embed(modality, list(texts), batch_size, precision=precision, progress=bar))


def embed_collection(
    model,
    modality: str,
    texts: Sequence[str],
    ids: Sequence[int] | np.ndarray,
    out_dir: str | Path,
    *,
    model_sha256: str,
    shard_size: int = 50_000,
    dtype: str = "float32",
    batch_size: int = 128,
    replace_stale: bool = False,
) -> Path:
    """Embed ``texts`` (item ``ids``) into shards under ``out_dir``; returns ``out_dir``.

    Resumes: finished shards are skipped. Shards made for another spec (model, settings or the
    collection's content) are an error, or with ``replace_stale`` deleted and made again. Under
    torchrun each rank embeds its own shards and the call returns on every rank once all are written.
    """
    from mmssl.distributed import barrier, get_rank, get_world_size  # torch: not on the query path

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose float32 or float16")
    if len(texts) != len(ids):
        raise ValueError(f"{len(texts)} texts but {len(ids)} ids")
    if not texts:
        raise ValueError("nothing to embed: the collection is empty")
    if modality not in model.config.modalities:
        raise ValueError(f"modality {modality!r}: the model embeds {' and '.join(model.config.modalities)}")
    out = Path(out_dir)
    ids = np.asarray(ids, dtype=np.int64)
    content = content_fingerprint(texts, ids)
    spec = EmbeddingSpec(model_sha256, modality, model.config.embed_dim, dtype, shard_size, len(texts), content)
    spec_file = out / SPEC
    if get_rank() == 0:
        if spec_file.is_file():
            old = json.loads(spec_file.read_text())
            old["counts"] = tuple(old.get("counts", ()))  # JSON's list; absent before Spark builds
            diff = [k for k, v in asdict(spec).items() if old.get(k) != v]
            if diff and not replace_stale:
                raise ValueError(
                    f"{spec_file}: made with a different {diff[0]} ({old.get(diff[0])!r}, "
                    f"now {getattr(spec, diff[0])!r}); use another directory, delete this one or pass --overwrite"
                )
            if diff:
                log.warning("%s: made with a different %s: its shards are deleted and made again", out, diff[0])
                shutil.rmtree(out)
        if not spec_file.is_file():
            out.mkdir(parents=True, exist_ok=True)
            with atomic_file(spec_file, "w") as f:
                f.write(json.dumps(asdict(spec), indent=2) + "\n")
    barrier()
    rank, world = get_rank(), get_world_size()
    todo = [i for i in range(rank, spec.n_shards, world) if not (out / f"{shard_name(i)}.ids.npy").is_file()]
    done = len(range(rank, spec.n_shards, world)) - len(todo)
    if done:
        log.info("resuming: %d shard(s) already embedded", done)
    total = sum(spec.shard_count(i) for i in todo)
    ticks = iter(progress(range(total), total=total, description=f"embedding {modality}"))

    def bar(n: int) -> None:
        for _ in range(n):
            next(ticks, None)

    for i in todo:
        lo = spec.shard_start(i)
        hi = lo + spec.shard_count(i)
        x = embed_texts(model, modality, texts[lo:hi], batch_size, bar)
        _save_npy(out / f"{shard_name(i)}.npy", x.astype(dtype))
        _save_npy(out / f"{shard_name(i)}.ids.npy", ids[lo:hi])  # last: marks the shard finished
    for _ in ticks:  # close the progress bar
        pass
    barrier()
    return out
