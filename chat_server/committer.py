"""Group commit: concurrent sends share one database transaction.

``msg.send`` submits its message with the sending peer and the request id; one task
drains whatever is pending into a single ``append_batch`` (one transaction, one fsync),
hands each message's outcome to the session registry's ``deliver`` right after the
commit (in batch order), and starts over. While a batch commits, new sends queue up and
form the next batch, so durability costs one round trip per batch instead of one per
message, and an ack can never precede the commit that holds its message. Delivery is a
plain call, not a future plus a scheduled done-callback (that saved a future and an
event-loop round trip per message), and it goes straight to the registry: a commit
never re-enters the use case that submitted it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from protocol.clock import now_ms
from protocol.errors import ProtocolError
from protocol.frames import MessageRecord
from storage.records import AppendResult, NewMessage

from .context import Peer
from .logs import log_event
from .metrics import HubMetrics

__all__ = ["CommitFailed", "Deliverer", "GroupCommitter", "MessageStore"]


class MessageStore(Protocol):
    """What the committer needs of ``storage.messages.MessageRepository``."""

    async def append_batch(
        self, batch: Sequence[NewMessage], now_ms: int
    ) -> Sequence[AppendResult]: ...


class Deliverer(Protocol):
    """What the committer needs of the session registry (``SessionRegistry.deliver``).

    Called once per submitted message, in submission order, in the committer's task: with
    the message's slot of the append after the commit holding it, or with
    :class:`CommitFailed` when the whole transaction failed. It must not block; whatever
    it raises is logged and does not keep the other messages from being delivered.
    """

    def deliver(
        self,
        sender: Peer,
        request_id: str,
        participants: tuple[str, ...],
        outcome: AppendResult | ProtocolError,
    ) -> None: ...


#: One submitted message: what to store, and where its answer goes.
_Pending = tuple[NewMessage, Peer, str, tuple[str, ...]]


class GroupCommitter:
    def __init__(
        self,
        store: MessageStore,
        deliverer: Deliverer,
        *,
        max_batch: int = 512,
        metrics: HubMetrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._deliver = deliverer.deliver
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        # Slots of the current batch that have been delivered (for the crash path).
        self._resolved = 0
        self.batches = 0
        self.messages = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    def submit(
        self, message: NewMessage, sender: Peer, request_id: str, participants: tuple[str, ...]
    ) -> None:
        """Queue ``message``; its outcome is delivered to ``sender`` (the answer to
        ``request_id``) and, if it is new, to ``participants``, after its commit."""
        self._pending.append((message, sender, request_id, participants))
        if self._idle.is_set():
            self._idle.clear()
        if not self._wake.is_set():
            self._wake.set()

    async def drain(self) -> None:
        """Wait until everything submitted so far is committed (or failed) and delivered."""
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
                    for pending in batch[self._resolved :]:
                        self._call(pending, CommitFailed())
            self._idle.set()

    async def _commit(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            results = await self._store.append_batch([p[0] for p in batch], now_ms())
        except Exception:  # the whole transaction failed: nothing was stored
            if self._metrics is not None:
                self._metrics.observe_commit(messages=len(batch), stored=0, seconds=0, ok=False)
            log_event("commit.failed", logging.ERROR, exc=True, size=len(batch))
            for pending in batch:
                self._call(pending, CommitFailed())
            self._resolved = len(batch)
            return
        if len(results) != len(batch):
            raise RuntimeError(f"append_batch returned {len(results)} results for {len(batch)}")
        self.batches += 1
        self.messages += len(batch)
        if self._metrics is not None:
            self._metrics.observe_commit(
                messages=len(batch),
                stored=sum(1 for r in results if type(r) is MessageRecord),
                seconds=time.perf_counter() - started,
                ok=True,
            )
        call = self._call
        for pending, result in zip(batch, results, strict=True):
            self._resolved += 1
            call(pending, result)

    def _call(self, pending: _Pending, outcome: AppendResult | ProtocolError) -> None:
        _, sender, request_id, participants = pending
        try:
            self._deliver(sender, request_id, participants, outcome)
        except Exception:
            # Logged here, not left to asyncio's handler: that would print the arguments,
            # and one failing delivery must not keep the others from running.
            log_event("commit.callback_failed", logging.ERROR, exc=True)


class CommitFailed(ProtocolError):
    """The database refused the batch; the client retries with the same client_msg_id."""
