"""CodeSearchNet data layer: reading and validating shards, atomic writes, the datasets bridge."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
from pathlib import Path

import pytest

from mmssl.data import code_search as cs
from mmssl.data.code_search import (
    CODE_SEARCH_FIELDS,
    DataError,
    read_code_search,
    write_code_search,
)


def _rec(i: int, partition: str = "train", **extra) -> dict:
    return {
        "repo": f"org/repo{i % 3}",
        "path": f"src/m{i}.py",
        "func_name": f"f{i}",
        "original_string": f"def f{i}():\n    return {i}",
        "language": "python",
        "code": f"def f{i}():\n    return {i}",
        "code_tokens": ["def", f"f{i}", "(", ")", ":", "return", str(i)],
        "docstring": f"Return the number {i}.",
        "docstring_tokens": ["Return", "the", "number", str(i), "."],
        "url": f"https://example.org/m{i}.py#L1-L2",
        "partition": partition,
        **extra,
    }


def _write_lines(path: Path, lines: list[bytes]) -> Path:
    data = b"".join(lines)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _jsonl(records: list[dict]) -> list[bytes]:
    return [json.dumps(r).encode() + b"\n" for r in records]


# ------------------------------------------------------------------------------------------ reading


def test_read_files_directories_and_gz_shards_in_sorted_order(tmp_path):
    root = tmp_path / "corpus"
    (root / "b").mkdir(parents=True)
    (root / ".hidden").mkdir()
    _write_lines(root / "b" / "shard_0.jsonl.gz", _jsonl([_rec(2, "valid"), _rec(3, "test")]))
    _write_lines(root / "a_0.jsonl", [*_jsonl([_rec(0), _rec(1)]), b"\n", b"   \n"])
    _write_lines(root / ".hidden" / "x.jsonl", _jsonl([_rec(99)]))
    (root / "notes.txt").write_text("not a shard")

    corpus = read_code_search(root)
    assert [r["func_name"] for r in corpus] == ["f0", "f1", "f2", "f3"]
    assert corpus.records[0] == _rec(0)
    assert (corpus.stats.n_read, corpus.stats.n_kept, corpus.stats.skipped) == (4, 4, {})
    assert (
        len(corpus) == 4 and corpus.docstrings()[2] == "Return the number 2." and corpus.codes()[1] == _rec(1)["code"]
    )

    both = read_code_search([root / "b" / "shard_0.jsonl.gz", str(root / "a_0.jsonl")])
    assert [r["func_name"] for r in both] == ["f2", "f3", "f0", "f1"]


def test_partition_filter(tmp_path):
    path = _write_lines(tmp_path / "c.jsonl", _jsonl([_rec(0), _rec(1, "valid"), _rec(2, "test"), _rec(3)]))
    train = read_code_search(path, partition="train")
    assert [r["func_name"] for r in train] == ["f0", "f3"]
    assert (train.stats.n_read, train.stats.n_kept, train.stats.n_filtered) == (4, 2, 2)
    assert [r["func_name"] for r in read_code_search(path, partition={"valid", "test"})] == ["f1", "f2"]


def test_a_byte_order_mark_on_the_first_line_is_accepted(tmp_path):
    path = _write_lines(tmp_path / "bom.jsonl", [b"\xef\xbb\xbf", *_jsonl([_rec(0)])])
    assert read_code_search(path).records == [_rec(0)]


def test_minimal_records_get_defaults_and_extra_fields_are_kept(tmp_path):
    path = _write_lines(tmp_path / "m.jsonl", [b'{"docstring": "Sort a list.", "code": "sorted(x)", "sha": "abc"}\n'])
    (record,) = read_code_search(path).records
    assert set(CODE_SEARCH_FIELDS) < set(record) and record["sha"] == "abc"
    assert record["code_tokens"] == [] and record["repo"] == "" and record["partition"] == ""
    assert read_code_search(path, partition="train").records == []


BAD_LINES = {
    "json": b'{"docstring": "d", "code": \n',
    "not_object": b'["docstring", "code"]\n',
    "missing_field": b'{"docstring": "Sort a list."}\n',
    "wrong_type": b'{"docstring": 3, "code": "x"}\n',
    "wrong_type_tokens": b'{"docstring": "d", "code": "x", "code_tokens": ["a", 1]}\n',
    "encoding": b'{"docstring": "caf\xe9", "code": "x"}\n',
}


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_each_bad_line_names_file_and_line_or_is_skipped_and_counted(tmp_path, kind, suffix):
    good = _jsonl([_rec(0)])
    path = _write_lines(tmp_path / f"bad{suffix}", [*good, b"\n", BAD_LINES[kind], *_jsonl([_rec(1)])])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:3: ") as e:
        read_code_search(path)
    assert (e.value.path, e.value.line) == (str(path), 3)

    corpus = read_code_search(path, on_error="skip")
    reason = kind.removesuffix("_tokens")
    assert [r["func_name"] for r in corpus] == ["f0", "f1"]
    assert corpus.stats.skipped == {reason: 1} and corpus.stats.n_read == 3 and corpus.stats.n_kept == 2
    assert corpus.stats.first_errors == [str(e.value)]


def test_required_fields_are_configurable(tmp_path):
    path = _write_lines(tmp_path / "c.jsonl", [b'{"docstring": "Sort a list.", "code": "x"}\n'])
    with pytest.raises(DataError, match=r":1: missing required field\(s\) 'url'"):
        read_code_search(path, required=("docstring", "code", "url"))


def test_truncated_gzip_names_file_and_line_reached(tmp_path):
    records = [_rec(i) for i in range(400)]
    full = gzip.compress(b"".join(_jsonl(records)))
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=r"truncated or corrupt gzip") as e:
        read_code_search(path)
    assert e.value.path == str(path) and 1 < e.value.line < 400

    corpus = read_code_search(path, on_error="skip")
    assert len(corpus) == e.value.line - 1 and corpus.records == records[: len(corpus)]
    assert corpus.stats.skipped == {"truncated": 1}

    path.write_bytes(full[:-4])  # only the trailer is missing: every line is there, the file is not
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:401: truncated"):
        read_code_search(path)


def test_not_gzip_data_in_a_gz_file(tmp_path):
    path = _write_lines(tmp_path / "plain.jsonl", _jsonl([_rec(0)])).rename(tmp_path / "plain.jsonl.gz")
    with pytest.raises(DataError, match=r"plain\.jsonl\.gz:1: truncated or corrupt gzip"):
        read_code_search(path)


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        read_code_search(tmp_path / "missing.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no \*\.jsonl"):
        read_code_search(tmp_path / "empty")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"x\.csv: expected a \.jsonl"):
        read_code_search(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="on_error"):
        read_code_search(tmp_path, on_error="ignore")  # type: ignore[arg-type]


def _parquet(path: Path, rows: list[dict], row_group_size: int = 2) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def test_parquet_rows_read_as_the_same_records_as_json_lines(tmp_path):
    import datetime

    records = [_rec(i, ["train", "test"][i % 2]) for i in range(5)]
    (tmp_path / "j").mkdir()
    _write_lines(tmp_path / "j" / "a.jsonl", _jsonl(records))
    (tmp_path / "p").mkdir()
    _parquet(tmp_path / "p" / "a.parquet", records)  # three row groups: read a batch at a time
    assert read_code_search(tmp_path / "p").records == read_code_search(tmp_path / "j").records
    assert read_code_search(tmp_path / "p", partition="test").docstrings() == ["Return the number 1.",
                                                                               "Return the number 3."]  # fmt: skip
    # a column JSON has no type for is kept as its str; nulls read as missing fields
    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    minimal = [{"docstring": "Add.", "code": "def add(): pass", "stars": 3, "seen": when, "path": None}]
    record = read_code_search(_parquet(tmp_path / "m.parquet", minimal)).records[0]
    assert record["stars"] == 3 and record["seen"] == str(when) and record["path"] == ""


def test_a_bad_parquet_row_names_file_and_row_or_is_skipped(tmp_path):
    rows = [{"docstring": "One.", "code": "x"}, {"docstring": None, "code": "y"}, {"docstring": "Three.", "code": "z"}]
    path = _parquet(tmp_path / "rows.parquet", rows)
    with pytest.raises(DataError, match=r"rows\.parquet:2: missing required field\(s\) 'docstring'"):
        read_code_search(path)
    corpus = read_code_search(path, on_error="skip")
    assert corpus.docstrings() == ["One.", "Three."] and corpus.stats.skipped == {"missing_field": 1}
    typed = _parquet(tmp_path / "typed.parquet", [{"docstring": "A.", "code": "a", "url": 7}])
    with pytest.raises(DataError, match=r"typed\.parquet:1: field 'url' must be a string, got int"):
        read_code_search(typed)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataError, match=r"broken\.parquet:1: unreadable parquet after 0 row\(s\)"):
        read_code_search(broken)
    assert read_code_search([path, broken], on_error="skip").stats.skipped == {"missing_field": 1, "truncated": 1}


def test_data_error_is_a_value_error_and_pickles():
    e = DataError("a/b.jsonl", 7, "malformed JSON")
    assert isinstance(e, ValueError) and str(e) == "a/b.jsonl:7: malformed JSON"
    back = pickle.loads(pickle.dumps(e))
    assert (str(back), back.path, back.line, back.what) == (str(e), e.path, e.line, e.what)


# ------------------------------------------------------------------------------------------ writing


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_write_then_read_round_trips(tmp_path, name):
    records = [_rec(i, ["train", "valid", "test"][i % 3]) for i in range(7)]
    records[3]["docstring"] = "Unicode: café ∑ 😀"
    out = tmp_path / "sub" / name
    assert write_code_search(records, out) == 7
    assert read_code_search(out).records == records
    first = out.read_bytes()
    write_code_search(records, out)
    assert out.read_bytes() == first  # same records, same bytes (no timestamp in the gzip header)
    assert list(out.parent.iterdir()) == [out]


def test_write_fills_defaults_in_field_order(tmp_path):
    out = tmp_path / "o.jsonl"
    write_code_search([{"code": "x = 1", "docstring": "Set x.", "extra": 1}], out)
    assert list(json.loads(out.read_text())) == [*CODE_SEARCH_FIELDS, "extra"]


def test_failed_write_leaves_old_file_intact_and_no_temp_file(tmp_path, monkeypatch):
    out = tmp_path / "corpus.jsonl.gz"
    write_code_search([_rec(0)], out)
    before = out.read_bytes()

    def failing():
        yield from (_rec(i) for i in range(100))
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_code_search(failing(), out)
    assert out.read_bytes() == before and os.listdir(tmp_path) == [out.name]

    with pytest.raises(DataError, match=rf"^{re.escape(str(out))}:3: record 3: field 'docstring' must be a string"):
        write_code_search([_rec(0), _rec(1), {"docstring": 5, "code": "x"}], out)
    with pytest.raises(DataError, match=r":2: record 2 cannot be written"):
        write_code_search([_rec(0), {"docstring": "d", "code": "x", "extra": object()}], out)
    assert out.read_bytes() == before and os.listdir(tmp_path) == [out.name]

    def no_replace(src, dst):
        raise OSError("replace failed")

    monkeypatch.setattr(cs.os, "replace", no_replace)
    with pytest.raises(OSError, match="replace failed"):
        write_code_search([_rec(5)], out)
    assert out.read_bytes() == before and os.listdir(tmp_path) == [out.name]


def test_write_rejects_other_names(tmp_path):
    with pytest.raises(ValueError, match=r"\.jsonl or \.jsonl\.gz"):
        write_code_search([_rec(0)], tmp_path / "out.json")


def test_a_corpus_converts_to_a_hf_dataset(tmp_path):
    records = [_rec(i, ["train", "valid"][i % 2]) for i in range(6)]
    write_code_search(records, tmp_path / "d" / "c.jsonl.gz")
    ds = read_code_search(tmp_path / "d").to_hf_dataset()
    assert len(ds) == 6 and ds[4]["code_tokens"] == records[4]["code_tokens"]
