"""The bad-input cases of ``benchmarks/faults.py``: every bad value of every numeric option, and a
50 MB record in a training corpus (the damaged files are in ``fault_damage.py``).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_cases import (  # noqa: E402
    Row,
    code_records,
    write_jsonl,
)
from fault_runner import Outcome  # noqa: E402
from fault_world import (  # noqa: E402
    N_COLLECTION,
    World,
    train_argv,
)

# ---- 5. bad values of every numeric option ------------------------------------------------------------


def _check_bad_values(names: list[str]) -> list[list]:
    """(runs in a child) ``cli.main`` on every bad value of the commands' options, in an empty cwd
    each: [command, option, value, kind, ok, what was wrong or the error line]."""
    import contextlib
    import io

    from mmssl import cli
    from mmssl.checks import bad_values, unchecked_options

    results = []
    for name in names:
        try:
            config_cls = cli.config_class(name)
            values = [(o, "", "no range declared") for o in unchecked_options(config_cls)]
            values += list(bad_values(config_cls))
            required = cli.placeholder_argv(name)
        except Exception as e:  # noqa: BLE001 - a command whose config cannot be imported
            results.append([name, "", "", "range", False, f"cannot read its options: {type(e).__name__}: {e}"])
            continue
        for option, value, kind in values:
            if kind == "no range declared":
                results.append([name, option, value, "range", False, "no range in mmssl.checks.RANGES"])
                continue
            flag = "--" + option.replace("_", "-")
            cwd = Path(tempfile.mkdtemp(prefix="values."))
            os.chdir(cwd)
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    rc = cli.main([*name.split(), *required, flag, value])
            except SystemExit as e:
                rc = e.code
            except BaseException as e:  # noqa: BLE001 - what escapes main is a traceback for a user
                rc, err = "an exception", io.StringIO(f"Traceback: {type(e).__name__}: {e}")
            lines = err.getvalue().strip().splitlines()
            problems = []
            if rc != 2:
                problems.append(f"exit {rc}")
            if any("Traceback" in line for line in lines):
                problems.append("traceback")
            if len(lines) != 1:
                problems.append(
                    f"{len(lines)} lines" + (" (argparse usage first)" if lines and "usage:" in lines[0] else "")
                )
            if not (lines and lines[-1].startswith(f"mmssl {name}: error:") and flag in lines[-1]):
                problems.append("the last line does not name the option")
            written = [p.name for p in cwd.iterdir()]
            if written:
                problems.append(f"wrote {written}")
            os.chdir("/")
            shutil.rmtree(cwd, ignore_errors=True)
            said = lines[-1][:120] if lines else ""
            results.append([name, option, value, kind, not problems, ", ".join(problems) + f": {said}"])
    return results


def _summary(results: list[list]) -> tuple[str, bool]:
    """'N bad values: M ok', then each kind of failure with its count and one example."""
    bad = [r for r in results if not r[4]]
    kinds: dict[str, list[list]] = {}
    for r in bad:
        kinds.setdefault(re.sub(r"\d+ lines", "N lines", r[5].split(": ")[0]), []).append(r)
    shown = [
        f"{len(rs)} x {why}, e.g. {rs[0][0]} --{rs[0][1].replace('_', '-')} {rs[0][2]}: {rs[0][5]}"
        for why, rs in kinds.items()
    ]
    return f"{len(results)} bad values: {len(results) - len(bad)} ok" + "".join(f"; {x}" for x in shown), not bad


def bad_option_values(world: World, want: Callable[[str], bool]) -> list[Row]:
    """One row per command for out-of-range values (NaN, inf), one for wrong types across all."""
    from mmssl import cli

    expected = "exit 2, one line naming the option, no traceback, nothing written"
    range_case = {name: f"values: {name} (out of range, NaN, inf)" for name in sorted(cli.COMMANDS)}
    type_case = "values: every command (wrong type: a fraction, a word)"
    names = [n for n, case in range_case.items() if want(case) or want(type_case)]
    if not names:
        return []
    try:
        results = world.runner.call(_check_bad_values, names, timeout=900)
    except RuntimeError as e:
        return [Row("values", expected, f"could not run: {e}", False)]
    rows = []
    for name in names:
        mine = [r for r in results if r[0] == name and r[3] == "range"]
        if want(range_case[name]) and mine:
            rows.append(Row(range_case[name], expected, *_summary(mine)))
    typed = [r for r in results if r[3] == "type"]
    if want(type_case) and typed:
        observed, ok = _summary(typed)
        counts = sorted(int(m.group(1)) for r in typed if (m := re.match(r"(\d+) lines", r[5])))
        if counts:
            observed += f" [stderr: {counts[0]} to {counts[-1]} lines]"
        rows.append(Row(type_case, expected, observed, ok))
    return rows


# ---- 7. a 50 MB record ---------------------------------------------------------------------------------


def large_record(world: World, want: Callable[[str], bool], size_mb: int = 50) -> list[Row]:
    name = f"large record: one {size_mb} MB record in the training corpus"
    if not want(name):
        return []
    case = world.fresh("large_record")
    records = code_records(N_COLLECTION)
    small = write_jsonl(records, case / "small.jsonl.gz")
    line = "value = compute(value) + 1  # a long generated function body\n"
    body = "def huge():\n" + "    " + ("    ".join([line] * (size_mb * 2**20 // (len(line) + 4))))
    big = write_jsonl(
        [*records, {**records[2], "path": "pkg/huge.py", "code": body, "docstring": "A huge function."}],
        case / "big.jsonl.gz",
    )
    base = world.runner.run(train_argv(small, case / "run_small", 2), mode="spawn")
    if base.rc != 0:
        return [Row(name, "the run without it succeeds", f"{base.short()}: {base.tail(2)}", False)]
    limit = max(10 * base.wall, 120)
    o = world.runner.run(train_argv(big, case / "run_big", 2), mode="spawn", timeout=limit)
    wall_x, rss_x = o.wall / base.wall, o.maxrss_mb / base.maxrss_mb

    def pairs(run: Outcome) -> str:
        found = re.search(r"([\d,]+) training pairs", run.stderr)
        return found.group(1) if found else "?"

    observed = (
        f"{o.short()}; {o.wall:.1f}s vs {base.wall:.1f}s ({wall_x:.2f}x), "
        f"peak RSS {o.maxrss_mb:.0f} MB vs {base.maxrss_mb:.0f} MB ({rss_x:.2f}x); "
        f"{pairs(o)} vs {pairs(base)} training pairs (fresh processes)"
    )
    if o.rc != 0:
        observed += f": {o.tail(2)}"
    ok = o.rc == 0 and wall_x <= 2 and rss_x <= 2
    return [Row(name, "2-step train finishes, within 2x wall time and 2x peak RSS of the run without it", observed, ok)]
