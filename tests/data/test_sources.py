"""``mmssl.data.sources``: where a mined file comes from (``origin_of``, ``SourceFile.source_url``)."""

from __future__ import annotations

import platform
import sysconfig
from pathlib import Path

from mmssl.data.mine import mine_python
from mmssl.data.sources import find_python_files, origin_of


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
