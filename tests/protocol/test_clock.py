"""protocol/clock.py: the one wall clock, in integer milliseconds."""

from __future__ import annotations

import time

from protocol.clock import now_ms


def test_now_ms_is_the_wall_clock_in_milliseconds() -> None:
    before = time.time()
    now = now_ms()
    after = time.time()
    assert isinstance(now, int)
    assert int(before * 1000) <= now <= int(after * 1000)
