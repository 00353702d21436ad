"""The write lock of an index directory: one writer at a time (add, remove, build --overwrite).

A writer holds ``fcntl.flock`` on ``DIR/.lock`` (which then holds its PID) from before it reads
the current version until the new one is in place. A second writer does not wait: it fails at once
with a one-line error naming the holder's PID. The kernel releases the lock when the holder ends or
dies, so a killed writer never leaves the index locked. Readers (search, info) take no lock: a new
version is swapped in whole (``mmssl.io.atomic_dir``), so they see the old version or the new.

The swap replaces the directory, ``.lock`` with it: a writer that opened the old ``.lock`` and got
the lock after the swap holds a lock nobody else checks, so it checks that ``DIR/.lock`` is still
the file it locked, and tries again if not.

Taking the lock also removes what killed writers of this index left beside it: ``mmssl.io``'s
temporaries of writers that no longer run, and temporary directories of an index version that
mmssl wrote before temporaries carried the writer's PID (``.DIR.XXXXXXXX.tmp`` holding only index
files): with the lock held, nobody is writing them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from mmssl.io import remove_stale_temporaries

LOCK_FILE = ".lock"
# the files an index version holds while it is written (indexing.store, indexing.build)
_INDEX_NAMES = re.compile(
    r"^(manifest\.json|index\.faiss|ivf\.ondisk|meta\.sqlite(-journal|-wal|-shm)?|lexical|trained\.faiss"
    r"|part-\d+\.faiss|\.lock)$"
)


class IndexBusyError(ValueError):
    """Another process is writing the index (a ``ValueError``: the CLI prints it as one line)."""


@contextlib.contextmanager
def write_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the write lock of the index directory ``path`` (which must exist), or raise ``IndexBusyError``."""
    path = Path(path)
    fd = _acquire(path)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        remove_leftovers(path)
        yield
    finally:
        os.close(fd)  # releases the flock


def _acquire(path: Path) -> int:
    lock = path / LOCK_FILE
    for _ in range(100):  # each retry means a writer swapped a new version in meanwhile
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such index directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise IndexBusyError(
                f"{path}: the index is being written by {holder}; try again when it finishes"
            ) from None
        try:
            now = os.stat(lock)
        except FileNotFoundError:
            now = None
        mine = os.fstat(fd)
        if now is not None and (now.st_ino, now.st_dev) == (mine.st_ino, mine.st_dev):
            return fd
        os.close(fd)  # the lock file of a version that has just been replaced
    raise IndexBusyError(f"{path}: the index keeps being replaced by other writers; try again")


def _holder(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f"PID {text}" if text.isdigit() else "another process"


def remove_leftovers(path: Path) -> list[Path]:
    """Remove the temporaries that killed writers of the index ``path`` left beside it (call with
    the write lock held); returns what was removed."""
    removed = remove_stale_temporaries(path)
    legacy = re.compile(rf"^\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp$")  # tempfile's 8 random characters
    for sibling in path.parent.iterdir():
        if not legacy.match(sibling.name) or sibling.is_symlink() or not sibling.is_dir():
            continue
        if all(_INDEX_NAMES.match(p.name) for p in sibling.iterdir()):
            shutil.rmtree(sibling, ignore_errors=True)
            removed.append(sibling)
    return removed
