"""Writing an index safely: one writer at a time, idempotent adds, leftovers of killed writers,
filters on fields no payload has, and the load-time integrity checks of a directory."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from indexing import ArrayShards, IndexDirError, SearchIndex, add_items, build_index_dir, remove_items
from indexing.lexical import LexicalIndex
from indexing.lock import IndexBusyError, write_lock
from indexing.store import Manifest, record_files
from mmssl import cli


def unit(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def items(ids, repo: str = "r"):
    return [f"def f{i}(): return {i}" for i in ids], [{"repo": repo, "path": f"m{i}.py"} for i in ids]


@pytest.fixture
def index_dir(tmp_path):
    ids = np.arange(200, dtype=np.int64)
    texts, payloads = items(ids)
    build_index_dir(tmp_path / "idx", ArrayShards(unit(200), ids), (ids, texts, payloads), lexical=True)
    return tmp_path / "idx"


# A writer in another process, stopped inside add_items (after the new version's index is built,
# before it is swapped in) until a line arrives on its stdin.
WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import indexing.update as update

    real = update.write_index_file

    def paused(index, path):
        names = real(index, path)
        print("writing", flush=True)
        sys.stdin.readline()
        return names

    update.write_index_file = paused
    x = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    ids = update.add_items(sys.argv[1], x, [f"child {i}" for i in range(5)], [{"repo": "child"}] * 5)
    print("added", *ids.tolist(), flush=True)
    """
)


def start_writer(path) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "writing"
    return child


def test_a_second_writer_fails_at_once_and_nothing_is_lost(index_dir, capsys):
    child = start_writer(index_dir)
    try:
        busy = rf"{index_dir}: the index is being written by PID {child.pid}; try again when it finishes"
        with pytest.raises(IndexBusyError, match=busy):
            add_items(index_dir, unit(3, seed=2), ["mine"] * 3, [{"repo": "parent"}] * 3)
        with pytest.raises(IndexBusyError, match=busy):
            remove_items(index_dir, [0])
        with pytest.raises(IndexBusyError, match=busy):
            build_index_dir(index_dir, ArrayShards(unit(50)), overwrite=True)
        assert cli.main(["index", "remove", "--index", str(index_dir), "--ids", "1"]) == 2
        err = capsys.readouterr().err
        assert f"being written by PID {child.pid}" in err and err.count("\n") == 1
        with SearchIndex.load(index_dir) as index:  # readers are not blocked
            assert len(index) == 200 and index.search_vectors(unit(1), 3)[1].shape == (1, 3)
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().split() == ["added", "200", "201", "202", "203", "204"]
        assert child.wait(30) == 0
    finally:
        child.kill()
        child.wait()
    ids = add_items(index_dir, unit(3, seed=2), ["mine"] * 3, [{"repo": "parent"}] * 3)  # the retry
    assert ids.tolist() == [205, 206, 207]
    with SearchIndex.load(index_dir) as index:
        assert len(index) == 208
        assert len(index.filter_ids({"repo": "child"})) == 5 and len(index.filter_ids({"repo": "parent"})) == 3


def test_a_killed_writer_releases_the_lock_and_its_leftovers_are_removed(index_dir):
    child = start_writer(index_dir)
    child.send_signal(signal.SIGKILL)
    child.wait()
    parent = index_dir.parent
    killed = [p.name for p in parent.iterdir() if p.name.startswith(f".idx.{child.pid}.")]
    assert len(killed) == 1  # the new version it was writing
    legacy = parent / ".idx.k3j4h5ab.tmp"  # an older mmssl's temporaries had no PID in the name
    (legacy / "lexical").mkdir(parents=True)
    (legacy / "index.faiss").write_bytes(b"partial")
    (legacy / "meta.sqlite-journal").write_bytes(b"")
    mine = parent / ".idx.notes_ab.tmp"  # the same pattern, but a user's: kept
    mine.mkdir()
    (mine / "todo.txt").write_text("mine")
    other = parent / ".idx.embeddings.x.tmp"  # not this index's
    other.write_text("x")
    ids = add_items(index_dir, unit(2, seed=3), ["a", "b"], [{}, {}])  # the lock died with its holder
    assert ids.tolist() == [200, 201]
    assert sorted(p.name for p in parent.iterdir()) == sorted(["idx", mine.name, other.name])
    with write_lock(index_dir):
        assert (index_dir / ".lock").read_text().strip() == str(os.getpid())


