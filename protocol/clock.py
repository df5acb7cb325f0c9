"""Wall-clock time as the protocol states it: integer milliseconds since the Unix epoch.

The one ``now_ms`` of the code base: timestamps in frames, records, tokens and the
audit log all come from here (a clock read is not I/O; tests that need another time
pass their own value where a function takes ``now_ms``).
"""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    return int(time.time() * 1000)
