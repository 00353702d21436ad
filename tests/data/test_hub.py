"""mmssl.data.hub: CodeSearchNet corpora through ``datasets.load_dataset``, checked against
``read_code_search`` on the same files (no network: the hub's loader is replaced in one test)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmssl.data.code_search import read_code_search, write_code_search
from mmssl.data.hub import load_code_search_dataset


def records(n: int) -> list[dict]:
    return [
        {"func_name": f"f{i}", "docstring": f"Return {i}.", "code": f"def f{i}():\n    return {i}",
         "partition": ["train", "valid"][i % 2], "code_tokens": ["def", f"f{i}"]}
        for i in range(n)
    ]  # fmt: skip


def test_local_json_lines_load_as_the_records_read_code_search_reads(tmp_path):
    write_code_search(records(6), tmp_path / "d" / "c.jsonl.gz")
    cache = str(tmp_path / "cache")
    every = load_code_search_dataset([str(tmp_path / "d" / "c.jsonl.gz")], split=None, cache_dir=cache)
    assert every.to_list() == read_code_search(tmp_path / "d").records
    valid = load_code_search_dataset(tmp_path / "d", split="valid", cache_dir=cache)
    assert valid["func_name"] == ["f1", "f3", "f5"]
    by_split = load_code_search_dataset({"test": str(tmp_path / "d" / "c.jsonl.gz")}, split="test", cache_dir=cache)
    assert len(by_split) == 6


def test_parquet_shards_load_and_a_mix_of_kinds_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    pq.write_table(pa.Table.from_pylist(records(4)), tmp_path / "d" / "c.parquet")
    valid = load_code_search_dataset(tmp_path / "d", split="valid", cache_dir=str(tmp_path / "cache"))
    assert valid["func_name"] == ["f1", "f3"]
    write_code_search(records(4), tmp_path / "d" / "c.jsonl")
    with pytest.raises(ValueError, match=r"c\.parquet: parquet and JSON Lines shards in one dataset"):
        load_code_search_dataset(tmp_path / "d", split=None)


def test_a_split_needs_a_partition_column(tmp_path):
    (tmp_path / "d").mkdir()
    pq.write_table(pa.Table.from_pylist([{"docstring": "a", "code": "b"}]), tmp_path / "d" / "c.parquet")
    with pytest.raises(ValueError, match=r"c\.parquet: no 'partition' column to select split 'train'"):
        load_code_search_dataset(tmp_path / "d", cache_dir=str(tmp_path / "cache"))


def test_a_hub_name_goes_to_load_dataset_and_its_columns_get_the_format_s_names(monkeypatch):
    import datasets

    calls = []

    def hub(name, config, split, cache_dir):  # what the hub's code_search_net returns, offline
        calls.append((name, config, split))
        row = {"func_name": "f", "func_code_string": "def f(): pass", "func_documentation_string": "Do f.",
               "split_name": "test", "whole_func_string": "def f():\n    pass"}  # fmt: skip
        return datasets.Dataset.from_list([row])

    monkeypatch.setattr(datasets, "load_dataset", hub)
    ds = load_code_search_dataset("code_search_net", "test", config="python")
    assert calls == [("code_search_net", "python", "test")]
    assert ds.to_list() == [
        {"func_name": "f", "code": "def f(): pass", "docstring": "Do f.", "partition": "test",
         "original_string": "def f():\n    pass"}
    ]  # fmt: skip
