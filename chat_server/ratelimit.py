"""A token bucket: ``rate`` tokens per second, holding at most ``burst``.

Each session has one (limits in docs/PROTOCOL.md 11); a frame that finds it empty is
answered ``rate_limited`` and not processed. The clock is injectable for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    __slots__ = ("_burst", "_clock", "_rate", "_stamp", "_tokens")

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._stamp = clock()

    def take(self) -> bool:
        """Take one token; False when the bucket is empty (the caller refuses the frame)."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until :meth:`take` can succeed again (0 when it can now)."""
        missing = 1.0 - self._tokens
        if missing <= 0:
            return 0.0
        return missing / self._rate if self._rate > 0 else float("inf")
