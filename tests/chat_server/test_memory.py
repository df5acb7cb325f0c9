"""memory.py: freed memory goes back to the OS, one trim for a burst of releases."""

from __future__ import annotations

import asyncio
import sys

import pytest

from chat_server import memory


def test_malloc_trim_is_available_on_linux_glibc() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("malloc_trim is glibc's")
    assert memory.malloc_trim() is True


async def test_trimmer_runs_once_for_a_burst_of_releases(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "_trim", calls.append)
    trimmer = memory.Trimmer(interval_s=0.05)
    for _ in range(10):
        trimmer.freed()
    await asyncio.sleep(0.15)
    assert calls == [0]
    trimmer.freed()
    trimmer.cancel()  # shutdown: nothing runs after it
    await asyncio.sleep(0.1)
    assert calls == [0]
