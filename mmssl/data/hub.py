"""CodeSearchNet corpora as ``datasets.Dataset``s, through ``datasets.load_dataset``: local shards
(JSON Lines or parquet, the format of ``mmssl.data.code_search``) or the Hugging Face hub's
``code_search_net``, its column names renamed to the format's. ``datasets`` is imported on call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmssl.data.code_search import READ_SUFFIXES, PathLike, shard_files

if TYPE_CHECKING:
    import datasets

# Column names of the Hugging Face hub's ``code_search_net`` dataset -> ours.
_HUB_COLUMNS = {
    "repository_name": "repo",
    "func_path_in_repository": "path",
    "func_name": "func_name",
    "whole_func_string": "original_string",
    "language": "language",
    "func_code_string": "code",
    "func_code_tokens": "code_tokens",
    "func_documentation_string": "docstring",
    "func_documentation_tokens": "docstring_tokens",
    "split_name": "partition",
    "func_code_url": "url",
}


def load_code_search_dataset(
    name_or_files: PathLike | Iterable[PathLike] | Mapping[str, Any],
    split: str | None = "train",
    *,
    config: str | None = None,
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """A CodeSearchNet corpus as a ``datasets.Dataset``, through ``datasets.load_dataset``.

    Local data (a path that exists, a list of paths, or a ``{split: files}`` mapping as
    ``data_files`` takes it) goes through the ``json`` builder; directories expand to their
    shards. With a path or list, every row forms one set and ``split`` keeps the rows whose
    ``partition`` column equals it (``None`` keeps all); with a mapping, ``split`` picks its key.
    Anything else is a hub name, e.g. ``load_code_search_dataset("code_search_net", "test",
    config="python")`` (needs the network; the hub's column names are renamed to ours).
    Unlike ``read_code_search`` this neither validates rows nor fills missing fields.
    """
    import datasets

    if isinstance(name_or_files, Mapping):
        return datasets.load_dataset("json", data_files=dict(name_or_files), split=split, cache_dir=cache_dir)
    is_name = isinstance(name_or_files, str) and not Path(name_or_files).exists()
    if is_name and not name_or_files.endswith(READ_SUFFIXES):  # type: ignore[union-attr]
        ds = datasets.load_dataset(name_or_files, config, split=split, cache_dir=cache_dir)
        renames = {old: new for old, new in _HUB_COLUMNS.items() if old in ds.column_names and old != new}
        return ds.rename_columns(renames) if renames else ds
    files = [str(p) for p in shard_files(name_or_files)]  # type: ignore[arg-type]
    parquet = [f for f in files if f.endswith(".parquet")]
    if parquet and len(parquet) < len(files):
        raise ValueError(f"{parquet[0]}: parquet and JSON Lines shards in one dataset: keep one kind")
    builder = "parquet" if parquet else "json"
    ds = datasets.load_dataset(builder, data_files=files, split="train", cache_dir=cache_dir)
    if split is None:
        return ds
    if "partition" not in ds.column_names:
        raise ValueError(f"{files[0]}: no 'partition' column to select split {split!r}; pass split=None")
    return ds.filter(lambda p: p == split, input_columns="partition")
