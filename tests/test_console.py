"""``mmssl.console``: the texts people read (remaining times)."""

from __future__ import annotations

import math

from mmssl.console import format_eta


def test_remaining_times_read_in_the_unit_that_fits():
    assert [format_eta(s) for s in (0, 44.6, 89, 90, 600, 5399, 5400, 9000)] == [
        "0 s", "45 s", "89 s", "2 min", "10 min", "90 min", "1.5 h", "2.5 h",
    ]  # fmt: skip
    assert format_eta(math.inf) == format_eta(-1) == format_eta(math.nan) == "?"


def test_off_a_terminal_logs_are_whole_lines_and_progress_is_a_periodic_line(capsys):
    from mmssl.console import get_logger, progress, setup_logging

    setup_logging()  # stderr is pytest's capture here: not a terminal
    get_logger("test").info("word " * 60)
    assert list(progress(range(4), description="embedding code", every=0)) == [0, 1, 2, 3]
    assert list(progress(range(4), description="quick")) == [0, 1, 2, 3]  # under 30 s: no line
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 5 and lines[0].endswith("INFO    " + "word " * 60)
    assert [line.split("INFO    ")[1].split(",")[0] for line in lines[1:]] == [
        "embedding code: 1/4 (25 %)", "embedding code: 2/4 (50 %)", "embedding code: 3/4 (75 %)",
        "embedding code: 4/4 (100 %)",
    ]  # fmt: skip
    assert lines[1].endswith("left")
