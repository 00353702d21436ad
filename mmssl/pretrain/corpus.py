"""Unlabeled text for pretraining: read documents, tokenize them, pack them into full blocks.

Shape legend: N blocks, T tokens per block (``block_size``).

Documents (``read_documents``), from files and folders:
- ``.jsonl`` / ``.jsonl.gz`` / ``.parquet`` (CodeSearchNet shards, caption files, any JSON Lines
  or parquet rows): each of
  ``fields`` of each record is one document; ``partition`` keeps the records of one partition
  (pretraining on the test split would leak it into the evaluation); records without a
  ``partition`` field are kept. A bad line is a ``DataError`` naming file and line.
- any other file is UTF-8 text: one document per non-empty line (``unit="line"``) or per file
  (``unit="file"``: a source file, a book). Bytes that are not UTF-8 are a ``DataError`` naming
  file and line.
- a folder stands for the files below it that match ``pattern`` (hidden ones left out), sorted.
``load_dataset_documents`` takes the same fields from any ``datasets`` dataset: a ``save_to_disk``
folder, a data file loader, or a hub name for users who are online.

Packing (``pack``): each document is tokenized with its special tokens (``<s> doc </s>``), the
token streams are concatenated in order and cut into blocks of exactly T tokens; the tail shorter
than T is dropped. No block holds padding, so no compute goes to it. Attention crosses document
boundaries inside a block, as in BERT's and GPT-2's own pretraining and transformers'
``run_mlm``/``run_clm`` examples; the separator tokens mark where a document ends.
"""

from __future__ import annotations

import bisect
import fnmatch
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from mmssl.data.code_search import READ_SUFFIXES, DataError, files_below, read_code_search

Unit = Literal["line", "file"]
IDENTIFIER = re.compile(r"[^\W\d]\w*")  # a Python identifier: one unit of identifier masking
DEFAULT_PATTERN = "*.jsonl,*.jsonl.gz,*.parquet,*.txt"


def _files(sources: Sequence[str | os.PathLike], pattern: str) -> list[Path]:
    patterns = [p.strip() for p in pattern.split(",") if p.strip()]
    files: list[Path] = []
    if not sources:
        raise ValueError("no data given (--data FILE_OR_FOLDER ...)")
    for p in map(Path, sources):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            found = files_below(p, lambda name: any(fnmatch.fnmatch(name, pat) for pat in patterns))
            if not found:
                raise ValueError(f"{p}: no file matching {pattern!r} in this folder")
            files += found
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return files


def _text_documents(path: Path, unit: Unit) -> list[str]:
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    decoded = []
    for i, line in enumerate(lines, 1):
        try:
            decoded.append(line.decode("utf-8-sig" if i == 1 else "utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(path, i, f"invalid UTF-8 at byte {e.start} of the line") from None
    if unit == "file":
        text = "\n".join(decoded)
        return [text] if text.strip() else []
    return [line.rstrip("\r") for line in decoded if line.strip()]


def read_documents(
    sources: Sequence[str | os.PathLike],
    fields: Sequence[str] = ("docstring", "code"),
    partition: str | None = "train",
    unit: Unit = "line",
    pattern: str = DEFAULT_PATTERN,
) -> list[str]:
    """The documents of ``sources`` in order (see the module docstring); empty documents left out."""
    if unit not in ("line", "file"):
        raise ValueError(f"text unit must be 'line' or 'file'; got {unit!r}")
    fields = tuple(fields)
    docs: list[str] = []
    for path in _files(sources, pattern):
        if path.name.endswith(READ_SUFFIXES):
            corpus = read_code_search(path, required=fields)
            kept = [r for r in corpus if not partition or not r.get("partition") or r["partition"] == partition]
            if corpus.records and not kept:
                raise ValueError(f"{path}: no record has partition {partition!r} (--partition '' keeps all)")
            docs += [r[f] for r in kept for f in fields if r[f].strip()]
        else:
            docs += _text_documents(path, unit)
    if not docs:
        raise ValueError(f"{', '.join(map(str, sources))}: no documents")
    return docs


def load_dataset_documents(name: str, fields: Sequence[str] = ("text",), split: str = "train") -> list[str]:
    """Documents from a ``datasets`` dataset: a ``save_to_disk`` folder or a ``load_dataset`` name."""
    import datasets

    path = Path(name)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"{name}: no split {split!r}; it has {', '.join(ds)}")
            ds = ds[split]
    else:
        ds = datasets.load_dataset(name, split=split)
    missing = [f for f in fields if f not in ds.column_names]
    if missing:
        raise ValueError(f"{name}: no column {missing[0]!r}; columns are {', '.join(ds.column_names)}")
    docs = []
    for f in fields:
        for i, value in enumerate(ds[f]):
            if value is None:
                continue
            if not isinstance(value, str):
                raise ValueError(f"{name}: row {i}, column {f!r}: expected text, got {type(value).__name__}")
            if value.strip():
                docs.append(value)
    return docs


def split_documents(docs: list[str], fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, valid): a seeded random ``fraction`` of the documents held out, order kept."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"valid fraction must be in [0, 1); got {fraction}")
    n_valid = int(round(fraction * len(docs)))
    held = set(torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed))[:n_valid].tolist())
    return [d for i, d in enumerate(docs) if i not in held], [d for i, d in enumerate(docs) if i in held]


