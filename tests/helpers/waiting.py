"""Bounded waits for tests: wait for the thing itself, never for a fixed time.

:func:`within` awaits an event (a task, an ``asyncio.Event``, a reply) under a deadline;
:func:`wait_until` polls a condition that has no event to await (a row in the hub's
database, a frame a browser saw). Both fail with an ``AssertionError`` naming what was
awaited, instead of a bare ``TimeoutError`` or an assertion on stale state.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["wait_until", "within"]

T = TypeVar("T")

#: How often :func:`wait_until` looks again; short, so a test waits about as long as
#: the condition takes to become true.
POLL_S = 0.02


async def within(awaitable: Awaitable[T], seconds: float, what: str) -> T:
    """The result of ``awaitable``, or AssertionError if it takes over ``seconds``."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds} s waiting for {what}") from None


async def wait_until(
    check: Callable[[], T | Awaitable[T]], what: str, *, timeout: float = 10.0
) -> T:
    """Call ``check`` (sync or async) until it returns something truthy and return that;
    AssertionError naming ``what`` and the last value if ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {value!r}")
        await asyncio.sleep(POLL_S)
