"""Safe writes: a file or a directory appears whole or not at all, what was there survives a crash,
and nothing a user made is replaced without ``--overwrite``; and ``Closable``, the context-manager
protocol of objects that hold a file or connection.

``atomic_file``: written to a temporary sibling, flushed and fsynced, then ``os.replace``d over the
target. ``atomic_dir``: built in a temporary sibling, then swapped in (one atomic exchange on
Linux; elsewhere the old directory is moved aside first) and the parent directory fsynced. Both
give what they make the permissions of the user's umask, like ``open``/``mkdir`` do, and remove the
temporaries that killed writers left beside the same target. ``check_output`` is the one rule every
command that writes applies to its ``--out``. ``c_library()`` is the C library, loaded once.
``model_fingerprint(dir)``: the sha256 that names a model directory's content (indexes record it).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


def current_umask() -> int:
    """The process's umask (read from /proc where there is one: setting it to read it races threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that writers of ``path`` which no longer run left beside it
    (``.NAME.PID.*.tmp`` and ``.NAME.old-PID``); returns what was removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(\d+)\..*\.tmp|old-(\d+))$")
    removed = []
    for sibling in path.parent.iterdir():
        m = pattern.match(sibling.name)
        if not m or _pid_alive(int(m.group(1) or m.group(2))):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                sibling.unlink()
        removed.append(sibling)
    return removed


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a directory's entries (a rename into it) durable."""
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened and synced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary sibling of ``path`` for writing; it replaces ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600 whatever the umask
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it takes the place of ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700 whatever the umask
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists() and _exchange(tmp, path):  # tmp now holds the old directory
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        old = None
        if path.exists():  # no atomic exchange here: a crash between the renames leaves .NAME.old-PID
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    fsync_dir(path.parent)


_RENAME_EXCHANGE = 2


@functools.cache
def c_library() -> ctypes.CDLL | None:
    """The C library, loaded once (``find_library`` runs ``ldconfig``); None where it cannot be."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``, which the standard library
    does not wrap); False where the system or filesystem cannot."""
    renameat2 = getattr(c_library(), "renameat2", None) if sys.platform.startswith("linux") else None
    if renameat2 is None:
        return False
    at_fdcwd = -100
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


def check_output(
    path: str | os.PathLike,
    overwrite: bool,
    what: str,
    markers: tuple[str, ...] = (),
    flag: str = "--out",
    also: str = "",
) -> None:
    """The one rule for a command's output ``path``, checked before anything is written.

    Nothing there, or an empty directory: fine. Something there: refused unless ``overwrite``;
    ``also`` names another way out (``--resume``). A directory output (``markers`` given: files one
    of which the command itself writes there) that holds none of them was not made by this command
    and is refused even with ``overwrite``: ``--overwrite`` never deletes a user's own folder."""
    path = Path(path)
    if not path.exists():
        return
    if markers:
        if not path.is_dir():
            raise ValueError(f"{flag} {path}: exists and is not a directory")
        if not any(path.iterdir()):
            return
        if not any((path / m).exists() for m in markers):
            raise ValueError(f"{flag} {path}: a non-empty directory that does not hold {what}; choose another path")
    elif path.is_dir():
        raise ValueError(f"{flag} {path}: is a directory; give a file name")
    if not overwrite:
        raise ValueError(f"{flag} {path}: already holds {what}; pass --overwrite to replace it{also}")


def read_json_object(path: str | os.PathLike, error: type[ValueError] = ValueError) -> dict:
    """The JSON object stored in ``path``; ``error`` naming the file if it is not JSON or not an object."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path}: invalid JSON ({e})") from None
    if not isinstance(value, dict):
        raise error(f"{path}: expected a JSON object")
    return value


class Closable:
    """A context manager for objects with ``close()``: ``with X(...) as x:`` closes on leaving."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over a model directory's files (relative path and bytes, in sorted order).

    Two directories with the same weights, configs and tokenizer files have the same fingerprint
    wherever they are; retraining, or swapping a tokenizer, changes it.
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such model directory")
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(sha256_file(path).encode())
    return h.hexdigest()