def test_adding_again_adds_nothing(index_dir):
    texts, payloads = items(range(200, 204), repo="new")
    first = add_items(index_dir, unit(4, seed=4), texts, payloads)
    assert first.tolist() == [200, 201, 202, 203]
    manifest = (index_dir / "manifest.json").read_text()
    again = add_items(index_dir, unit(4, seed=4), texts, payloads)  # a retry of an add that had landed
    assert again.tolist() == [] and (index_dir / "manifest.json").read_text() == manifest  # no new version
    # part of a batch already there (the built items too): only the rest is added
    old_texts, old_payloads = items([5, 6])
    mixed = add_items(index_dir, unit(4, seed=5), [texts[0], "fresh", *old_texts], [payloads[0], {}, *old_payloads])
    assert mixed.tolist() == [204]
    # repeats within one batch are added as given (as a build keeps them), and only once
    twice = add_items(index_dir, unit(2, seed=6), ["same", "same"], [{"k": 1}, {"k": 1}])
    assert twice.tolist() == [205, 206]
    assert add_items(index_dir, unit(2, seed=6), ["same", "same"], [{"k": 1}, {"k": 1}]).tolist() == []
    with SearchIndex.load(index_dir) as index:
        assert len(index) == 207 and len(index.lexical) == 207
    # a removed item can be added again
    remove_items(index_dir, [200])
    assert add_items(index_dir, unit(1, seed=4), texts[:1], payloads[:1]).tolist() == [207]


def rerecord(path, **fields) -> None:
    """Rewrite the manifest with ``fields`` changed and every listed file's size and sha256 as it is now."""
    m = Manifest.from_file(path / "manifest.json")
    names = {n.split("/")[0] for n in m.files}
    files = {k: v for k, v in record_files(path, names).items()}
    raw = json.loads(m.to_json())
    raw.update(files={k: {"bytes": v.bytes, "sha256": v.sha256} for k, v in files.items()}, **fields)
    (path / "manifest.json").write_text(json.dumps(raw))


def test_an_index_from_before_fingerprints_is_read_and_upgraded_by_its_next_add(index_dir):
    with sqlite3.connect(index_dir / "meta.sqlite") as conn:  # the store as mmssl wrote it before
        conn.execute("DROP INDEX items_fingerprint")
        conn.execute("ALTER TABLE items DROP COLUMN fingerprint")
        conn.execute("PRAGMA user_version = 0")
    conn.close()
    rerecord(index_dir)
    with SearchIndex.load(index_dir, verify=True) as index:
        assert not index.store.has_fingerprints and index.search(["f5"], 1, mode="lexical")[0][0].id == 5
    texts, payloads = items([5, 6])
    ids = add_items(index_dir, unit(3, seed=7), [*texts, "new"], [*payloads, {}])  # 5 and 6 are there
    assert ids.tolist() == [200]
    with sqlite3.connect(index_dir / "meta.sqlite") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM items WHERE fingerprint IS NULL").fetchone()[0] == 0
    conn.close()
    assert add_items(index_dir, unit(2, seed=7), texts, payloads).tolist() == []


def test_a_filter_on_a_field_no_payload_has_is_an_error(index_dir, capsys):
    with SearchIndex.load(index_dir) as index:
        with pytest.raises(ValueError, match=r"filter field 'nosuchfield': no item's payload has it.*path, repo"):
            index.search(["f1"], 3, mode="lexical", where={"nosuchfield": "1"})
        assert index.search(["f1"], 3, mode="lexical", where={"repo": "elsewhere"}) == [[]]  # a value: no hits
        assert [h.id for h in index.search(["f1"], 1, mode="lexical", where={"repo": "r"})[0]] == [1]
    argv = ["index", "search", "--index", str(index_dir), "--query", "f1", "--mode", "lexical"]
    assert cli.main([*argv, "--where", "nosuchfield=1"]) == 2
    err = capsys.readouterr().err
    assert "'nosuchfield'" in err and "path, repo" in err and err.count("\n") == 1
    assert cli.main(["index", "remove", "--index", str(index_dir), "--where", "repo=r", "--where", "nope=1"]) == 2
    assert "'nope'" in capsys.readouterr().err
    with SearchIndex.load(index_dir) as index:
        assert len(index) == 200


