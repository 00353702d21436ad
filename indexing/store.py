"""The index directory: a FAISS index, its metadata (SQLite) and a manifest that ties them together.

Layout of an index directory (written whole into a temporary sibling, then renamed into place, so
a crash leaves the previous version or nothing, never half of one):

    DIR/manifest.json   format version, model (path, hash, modalities), dimension, metric,
                        normalization, index type and parameters, count, each file's size and sha256
    DIR/index.faiss     the FAISS index (a CPU index, whatever built it); ids are the item ids
    DIR/ivf.ondisk      only for on-disk indexes: the inverted lists, memory-mapped at search time
    DIR/vectors.f32     only for binary indexes (``indexing.binary``): the float32 vectors that rescore
    DIR/ids.npy         candidates, memory-mapped, and the item id of each of the index's positions
    DIR/meta.sqlite     items(id INTEGER PRIMARY KEY, text, payload JSON, fingerprint): what a hit
                        shows; ``fingerprint`` (indexed) is the sha256 of the item's text and payload,
                        by which ``add`` skips items already there. Schema version: PRAGMA user_version
                        (0: before fingerprints, filled in when a writer first opens the store)
    DIR/lexical/        optional: a bm25s index over the items' text, and the ids of its rows
    DIR/.lock           the write lock (``indexing.lock``): holds the PID of the writer that took it last

What loading checks (the manifest, each file against it, the loaded index against both) is
``indexing.verify``. Every error names the file and field.

Shape legend: N items, D embedding size.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmssl.io import Closable, read_json_object, sha256_file

FORMAT_VERSION = 1
STORE_VERSION = 1  # meta.sqlite's PRAGMA user_version: 1 adds items.fingerprint
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
ONDISK_FILE = "ivf.ondisk"
META_FILE = "meta.sqlite"
LEXICAL_DIR = "lexical"


class IndexDirError(ValueError):
    """A malformed, mismatched or damaged index directory (a ``ValueError``: the CLI prints it as one line)."""


@dataclass(frozen=True)
class FileRecord:
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What an index directory holds; ``manifest.json`` is this, as JSON."""

    dim: int
    count: int
    index_type: str  # flat | hnsw | ivf_flat | ivf_fastscan | ivf_pq
    factory: str  # the FAISS factory string the index was built from
    metric: str = "ip"  # inner product; on L2-normalized vectors, cosine similarity
    normalized: bool = True
    search_params: dict[str, int] = field(default_factory=dict)  # nprobe / efSearch / rescore chosen by tuning
    # how the index stores each vector: float32 | float16 | int8 (FAISS scalar quantizer) | binary
    # (sign bits searched by Hamming distance, candidates rescored with float32 vectors: indexing.binary)
    embedding_dtype: str = "float32"
    tuning: dict[str, Any] = field(default_factory=dict)  # target, measured recall, curve
    ondisk: bool = False
    model_path: str | None = None
    model_sha256: str | None = None
    modality: str | None = None  # what the items are (code, text, image)
    query_modality: str | None = None  # what queries are embedded as
    lexical: dict[str, Any] | None = None  # {"library": "bm25s", "k1": ..., "b": ..., "tokenizer": ...}
    # what was indexed: the data's path and partition, and its dataset card's kind, holds, licences
    collection: dict[str, Any] = field(default_factory=dict)
    # the default search mode and BM25 weight chosen on validation queries (indexing.modes), or {}
    search_defaults: dict[str, Any] = field(default_factory=dict)
    # the model's embeddings as indexed: {"model_dim", "dim" (a Matryoshka prefix when smaller),
    # "matryoshka_dims" (the sizes the model was trained for)}; {} for full-size embeddings of old builds
    embedding: dict[str, Any] = field(default_factory=dict)
    files: dict[str, FileRecord] = field(default_factory=dict)
    next_id: int = 0  # the id ``add`` gives the next item when none is given
    created: str = ""
    updated: str = ""
    versions: dict[str, str] = field(default_factory=dict)  # mmssl, faiss
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> Manifest:
        if not path.is_file():
            raise FileNotFoundError(f"{path.parent}: not an mmssl index directory (no {path.name})")
        raw = read_json_object(path, IndexDirError)
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexDirError(
                f"{path}: format_version {version!r}; this mmssl reads {FORMAT_VERSION} (rebuild the index)"
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise IndexDirError(f"{path}: unknown field {unknown[0]!r}")
        for name in ("dim", "count", "index_type", "factory"):
            if name not in raw:
                raise IndexDirError(f"{path}: missing field {name!r}")
        try:
            raw["files"] = {k: FileRecord(**v) for k, v in raw.get("files", {}).items()}
            manifest = cls(**raw)
        except TypeError as e:
            raise IndexDirError(f"{path}: malformed field ({e})") from None
        if not isinstance(manifest.dim, int) or manifest.dim <= 0:
            raise IndexDirError(f"{path}: field 'dim' must be a positive integer, got {manifest.dim!r}")
        return manifest


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_files(root: Path, names: Iterable[str]) -> dict[str, FileRecord]:
    """Size and sha256 of each named file under ``root`` (directories: every file below them)."""
    out: dict[str, FileRecord] = {}
    for name in names:
        path = root / name
        paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for p in paths:
            out[str(p.relative_to(root))] = FileRecord(p.stat().st_size, sha256_file(p))
    return out


# ---- metadata ------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    payload TEXT NOT NULL,
    fingerprint TEXT
);
"""


def item_fingerprint(text: str, payload_json: str) -> str:
    """sha256 of an item's canonical content: its text and payload (as stored: JSON), keys sorted.

    The payload is every field of the record but the indexed text (and token lists), so two items
    have one fingerprint exactly when they came from the same record.
    """
    canonical = json.dumps([text, json.loads(payload_json)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def fingerprints(texts: Sequence[str], payloads: Sequence[dict]) -> list[str]:
    return [item_fingerprint(t, json.dumps(p, ensure_ascii=False)) for t, p in zip(texts, payloads)]


class MetadataStore(Closable):
    """id -> (text, payload) in SQLite. ``text`` is what was embedded; ``payload`` a JSON object."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.path}: no such metadata store")
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.conn = sqlite3.connect(self.path, check_same_thread=False)
        try:
            if not readonly:
                self._create_or_migrate()
            self.conn.execute("SELECT id, text, payload FROM items LIMIT 1").fetchall()
            columns = {r[1] for r in self.conn.execute("PRAGMA table_info(items)")}
        except sqlite3.DatabaseError as e:
            raise IndexDirError(f"{self.path}: not a readable metadata store ({e})") from None
        self.has_fingerprints = "fingerprint" in columns

    def _create_or_migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > STORE_VERSION:
            raise IndexDirError(
                f"{self.path}: store version {version}; this mmssl writes {STORE_VERSION} (update mmssl)"
            )
        with self.conn:
            self.conn.executescript(_SCHEMA)
            columns = {r[1] for r in self.conn.execute("PRAGMA table_info(items)")}
            if "fingerprint" not in columns:  # a store of version 0: fingerprint what is there
                self.conn.execute("ALTER TABLE items ADD COLUMN fingerprint TEXT")
                rows = self.conn.execute("SELECT id, text, payload FROM items").fetchall()
                self.conn.executemany(
                    "UPDATE items SET fingerprint = ? WHERE id = ?", ((item_fingerprint(t, p), i) for i, t, p in rows)
                )
            self.conn.execute("CREATE INDEX IF NOT EXISTS items_fingerprint ON items (fingerprint)")
            self.conn.execute(f"PRAGMA user_version = {STORE_VERSION}")

    def close(self) -> None:
        self.conn.close()

    def insert(self, ids: Sequence[int], texts: Sequence[str], payloads: Sequence[dict]) -> None:
        if not (len(ids) == len(texts) == len(payloads)):
            raise ValueError(f"ids, texts and payloads differ in length: {len(ids)}, {len(texts)}, {len(payloads)}")
        try:
            rows = []
            for i, t, p in zip(ids, texts, payloads):
                payload = json.dumps(p, ensure_ascii=False)
                rows.append((int(i), t, payload, item_fingerprint(t, payload)))
            with self.conn:
                self.conn.executemany("INSERT INTO items (id, text, payload, fingerprint) VALUES (?, ?, ?, ?)", rows)
        except sqlite3.IntegrityError:
            dup = self.existing(ids)
            raise ValueError(f"id {dup[0] if dup else '?'} is already in the index (ids must be unique)") from None

    def delete(self, ids: Sequence[int]) -> int:
        with self.conn:
            cur = self.conn.executemany("DELETE FROM items WHERE id = ?", ((int(i),) for i in ids))
        return cur.rowcount

    def existing(self, ids: Sequence[int]) -> list[int]:
        """The ones of ``ids`` that are stored."""
        return [r[0] for r in self._rows_with_ids("id", ids)]

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def tombstones(self) -> list[int]:
        """Ids removed from the metadata that the FAISS index still holds (see ``indexing.update``)."""
        try:
            return [r[0] for r in self.conn.execute("SELECT id FROM removed")]
        except sqlite3.OperationalError:  # no such table: nothing removed
            return []

    def present_fingerprints(self, fps: Sequence[str]) -> set[str]:
        """The ones of ``fps`` that stored items have (a store of version 0, read-only: computed)."""
        if not self.has_fingerprints:
            wanted = set(fps)
            rows = self.conn.execute("SELECT text, payload FROM items")
            return {fp for fp in (item_fingerprint(t, p) for t, p in rows) if fp in wanted}
        out: set[str] = set()
        for start in range(0, len(fps), 900):
            chunk = list(fps[start : start + 900])
            marks = ",".join("?" * len(chunk))
            out.update(
                r[0] for r in self.conn.execute(f"SELECT fingerprint FROM items WHERE fingerprint IN ({marks})", chunk)
            )
        return out

    def unseen(self, fps: Sequence[str]) -> list[int]:
        """Positions of the ``fps`` that no stored item has. Repeats within ``fps`` are all kept, as a
        build keeps a collection's repeated records: a batch is added as given, only once."""
        present = self.present_fingerprints(fps)
        return [pos for pos, fp in enumerate(fps) if fp not in present]

    def get(self, ids: Sequence[int]) -> dict[int, tuple[str, dict]]:
        return {i: (t, json.loads(p)) for i, t, p in self._rows_with_ids("id, text, payload", ids)}

    def _rows_with_ids(self, columns: str, ids: Sequence[int]) -> Iterator[tuple]:
        """``SELECT columns`` of the stored items among ``ids``, in chunks under SQLite's parameter limit."""
        for start in range(0, len(ids), 900):
            chunk = [int(i) for i in ids[start : start + 900]]
            marks = ",".join("?" * len(chunk))
            yield from self.conn.execute(f"SELECT {columns} FROM items WHERE id IN ({marks})", chunk)

    def iter_items(self, batch: int = 10_000) -> Iterator[tuple[list[int], list[str]]]:
        """(ids, texts) in id order, ``batch`` at a time."""
        last = None
        while True:
            if last is None:
                rows = self.conn.execute("SELECT id, text FROM items ORDER BY id LIMIT ?", (batch,)).fetchall()
            else:
                rows = self.conn.execute(
                    "SELECT id, text FROM items WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
                ).fetchall()
            if not rows:
                return
            yield [r[0] for r in rows], [r[1] for r in rows]
            last = rows[-1][0]

    def ids_where(self, where: dict[str, Any]) -> list[int]:
        """Ids whose payload has every ``field == value`` of ``where`` (``repo``, ``path`` ...)."""
        if not where:
            raise ValueError("an empty filter: give at least one field=value")
        clauses, params = [], []
        for key, value in where.items():
            if not key or any(c in key for c in "\"'[]$"):
                raise ValueError(f"filter field {key!r}: use a plain payload field name such as 'repo'")
            clauses.append("json_extract(payload, ?) = ?")
            params += [f'$."{key}"', value]
        sql = "SELECT id FROM items WHERE " + " AND ".join(clauses)
        found = [r[0] for r in self.conn.execute(sql, params)]
        if not found:  # nothing matched: a misspelt field, rather than a value no item has?
            for key in where:
                if not self.conn.execute(
                    "SELECT 1 FROM items WHERE json_type(payload, ?) IS NOT NULL LIMIT 1", (f'$."{key}"',)
                ).fetchone():
                    raise ValueError(f"filter field {key!r}: no item's payload has it ({self._fields_text()})")
        return found

    def value_counts(self, key: str) -> dict[str, int]:
        """How many items have each string value of payload field ``key``, most first ({} when none has it)."""
        if not key or any(c in key for c in "\"'[]$"):
            raise ValueError(f"payload field {key!r}: use a plain field name such as 'repo'")
        sql = (
            "SELECT json_extract(payload, ?) AS v, COUNT(*) FROM items WHERE json_type(payload, ?) = 'text' "
            "GROUP BY v ORDER BY 2 DESC, 1"
        )
        path = f'$."{key}"'
        return {value: n for value, n in self.conn.execute(sql, (path, path))}

    def _fields_text(self, most: int = 30) -> str:
        rows = self.conn.execute(
            "SELECT DISTINCT j.key FROM items, json_each(items.payload) AS j ORDER BY 1 LIMIT ?", (most + 1,)
        ).fetchall()
        if not rows:
            return "the payloads have no fields"
        names = [r[0] for r in rows[:most]]
        return "the payloads' fields: " + ", ".join(names) + (", ..." if len(rows) > most else "")


# ---- the FAISS file -------------------------------------------------------------------------------


def write_index_file(index, path: Path) -> list[str]:
    """Write the index at ``path`` (a binary index also its sibling files); the names written."""
    import faiss

    from indexing.binary import BinaryIndex

    if isinstance(index, BinaryIndex):
        return index.write(path)
    faiss.write_index(index, str(path))
    return [path.name]


def read_index_file(path: Path, manifest: Manifest):
    import faiss

    if manifest.embedding_dtype == "binary":
        from indexing.binary import BinaryIndex

        try:
            return BinaryIndex.load(path, manifest.count, manifest.dim)
        except ValueError as e:
            raise IndexDirError(str(e)) from None
    flags = faiss.IO_FLAG_ONDISK_SAME_DIR if manifest.ondisk else 0
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError as e:
        why = str(e).strip().splitlines()[-1]
        binary = " (a binary index?)" if '"IBxF"' in why or '"IBwF"' in why else ""
        raise IndexDirError(
            f"{path}: FAISS cannot read it{binary}; {MANIFEST} says embedding_dtype {manifest.embedding_dtype} ({why})"
        ) from None
