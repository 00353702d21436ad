"""Where the miner's functions come from and where they go: ``find_python_files`` (the ``.py`` files
under source roots, each with the repository it belongs to; ``is_test_file`` marks test code) and
``assign_partitions`` (a seeded train/valid/test draw per repository or file, never per function)."""

from __future__ import annotations

import hashlib
import os
import platform
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

TEST_DIRS = frozenset({"test", "tests", "testing"})
_PRUNED_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages"})


@dataclass(frozen=True)
class SourceFile:
    """One ``.py`` file to mine: its absolute path, the path shown in records, its repo, and where
    its root is (``origin_of``: "stdlib", "installed" or "")."""

    path: Path
    rel: str
    repo: str
    origin: str = ""

    def source_url(self, first: int, last: int) -> str | None:
        """The file's lines on the web where that is known: the standard library's, in CPython's
        repository at the running Python's tag (the root is this interpreter's own stdlib)."""
        if self.origin != "stdlib":
            return None
        return f"https://github.com/python/cpython/blob/v{platform.python_version()}/Lib/{self.rel}#L{first}-L{last}"


def origin_of(root: Path) -> str:
    """ "stdlib" for the running interpreter's standard library folder, "installed" for a
    site-packages (or dist-packages) folder, else "" (a user's own source tree)."""
    resolved = root.resolve()
    if resolved == Path(sysconfig.get_paths()["stdlib"]).resolve():
        return "stdlib"
    installed = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    if resolved in installed or resolved.name in _PRUNED_DIRS - {"__pycache__"}:
        return "installed"
    return ""


def is_test_file(rel: str) -> bool:
    """True for ``test_*.py``, ``*_test.py``, ``conftest.py`` and files under a test folder."""
    *dirs, name = rel.split("/")
    return (
        name.startswith("test_")
        or name.endswith("_test.py")
        or name == "conftest.py"
        or any(d in TEST_DIRS for d in dirs)
    )


def _keep_dir(name: str) -> bool:
    return not (name.startswith(".") or name in _PRUNED_DIRS or name.endswith((".dist-info", ".egg-info")))


def find_python_files(roots: Iterable[str | os.PathLike[str]]) -> list[SourceFile]:
    """Every ``.py`` file under the roots (a root may also be one file), sorted by path per root."""
    files: list[SourceFile] = []
    for root in map(Path, roots):
        if root.is_file():
            if root.suffix != ".py":
                raise ValueError(f"{root}: expected a .py file or a directory")
            files.append(SourceFile(root.absolute(), root.name, root.stem, origin_of(root.parent)))
            continue
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such file or directory")
        is_package = (root / "__init__.py").is_file()
        origin = origin_of(root.parent if is_package else root)
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if _keep_dir(d)]
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            for name in filenames:
                if name.endswith(".py") and not name.startswith("."):
                    rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                    found.append(rel)
        for rel in sorted(found):
            path = (root / rel).absolute()
            if is_package:
                files.append(SourceFile(path, f"{root.absolute().name}/{rel}", root.absolute().name, origin))
            else:
                top = rel.split("/", 1)[0]
                files.append(SourceFile(path, rel, top[:-3] if top.endswith(".py") else top, origin))
    return files


def _key_hash(key: str, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()


def assign_partitions(sizes: Mapping[str, int], fractions: Mapping[str, float], seed: int = 0) -> dict[str, str]:
    """Give each key (a repo or file, with ``sizes[key]`` functions) one partition.

    Keys larger than the smallest partition's target are placed first (while every partition still
    has room), then the rest, each group in the order of a hash of (seed, key). Each key goes to the
    partition with the largest shortfall ``fraction * total - assigned`` among those it still fits
    in (ties: the order of ``fractions``); a key that fits nowhere goes to the largest partition.
    So one huge repository (torch in site-packages) cannot swallow valid or test.
    Partitions with fraction 0 get nothing. The result depends only on the keys, sizes and seed.
    """
    targets = {p: f * sum(sizes.values()) for p, f in fractions.items() if f > 0}
    if not targets:
        raise ValueError("at least one partition needs a positive fraction")
    largest = max(targets, key=lambda p: targets[p])
    filled = dict.fromkeys(targets, 0)
    assignment = {}
    smallest = min(targets.values())
    for key in sorted(sizes, key=lambda k: (sizes[k] <= smallest, _key_hash(k, seed), k)):
        fits = [p for p in targets if filled[p] + sizes[key] <= targets[p]]
        part = max(fits, key=lambda p: targets[p] - filled[p]) if fits else largest
        assignment[key] = part
        filled[part] += sizes[key]
    return assignment