def test_load_checks_the_manifest_against_the_files_and_the_index(index_dir, tmp_path, capsys):
    import faiss

    path = index_dir
    good = (path / "manifest.json").read_text()

    def fails(pattern: str, **fields) -> None:
        rerecord(path, **fields)
        with pytest.raises(IndexDirError, match=pattern):
            SearchIndex.load(path).close()
        (path / "manifest.json").write_text(good)

    (path / "manifest.json").write_text(json.dumps({**json.loads(good), "files": {}}))
    with pytest.raises(IndexDirError, match=r"manifest\.json: field 'files' does not list index\.faiss"):
        SearchIndex.load(path)
    for argv in (["index", "info", "--index", str(path)], ["index", "info", "--index", str(path), "--verify"]):
        assert cli.main(argv) == 2
        assert "does not list index.faiss" in capsys.readouterr().err
    files = json.loads(good)["files"]
    (path / "manifest.json").write_text(
        json.dumps({**json.loads(good), "files": {"index.faiss": files["index.faiss"]}})
    )
    with pytest.raises(IndexDirError, match="does not list meta.sqlite"):
        SearchIndex.load(path)
    (path / "manifest.json").write_text(good)
    fails(r"field 'metric' is 'cosine'; known: ip, l2", metric="cosine")
    fails(r"index\.faiss: an index of type flat, manifest\.json says index_type hnsw", index_type="hnsw")
    fails(r"field 'index_type' is 'lsh'", index_type="lsh")
    fails(r"field 'query_modality' is 'Text!'", query_modality="Text!")
    fails(r"field 'query_modality' is 'code', the items' modality too", modality="code", query_modality="code")
    fails(r"'search_params' has 'efSearch', which a flat index does not take", search_params={"efSearch": 16})
    fails(r"field 'count' must be a non-negative integer", count=-1)
    fails(r"index\.faiss: 200 vectors, manifest\.json says count 201", count=201)

    # another valid FAISS file of the same shape, with another metric (and its checksums recorded)
    other = faiss.IndexIDMap2(faiss.IndexFlatL2(8))
    other.add_with_ids(unit(200), np.arange(200))
    faiss.write_index(other, str(path / "index.faiss"))
    fails(r"index\.faiss: metric l2, manifest\.json says metric ip")
    ivf = faiss.index_factory(8, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    ivf.train(unit(200))
    ivf.add_with_ids(unit(200), np.arange(200))
    faiss.write_index(ivf, str(path / "index.faiss"))
    fails(r"index\.faiss: an index of type ivf_flat, manifest\.json says index_type flat")

    # the metadata or the lexical side of another index
    build_index_dir(tmp_path / "small", ArrayShards(unit(150)), (np.arange(150), *items(range(150))), lexical=True)
    faiss.write_index(faiss.read_index(str(tmp_path / "small" / "index.faiss")), str(path / "index.faiss"))
    rerecord(path, count=150)
    with pytest.raises(IndexDirError, match=r"meta\.sqlite: 200 items, manifest\.json says count 150"):
        SearchIndex.load(path)
    build_index_dir(tmp_path / "full", ArrayShards(unit(200)), (np.arange(200), *items(range(200))), lexical=True)
    for name in ("index.faiss", "meta.sqlite"):
        (path / name).write_bytes((tmp_path / "full" / name).read_bytes())
    LexicalIndex.load(tmp_path / "small" / "lexical").save(path / "lexical")
    rerecord(path, count=200)
    with pytest.raises(IndexDirError, match=r"lexical/ids\.npy: 150 items, meta\.sqlite holds 200"):
        SearchIndex.load(path)
    (path / "lexical" / "extra.npy").write_bytes(b"x")
    with pytest.raises(IndexDirError, match=r"does not list lexical/extra\.npy"):
        SearchIndex.load(path)
