"""Adding and removing items: each change writes a new version of the index directory.

The directory is copied into a temporary sibling, changed there (index, metadata, lexical side,
manifest with fresh checksums) and renamed into place, so a crash or a rejected change (an id
that is already there, vectors of the wrong size) leaves the previous version as it was. Indexes
FAISS cannot drop items from (HNSW graphs, the re-ranked fast-scan) keep removed ids as tombstones
(table ``removed``) that ``SearchIndex`` excludes at search time; a rebuild clears them.
On-disk indexes are rebuilt, not updated.

Writers hold the index's write lock (``indexing.lock``) from reading the current version to
swapping in the new one: a second writer fails at once instead of losing the first one's change.
Adding is idempotent: an item whose fingerprint (its text and payload, ``indexing.store``) is
already in the index is skipped, so a retried add that had in fact landed adds nothing. Repeats
within one batch are added as given (as a build keeps a collection's repeated records).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from indexing import store as layout  # the directory's file names
from indexing.build import as_float32_matrix, as_ids, supports_remove
from indexing.lexical import LexicalIndex
from indexing.lock import write_lock
from indexing.store import (
    IndexDirError,
    Manifest,
    MetadataStore,
    fingerprints,
    now,
    read_index_file,
    record_files,
    write_index_file,
)
from indexing.verify import check_files, check_index, check_manifest
from mmssl.io import atomic_dir


def _current(path: Path) -> Manifest:
    """The manifest of the index at ``path``, its files checked in full (a writer re-checksums what
    it copies: a damaged file must fail here, not be recorded as good)."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such index directory")
    manifest = Manifest.from_file(path / layout.MANIFEST)
    check_manifest(path, manifest)
    check_files(path, manifest, verify=True)
    if manifest.ondisk:
        raise ValueError(f"{path}: an on-disk index cannot be updated in place; rebuild it with the new items")
    return manifest


def _new_version(path: Path, manifest: Manifest, change) -> Manifest:
    """Copy the index directory, apply ``change(tmp_dir, index, manifest) -> manifest``, swap it in
    (the caller holds the write lock and has read ``manifest`` with ``_current``)."""
    with atomic_dir(path) as tmp:
        for name in manifest.files:  # the index's files (a binary one's vectors too); lexical/ is rebuilt
            if not name.startswith(f"{layout.LEXICAL_DIR}/"):
                shutil.copy2(path / name, tmp / name)
        index = read_index_file(tmp / layout.INDEX_FILE, manifest)
        with MetadataStore(tmp / layout.META_FILE, readonly=True) as store:
            check_index(path, manifest, index, store)
        manifest = change(tmp, index, manifest)
        names = [*write_index_file(index, tmp / layout.INDEX_FILE), layout.META_FILE]
        names += [layout.LEXICAL_DIR] if manifest.lexical else []
        if manifest.lexical:
            with MetadataStore(tmp / layout.META_FILE, readonly=True) as store:
                ids, texts = [], []
                for batch_ids, batch_texts in store.iter_items():
                    ids += batch_ids
                    texts += batch_texts
            LexicalIndex.build(ids, texts).save(tmp / layout.LEXICAL_DIR)
        manifest = replace(manifest, count=int(index.ntotal), files=record_files(tmp, names), updated=now())
        (tmp / layout.MANIFEST).write_text(manifest.to_json())
    return manifest


def add_items(
    path: str | Path,
    vectors: np.ndarray,
    texts: Sequence[str],
    payloads: Sequence[dict],
    ids: Sequence[int] | None = None,
) -> np.ndarray:
    """Add items (their vectors, text and payload) to an index directory; returns the ids of those
    added: not the items already in the index (the same text and payload).

    Ids default to the manifest's ``next_id`` onwards. The directory is replaced atomically: a crash
    leaves the previous version; while it is written, another writer gets ``IndexBusyError``.
    """
    path = Path(path)
    vectors = as_float32_matrix(vectors, "vectors")
    assigned: list[np.ndarray] = []

    def change(tmp: Path, index, manifest: Manifest) -> Manifest:
        if vectors.shape[1] != manifest.dim:
            raise ValueError(f"vectors have dim {vectors.shape[1]}, the index {manifest.dim}")
        new_ids = (
            np.arange(manifest.next_id, manifest.next_id + len(vectors), dtype=np.int64)
            if ids is None
            else as_ids(ids, len(vectors))
        )
        with MetadataStore(tmp / layout.META_FILE) as store:
            clash = store.existing(new_ids)
            if clash:
                raise ValueError(f"id {clash[0]} is already in {path}")
            store.conn.execute("CREATE TABLE IF NOT EXISTS removed (id INTEGER PRIMARY KEY)")
            dead = store.conn.execute("SELECT id FROM removed").fetchall()
            reused = np.intersect1d(new_ids, [r[0] for r in dead])
            if len(reused):
                raise ValueError(f"id {reused[0]} was removed from this index (a tombstone) and cannot be reused")
            store.insert(new_ids, texts, payloads)
        index.add_with_ids(vectors, new_ids)
        assigned.append(new_ids)
        return replace(manifest, next_id=max(manifest.next_id, int(new_ids.max()) + 1))

    if not (len(vectors) == len(texts) == len(payloads)):
        raise ValueError(
            f"{len(vectors)} vectors, {len(texts)} texts, {len(payloads)} payloads: give one of each per item"
        )
    if len(vectors) == 0:
        raise ValueError("nothing to add")
    fps = fingerprints(texts, payloads)
    with write_lock(path):
        manifest = _current(path)
        with MetadataStore(path / layout.META_FILE, readonly=True) as store:
            if manifest.count and not store.count() and not store.tombstones():
                raise ValueError(
                    f"{path}: built from vectors alone (no metadata); rebuild it with items to add items to it"
                )
            keep = store.unseen(fps)
        if not keep:
            return np.zeros(0, dtype=np.int64)
        if len(keep) < len(fps):
            vectors, texts, payloads = vectors[keep], [texts[i] for i in keep], [payloads[i] for i in keep]
            ids = None if ids is None else as_ids(ids, len(fps))[keep]
        _new_version(path, manifest, change)
    return assigned[0]


def remove_items(path: str | Path, ids: Sequence[int]) -> int:
    """Remove items by id (index, metadata and lexical side); returns how many were present."""
    path = Path(path)
    ids = np.unique(np.asarray(ids, dtype=np.int64))
    removed: list[int] = []

    def change(tmp: Path, index, manifest: Manifest) -> Manifest:
        with MetadataStore(tmp / layout.META_FILE) as store:
            present = np.asarray(store.existing(ids), dtype=np.int64)
            store.delete(present)
            if not supports_remove(index):  # HNSW graphs, re-ranked fast-scan: tombstones
                store.conn.execute("CREATE TABLE IF NOT EXISTS removed (id INTEGER PRIMARY KEY)")
                with store.conn:
                    store.conn.executemany("INSERT OR IGNORE INTO removed VALUES (?)", ((int(i),) for i in present))
            else:
                n = index.remove_ids(present)
                if n != len(present):
                    raise IndexDirError(f"{path}: the index held {n} of the {len(present)} ids the metadata lists")
        removed.append(len(present))
        return manifest

    with write_lock(path):
        _new_version(path, _current(path), change)
    return removed[0]
