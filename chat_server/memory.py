"""Give freed memory back to the operating system after a burst (issue 13, item 2).

A slow consumer's send queue (up to ``send_queue_bytes``) is freed the moment its session
ends, but glibc's allocator keeps freed heap pages for reuse, so the process's resident
set stays at its peak after a burst of never-reading clients. ``malloc_trim(0)`` returns
the free pages (glibc >= 2.8 also releases free pages inside the heap with
``MADV_DONTNEED``). It walks the heap, so :class:`Trimmer` runs it at most once per
``interval_s`` and only after something large was freed. Elsewhere (musl, macOS) it
does nothing: their allocators return large blocks themselves.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import sys
from collections.abc import Callable

__all__ = ["Trimmer", "malloc_trim"]


def _load_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_trim = _load_trim()


def malloc_trim() -> bool:
    """Return free heap memory to the OS now; False where that is not available."""
    if _trim is None:
        return False
    _trim(0)
    return True


class Trimmer:
    """``freed()`` after releasing something large: a trim follows within ``interval_s``,
    one for any number of releases in that time."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self._interval_s = interval_s
        self._pending: asyncio.TimerHandle | None = None

    def freed(self) -> None:
        if self._pending is None and _trim is not None:
            self._pending = asyncio.get_running_loop().call_later(self._interval_s, self._run)

    def _run(self) -> None:
        self._pending = None
        malloc_trim()

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
