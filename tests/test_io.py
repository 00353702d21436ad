"""Atomic files and directories: all or nothing, and the old version survives a failure."""

from __future__ import annotations

import pytest

from mmssl.io import atomic_dir, atomic_file


def test_atomic_file_replaces_only_on_success(tmp_path):
    target = tmp_path / "data.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target, "w") as f:
            f.write("half of the new")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt"]  # no temp file left
    with atomic_file(target, "w") as f:
        f.write("new")
    assert target.read_text() == "new"


def test_atomic_dir_keeps_the_old_directory_on_failure(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "weights").write_text("v1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as d:
            (d / "weights").write_text("v2, partial")
            raise KeyboardInterrupt
    assert (target / "weights").read_text() == "v1"
    with atomic_dir(target) as d:
        (d / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
