"""Atomic files and directories: all or nothing, and the old version survives a failure."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from mmssl.io import atomic_dir, atomic_file, check_output, current_umask


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


@pytest.fixture
def umask():
    """Set the process umask for one test, restored after."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


MODES = [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)]  # umask, file, directory


@pytest.mark.parametrize("mask,file_mode,dir_mode", MODES)
def test_files_and_directories_get_the_users_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    assert current_umask() == mask
    with atomic_file(tmp_path / "f.txt", "w") as f:
        f.write("x")
    with atomic_dir(tmp_path / "d") as d:
        (d / "inner").write_text("y")
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == dir_mode


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    (tmp_path / f".model.{dead}.abc.tmp").mkdir()  # a killed atomic_dir
    (tmp_path / f".model.{dead}.abc.tmp" / "weights").write_text("partial")
    (tmp_path / f".model.old-{dead}").mkdir()  # killed between the two renames
    (tmp_path / f".data.txt.{dead}.xyz.tmp").write_text("partial")
    (tmp_path / f".model.{alive}.def.tmp").mkdir()  # a writer still running: kept
    (tmp_path / ".model.notapid.tmp").mkdir()  # not ours: kept
    with atomic_dir(tmp_path / "model") as d:
        (d / "weights").write_text("v1")
    with atomic_file(tmp_path / "data.txt", "w") as f:
        f.write("v1")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["model", "data.txt", f".model.{alive}.def.tmp", ".model.notapid.tmp"])


def test_atomic_dir_swaps_in_one_step_where_the_system_can(tmp_path, monkeypatch):
    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "weights").write_text("v1")
    renames = []
    real_replace = os.replace
    monkeypatch.setattr("mmssl.io.os.replace", lambda a, b: renames.append((a, b)) or real_replace(a, b))
    with atomic_dir(target) as d:
        (d / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    assert renames == []  # renameat2(RENAME_EXCHANGE): never a moment with nothing at the path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_check_output_is_one_rule_for_files_and_directories(tmp_path):
    check_output(tmp_path / "new", False, "a run", ("metrics.jsonl",))  # nothing there
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", False, "a run", ("metrics.jsonl",))
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match=r"--out .*run: already holds a run; pass --overwrite to replace it or"):
        check_output(run, False, "a run", ("metrics.jsonl",), also=" or --resume to continue it")
    check_output(run, True, "a run", ("metrics.jsonl",))
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"x")
    for overwrite in (False, True):  # never replaces a folder the command did not make
        with pytest.raises(ValueError, match="does not hold a run; choose another path"):
            check_output(mine, overwrite, "a run", ("metrics.jsonl",))
    f = tmp_path / "table.jsonl"
    f.write_text("x")
    with pytest.raises(ValueError, match="--out .*table.jsonl: already holds negatives"):
        check_output(f, False, "negatives")
    check_output(f, True, "negatives")
    with pytest.raises(ValueError, match="is a directory"):
        check_output(run, True, "negatives")
