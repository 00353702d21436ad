"""``mmssl.data.sources``: where a mined file comes from (``origin_of``, ``SourceFile.source_url``)
and which partition its repository or file goes to (``assign_partitions``)."""

from __future__ import annotations

import platform
import random
import sysconfig
from collections import defaultdict
from pathlib import Path

from mmssl.data.mine import mine_python
from mmssl.data.sources import assign_partitions, find_python_files, origin_of


def test_the_standard_library_and_site_packages_are_told_apart_from_a_users_tree(tmp_path):
    paths = sysconfig.get_paths()
    assert origin_of(Path(paths["stdlib"])) == "stdlib"
    assert origin_of(Path(paths["purelib"])) == "installed"
    assert origin_of(tmp_path / "lib" / "site-packages") == "installed"
    assert origin_of(tmp_path) == ""


def test_stdlib_records_carry_their_origin_and_their_lines_in_cpythons_repository(tmp_path):
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = find_python_files([stdlib / "json", stdlib / "csv.py"])
    assert {f.origin for f in files} == {"stdlib"} and {f.repo for f in files} == {"json", "csv"}
    records, _ = mine_python([stdlib / "json", stdlib / "csv.py"], workers=1)
    assert records and all(r["origin"] == "stdlib" for r in records)
    tag = f"v{platform.python_version()}"
    for r in records:
        lines = r["url"].split("#", 1)[1]
        assert r["source_url"] == f"https://github.com/python/cpython/blob/{tag}/Lib/{r['path']}#{lines}"
        first = int(lines.split("-")[0][1:])  # the def line, as it stands in the file
        assert (stdlib / r["path"]).read_text().splitlines()[first - 1].lstrip().startswith(("def ", "async def "))
    own = tmp_path / "own"
    own.mkdir()
    (own / "tool.py").write_text('def run(x):\n    """Run the tool on x now."""\n    y = x\n    z = y\n    return z\n')
    (record,), _ = mine_python([own], min_code_lines=1, workers=1)
    assert "origin" not in record and "source_url" not in record


def test_partition_fractions_hold_with_a_few_huge_keys():
    rng = random.Random(0)
    sizes = {f"repo{i}": rng.randint(1, 40) for i in range(400)}
    sizes |= {"huge0": 900, "huge1": 700, "huge2": 500}
    total = sum(sizes.values())
    fractions = {"train": 0.8, "valid": 0.1, "test": 0.1}
    for seed in range(3):
        parts = assign_partitions(sizes, fractions, seed)
        counts = defaultdict(int)
        for key, part in parts.items():
            counts[part] += sizes[key]
        for part, frac in fractions.items():
            assert abs(counts[part] / total - frac) < 0.02, (seed, dict(counts))
    assert assign_partitions(sizes, fractions, 0) == assign_partitions(dict(reversed(sizes.items())), fractions, 0)
    assert assign_partitions(sizes, fractions, 0) != assign_partitions(sizes, fractions, 1)
    assert set(assign_partitions(sizes, {"train": 0.9, "valid": 0.0, "test": 0.1}).values()) == {"train", "test"}


def test_a_repo_bigger_than_the_test_share_goes_to_train():
    """One package holding a third of all functions (torch in site-packages) must not land in
    valid or test, whatever its place in the hash order."""
    rng = random.Random(1)
    sizes = {f"repo{i}": rng.randint(1, 40) for i in range(300)}
    sizes["giant"] = sum(sizes.values()) // 2
    total = sum(sizes.values())
    fractions = {"train": 0.8, "valid": 0.1, "test": 0.1}
    for seed in range(6):
        parts = assign_partitions(sizes, fractions, seed)
        assert parts["giant"] == "train"
        for part in ("valid", "test"):
            share = sum(sizes[k] for k, p in parts.items() if p == part) / total
            assert abs(share - 0.1) < 0.02, (seed, part, share)
