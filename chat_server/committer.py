"""Group commit: concurrent sends share one database transaction.

Sessions submit messages with a callback; one task drains whatever is pending into a
single ``append_batch`` (one transaction, one fsync), calls each message's callback
right after the commit (in batch order), and starts over. While a batch commits, new
sends queue up and form the next batch, so durability costs one round trip per batch
instead of one per message, and an ack can never precede the commit that holds its
message. A plain callback, not a future plus a scheduled done-callback, saves a future
and an event-loop round trip per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol, TypeAlias

from protocol.clock import now_ms
from protocol.errors import ProtocolError
from storage.records import AppendResult, NewMessage

from .logs import log_event

__all__ = ["CommitFailed", "GroupCommitter", "OnCommitted"]

#: Called once per message: with its slot of the append (the stored record, the original
#: of an identical retry, or the refusal) after the commit holding it, or with
#: ``CommitFailed`` when the whole transaction failed. It runs in the committer's task,
#: so it must not block; whatever it raises is logged.
OnCommitted: TypeAlias = Callable[[AppendResult | ProtocolError], None]


class _MessageStore(Protocol):
    async def append_batch(
        self, batch: Sequence[NewMessage], now_ms: int
    ) -> Sequence[AppendResult]: ...


class GroupCommitter:
    def __init__(self, store: _MessageStore, *, max_batch: int = 512) -> None:
        self._store = store
        self._max_batch = max_batch
        self._pending: list[tuple[NewMessage, OnCommitted]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        # Slots of the current batch whose callback has been called (for the crash path).
        self._resolved = 0
        self.batches = 0
        self.messages = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    def submit(self, message: NewMessage, on_committed: OnCommitted) -> None:
        """Queue ``message``; ``on_committed`` is called after its commit (or with its error)."""
        self._pending.append((message, on_committed))
        if self._idle.is_set():
            self._idle.clear()
        if not self._wake.is_set():
            self._wake.set()

    async def drain(self) -> None:
        """Wait until everything submitted so far is committed (or failed) and acked."""
        await self._idle.wait()

    async def stop(self) -> None:
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                self._resolved = 0
                try:
                    await self._commit(batch)
                except Exception:  # a bug must not stop every later commit, nor hang drain()
                    log_event("commit.crashed", logging.CRITICAL, exc=True, size=len(batch))
                    for _, on_committed in batch[self._resolved :]:
                        _call(on_committed, CommitFailed())
            self._idle.set()

    async def _commit(self, batch: list[tuple[NewMessage, OnCommitted]]) -> None:
        now = now_ms()
        try:
            results = await self._store.append_batch([m for m, _ in batch], now)
        except Exception:  # the whole transaction failed: nothing was stored
            log_event("commit.failed", logging.ERROR, exc=True, size=len(batch))
            for _, on_committed in batch:
                _call(on_committed, CommitFailed())
            self._resolved = len(batch)
            return
        if len(results) != len(batch):
            raise RuntimeError(f"append_batch returned {len(results)} results for {len(batch)}")
        self.batches += 1
        self.messages += len(batch)
        for (_, on_committed), result in zip(batch, results, strict=True):
            self._resolved += 1
            _call(on_committed, result)


def _call(on_committed: OnCommitted, outcome: AppendResult | ProtocolError) -> None:
    try:
        on_committed(outcome)
    except Exception:
        # Logged here, not left to asyncio's handler: that would print the callback's
        # arguments, and one failing callback must not keep the others from running.
        log_event("commit.callback_failed", logging.ERROR, exc=True)


class CommitFailed(ProtocolError):
    """The database refused the batch; the client retries with the same client_msg_id."""
