"""The data commands: ``mmssl data mine-code`` (``MineCodeConfig``, ``mine_code``: a CodeSearchNet-format
corpus mined from Python source trees, or with ``--unlabeled`` their train partition's code for
pretraining) and ``mmssl data make-images`` (``MakeImagesConfig``,
``make_images``: an image-caption set made offline)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from mmssl.data.code_search import SHARD_SUFFIXES, write_code_search
from mmssl.data.images import MAKERS, MakeImagesConfig
from mmssl.data.mine import PARTITIONS, SplitBy, mine_python, mine_unlabeled
from mmssl.io import atomic_dir, check_output


@dataclass(frozen=True)
class MineCodeConfig:
    """Mine a CodeSearchNet-format corpus of (docstring, function) pairs from Python source trees."""

    sources: list[str] = field(
        metadata={"help": "source roots to walk (folders of .py files, or single .py files)"},
    )
    out: str = field(metadata={"help": "output file, .jsonl or .jsonl.gz (written atomically)"})
    split_by: SplitBy = field(
        default="repo",
        metadata={"help": "draw partitions per repo (top-level package) or per file; never per function"},
    )
    valid_fraction: float = field(default=0.1, metadata={"help": "fraction of functions for the valid partition"})
    test_fraction: float = field(default=0.1, metadata={"help": "fraction of functions for the test partition"})
    seed: int = field(default=0, metadata={"help": "seed of the partition draw"})
    min_docstring_tokens: int = field(
        default=3, metadata={"help": "drop functions whose docstring's first paragraph has fewer tokens"}
    )
    min_code_lines: int = field(
        default=3, metadata={"help": "drop functions with fewer lines of code (docstring, blanks, comments excluded)"}
    )
    max_files: int | None = field(
        default=None, metadata={"help": "parse at most this many files (first in sorted order)"}
    )
    processes: int | None = field(default=None, metadata={"help": "processes parsing files (default: one per CPU)"})
    unlabeled: bool = field(
        default=False,
        metadata={
            "help": "write code for pretraining instead: every function (docstring or not) and module body of "
            "the train partition only (the partitions the same command without --unlabeled draws)"
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --out file"})


def mine_code(config: MineCodeConfig) -> int:
    """Mine, write ``config.out`` atomically, print a summary. Raises ``ValueError`` if nothing is kept."""
    if not config.out.endswith(SHARD_SUFFIXES):
        raise ValueError(f"--out {config.out!r}: the name must end with .jsonl or .jsonl.gz")
    check_output(config.out, config.overwrite, "a corpus")
    started = time.perf_counter()
    options = dict(
        split_by=config.split_by,
        valid_fraction=config.valid_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        min_docstring_tokens=config.min_docstring_tokens,
        min_code_lines=config.min_code_lines,
        max_files=config.max_files,
        workers=config.processes,
    )
    if config.unlabeled:
        return _mine_unlabeled(config, options, started)
    records, stats = mine_python(config.sources, **options)
    if not records:
        raise ValueError(
            f"no functions kept from {stats.files_parsed} parsed file(s) of {stats.files_seen}; nothing written"
        )
    write_code_search(records, config.out)
    seconds = time.perf_counter() - started
    unit = "repos" if config.split_by == "repo" else "files"
    failed = sum(stats.files_failed.values())
    print(
        f"files: {stats.files_seen} seen, {stats.files_test} test files skipped, {stats.files_parsed} parsed, "
        f"{failed} failed{f' {stats.files_failed}' if failed else ''}"
    )
    for error in stats.first_errors[:3]:
        print(f"  {error}")
    print(f"functions: {stats.functions_seen} seen, {stats.functions_kept} kept")
    print("dropped: " + ", ".join(f"{reason} {n}" for reason, n in stats.dropped.items()))
    print(
        "partitions: " + ", ".join(f"{p} {stats.partitions[p]} ({stats.partition_keys[p]} {unit})" for p in PARTITIONS)
    )
    print(f"wrote {len(records)} records to {config.out} in {seconds:.1f}s")
    return 0


def _mine_unlabeled(config: MineCodeConfig, options: dict, started: float) -> int:
    records, stats = mine_unlabeled(config.sources, **options)
    labeled = stats.labeled
    if not records:
        raise ValueError(
            f"no code kept from {labeled.files_parsed} parsed file(s) of {labeled.files_seen}; nothing written"
        )
    write_code_search(records, config.out)
    unit = "repos" if config.split_by == "repo" else "files"
    print(f"files: {labeled.files_seen} seen, {labeled.files_test} test files skipped, {labeled.files_parsed} parsed")
    print(
        f"kept: {stats.kept['function']} functions, {stats.kept['module']} module bodies (train partition: "
        f"{labeled.partition_keys['train']} {unit} with labeled pairs, and those without any)"
    )
    print(
        f"left out: {stats.held_out_repo} in valid/test {unit}, {stats.held_out_code} equal to a valid/test "
        f"function, {stats.duplicate} duplicates"
    )
    print(f"wrote {len(records)} records to {config.out} in {time.perf_counter() - started:.1f}s")
    return 0


def make_images(config: MakeImagesConfig) -> int:
    out = Path(config.out)
    check_output(out, config.overwrite, "an image set", ("dataset.json", "metadata.jsonl"))
    started = time.perf_counter()
    with atomic_dir(out) as tmp:
        for split in ("train", "test"):
            (tmp / split).mkdir()
        made = MAKERS[config.kind](tmp, config)
        rows = made["rows"]
        with (tmp / "metadata.jsonl").open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "test")}
        info = {"kind": config.kind, "size": config.size, "counts": counts, **made["notes"]}
        (tmp / "dataset.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    print(
        f"wrote {len(rows):,} {config.kind} images ({counts['train']:,} train, {counts['test']:,} test) "
        f"to {out} in {time.perf_counter() - started:.1f}s"
    )
    return 0
