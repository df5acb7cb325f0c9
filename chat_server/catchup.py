"""Catching live sessions up from the database after the event bus may have lost events.

The bus (``bus.py``) is a wake-up path that drops what it cannot deliver: while a node's
link to Redis is down (Redis restarted, the network broke, the node's queue overflowed),
events published by it, or for its sessions, are lost. Nothing is lost from the
database, so this module turns "some wake-ups may be missing since moment T" into
frames for the sessions this node holds, read from the database (docs/DECISIONS.md 33):

for every case of an account with a live session here that changed at or after T,
in the order such changes happen,

* ``case.assigned`` if it was assigned since T,
* ``case.key.new`` if its newest epoch key was deposited since T,
* ``msg.new`` with its newest message, if that was stored since T: a client that
  missed earlier ones sees the gap in seqs and syncs the rest (the SDK's processor and
  the page's do), one that did not sees a duplicate and drops it,
* ``case.closed`` if it was closed since T.

Clients already treat every one of these as "at least once", so a frame sent twice
costs nothing. Not replayed: typing (ephemeral), receipts (advisory; the next one
supersedes it) and ``dispute.updated`` (``dispute.list`` shows the state).

**When T is.** The bus reports when it last had proof that Redis was alive; T is that
minus :data:`MARGIN_MS`, which covers clocks of different nodes (timestamps in the
database are the writing node's), a commit's duration (a message's ``server_ts`` is
taken when its batch starts) and the publish queue.

**Who catches up.** Events are lost on both sides of a broken link, so:

* this node's bus reconnected (:meth:`on_reconnect`): catch this node's sessions up,
  and publish ``Resync(T)`` so every other node catches its own sessions up for what
  this node could not publish; then run the matching once (:attr:`after_reconnect`),
  since presence answered from this node's view only while Redis was away;
* another node's ``Resync`` arrived (:meth:`on_resync`): catch this node's sessions up;
* a publication was dropped while connected (:meth:`publish_lost`, the queue was full):
  publish ``Resync`` as soon as the bus takes it.

Triggers close together are merged into one pass from the earliest T. A pass that
fails (the database is away too) is retried until it succeeds or the hub stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec

from protocol import frames as f
from storage.engine import Database
from storage.records import CaseActivity

from .bus import EventBus, Resync
from .casebook import case_info
from .logs import log_event
from .metrics import HubMetrics
from .registry import SessionRegistry

__all__ = ["MARGIN_MS", "CatchUp", "catch_up_frames"]

#: How far before the last sign of life from Redis a catch-up starts (see module doc).
MARGIN_MS = 10_000
#: Triggers within this long of each other make one pass.
_MERGE_S = 0.05
#: Wait between attempts when a pass or a Resync publication fails.
_RETRY_S = 0.5


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def catch_up_frames(activity: CaseActivity, since_ms: int) -> list[msgspec.Struct]:
    """The frames that tell a participant of ``activity.case`` what changed since
    ``since_ms``, in the order the changes happen (see the module doc)."""
    case = activity.case
    frames: list[msgspec.Struct] = []
    if case.assigned_at is not None and case.assigned_at >= since_ms:
        frames.append(f.CaseAssigned(case=case_info(case)))
    if activity.new_epoch:
        frames.append(f.CaseKeyNew(case_id=case.id, epoch=case.epoch))
    if activity.last_message is not None:
        frames.append(f.MsgNew(message=activity.last_message))
    if case.closed_at is not None and case.closed_at >= since_ms:
        frames.append(f.CaseClosed(case_id=case.id))
    return frames


class CatchUp:
    """See the module docstring. The bus's callbacks call :meth:`on_reconnect` and
    :meth:`on_resync`; the registry calls :meth:`publish_lost`. Never blocks them."""

    def __init__(
        self,
        db: Database,
        registry: SessionRegistry,
        bus: EventBus,
        *,
        margin_ms: int = MARGIN_MS,
        after_reconnect: Callable[[], Awaitable[None]] | None = None,
        metrics: HubMetrics | None = None,
    ) -> None:
        self._db = db
        self._metrics = metrics
        self._registry = registry
        self._bus = bus
        self._margin_ms = margin_ms
        self.after_reconnect = after_reconnect
        self._since: int | None = None
        self._rematch = False
        self._announce_since: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._announcer: asyncio.Task[None] | None = None
        self._stopped = False
        #: Completed and failed passes, and the frames pushed (read by tests and logs).
        self.passes = 0
        self.failures = 0
        self.frames = 0
        #: Set after every completed pass (tests await it).
        self.caught_up = asyncio.Event()

    # -- triggers --------------------------------------------------------------------

    def on_reconnect(self, since_ms: int) -> None:
        since = since_ms - self._margin_ms
        self._announce(since)
        self._request(since, rematch=True)

    def on_resync(self, since_ms: int) -> None:
        self._request(since_ms, rematch=False)

    def publish_lost(self) -> None:
        self._announce(_wall_ms() - self._margin_ms)

    async def stop(self) -> None:
        self._stopped = True
        for task in (self._task, self._announcer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- telling the others ----------------------------------------------------------

    def _announce(self, since_ms: int) -> None:
        if self._stopped:
            return
        pending = self._announce_since
        self._announce_since = since_ms if pending is None else min(pending, since_ms)
        if self._announcer is None or self._announcer.done():
            self._announcer = asyncio.get_running_loop().create_task(
                self._publish_resync(), name="catchup-announce"
            )

    async def _publish_resync(self) -> None:
        # Published from a task, not from the caller: publish_lost runs inside a
        # publish, and a full queue needs a moment to drain anyway.
        while self._announce_since is not None:
            since = self._announce_since
            if self._bus.publish(Resync(since_ms=since)):
                if self._announce_since == since:
                    self._announce_since = None
                log_event("catchup.announced", lost_since_ms=since)
                continue
            await asyncio.sleep(_RETRY_S)

    # -- catching up -----------------------------------------------------------------

    def _request(self, since_ms: int, *, rematch: bool) -> None:
        if self._stopped:
            return
        self._since = since_ms if self._since is None else min(self._since, since_ms)
        self._rematch = self._rematch or rematch
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="catchup")

    async def _run(self) -> None:
        await asyncio.sleep(_MERGE_S)
        while self._since is not None:
            since, self._since = self._since, None
            rematch, self._rematch = self._rematch, False
            try:
                pushed = await self._catch_up(since)
            except Exception as exc:
                self.failures += 1
                log_event("catchup.failed", logging.WARNING, error=type(exc).__name__)
                self._since = since if self._since is None else min(self._since, since)
                self._rematch = self._rematch or rematch
                await asyncio.sleep(_RETRY_S)
                continue
            self.passes += 1
            self.frames += pushed
            if self._metrics is not None:
                self._metrics.catchups.inc()
            self.caught_up.set()
            log_event("catchup.done", since_ms=since, frames=pushed)
            if rematch and self.after_reconnect is not None:
                try:
                    await self.after_reconnect()
                except Exception:
                    log_event("catchup.rematch_failed", logging.ERROR, exc=True)

    async def _catch_up(self, since_ms: int) -> int:
        accounts = self._registry.local_accounts()
        if not accounts:
            return 0
        pushed = 0
        for activity in await self._db.cases.activity_since(accounts, since_ms):
            for frame in catch_up_frames(activity, since_ms):
                self._registry.push_local(activity.case.participants, frame)
                pushed += 1
        return pushed
