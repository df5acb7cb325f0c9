"""Group commit: concurrent sends share one database transaction.

Sessions submit messages and get a future; one task drains whatever is pending into a
single ``append_batch`` (one transaction, one fsync), resolves the futures after the
commit, and starts over. While a batch commits, new sends queue up and form the next
batch, so durability costs one round trip per batch instead of one per message, and
an ack can never precede the commit that holds its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from protocol.errors import ProtocolError
from storage.records import Appended, NewMessage

from .logs import log_event

__all__ = ["CommitFailed", "Committed", "GroupCommitter"]


@dataclasses.dataclass(frozen=True, slots=True)
class Committed:
    """A message's place in its case, known only once its transaction has committed."""

    seq: int
    chain_hash: bytes
    duplicate: bool
    server_ts: int


class _MessageStore(Protocol):
    async def append_batch(
        self, batch: Sequence[NewMessage], now_ms: int
    ) -> Sequence[Appended | ProtocolError]: ...


class GroupCommitter:
    def __init__(self, store: _MessageStore, *, max_batch: int = 512) -> None:
        self._store = store
        self._max_batch = max_batch
        self._pending: list[tuple[NewMessage, asyncio.Future[Committed]]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.messages = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    def submit(self, message: NewMessage) -> asyncio.Future[Committed]:
        """Queue ``message``; the future resolves after its commit (or with its error)."""
        future: asyncio.Future[Committed] = asyncio.get_running_loop().create_future()
        self._pending.append((message, future))
        self._idle.clear()
        self._wake.set()
        return future

    async def drain(self) -> None:
        """Wait until everything submitted so far is committed (or failed)."""
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
                try:
                    await self._commit(batch)
                except Exception:  # a bug must not stop every later commit, nor hang drain()
                    log_event("commit.crashed", logging.CRITICAL, exc=True, size=len(batch))
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(CommitFailed())
            self._idle.set()

    async def _commit(self, batch: list[tuple[NewMessage, asyncio.Future[Committed]]]) -> None:
        now_ms = int(time.time() * 1000)
        try:
            results = await self._store.append_batch([m for m, _ in batch], now_ms)
        except Exception:  # the whole transaction failed: nothing was stored
            log_event("commit.failed", logging.ERROR, exc=True, size=len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(CommitFailed())
            return
        self.batches += 1
        self.messages += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, ProtocolError):
                future.set_exception(result)
            else:
                future.set_result(
                    Committed(result.seq, result.chain_hash, result.duplicate, now_ms)
                )


class CommitFailed(ProtocolError):
    """The database refused the batch; the client retries with the same client_msg_id."""
