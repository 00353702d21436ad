"""``mmssl.console``: the texts people read (remaining times)."""

from __future__ import annotations

import math

from mmssl.console import format_eta


def test_remaining_times_read_in_the_unit_that_fits():
    assert [format_eta(s) for s in (0, 44.6, 89, 90, 600, 5399, 5400, 9000)] == [
        "0 s", "45 s", "89 s", "2 min", "10 min", "90 min", "1.5 h", "2.5 h",
    ]  # fmt: skip
    assert format_eta(math.inf) == format_eta(-1) == format_eta(math.nan) == "?"