@dataclass(frozen=True)
class PackedBlocks:
    """Blocks of T tokens with no padding; ``offsets`` (character spans of each token in its own
    document, for whole-word masking) and ``groups`` (tokens of one identifier share a number, every
    other token has its own: for identifier and span masking) only when asked for."""

    input_ids: Tensor  # (N, T) int64
    special_tokens_mask: Tensor  # (N, T) bool: <s>, </s>, ... (never masked)
    offsets: Tensor | None = None  # (N, T, 2) int64
    groups: Tensor | None = None  # (N, T) int64, unique per identifier (or lone token) of the stream

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def block_size(self) -> int:
        return self.input_ids.shape[1]

    @property
    def n_tokens(self) -> int:
        return self.input_ids.numel()

    def subset(self, indices: Tensor) -> PackedBlocks:
        return PackedBlocks(
            self.input_ids[indices],
            self.special_tokens_mask[indices],
            self.offsets[indices] if self.offsets is not None else None,
            self.groups[indices] if self.groups is not None else None,
        )

    def fingerprint(self) -> str:
        """A short hash of the tokens, stored in checkpoints so that resume refuses other data."""
        return hashlib.sha1(self.input_ids.numpy().tobytes()).hexdigest()[:16]


def identifier_groups(text: str, offsets: list[tuple[int, int]], first: int) -> tuple[list[int], int]:
    """A group number per token of one document: tokens that overlap one identifier of ``text``
    (``IDENTIFIER``) share it; every other token, special ones included (offsets (0, 0)), has its
    own. Numbers start at ``first``; returns them and the next free one."""
    spans = [m.span() for m in IDENTIFIER.finditer(text)]
    starts = [a for a, _ in spans]
    groups = []
    for i, (a, b) in enumerate(offsets):
        k = bisect.bisect_right(starts, a) - 1
        inside = b > a and k >= 0 and a < spans[k][1]
        groups.append(first + k if inside else first + len(spans) + i)
    return groups, first + len(spans) + len(offsets)


def pack(
    tokenizer,
    docs: Iterable[str],
    block_size: int,
    with_offsets: bool = False,
    chunk: int = 2000,
    with_groups: bool = False,
) -> PackedBlocks:
    """Tokenize ``docs`` with their special tokens, concatenate, cut into (N, block_size) blocks."""
    if block_size < 2:
        raise ValueError(f"block size must be at least 2 tokens; got {block_size}")
    docs = list(docs)
    # One tensor per chunk of documents, joined at the end: Python lists of every token of a
    # corpus would cost some 36 bytes a token, the tensors 8.
    ids, special, offsets, groups = [], [], [], []
    next_group = 0
    for start in range(0, len(docs), chunk):
        part = docs[start : start + chunk]
        enc = tokenizer(
            part,
            add_special_tokens=True,
            truncation=False,
            return_special_tokens_mask=True,
            return_offsets_mapping=with_offsets or with_groups,
            return_attention_mask=False,
            verbose=False,  # documents longer than the model's length are what packing is for
        )
        ids.append(torch.tensor(list(chain.from_iterable(enc["input_ids"])), dtype=torch.long))
        special.append(torch.tensor(list(chain.from_iterable(enc["special_tokens_mask"])), dtype=torch.bool))
        if with_offsets:
            offsets.append(torch.tensor(list(chain.from_iterable(enc["offset_mapping"])), dtype=torch.long))
        if with_groups:
            numbers = []
            for text, spans in zip(part, enc["offset_mapping"]):
                doc_groups, next_group = identifier_groups(text, spans, next_group)
                numbers += doc_groups
            groups.append(torch.tensor(numbers, dtype=torch.long))
    total = sum(len(t) for t in ids)
    n = total // block_size
    if n == 0:
        raise ValueError(f"{total} tokens in all: not one block of {block_size}")
    keep = n * block_size
    return PackedBlocks(
        input_ids=torch.cat(ids)[:keep].view(n, block_size),  # (N, T)
        special_tokens_mask=torch.cat(special)[:keep].view(n, block_size),  # (N, T)
        offsets=torch.cat(offsets)[:keep].view(n, block_size, 2) if with_offsets else None,  # (N, T, 2)
        groups=torch.cat(groups)[:keep].view(n, block_size) if with_groups else None,  # (N, T)
    )
