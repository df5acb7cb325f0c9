"""The processor: the one task that turns what the hub sends into the client's events.

Web counterpart: web_client/src/processor.js.

The reader of each link (connection.py) queues server events here in wire order; the
outbox queues its acknowledged sends; the session set-up queues resyncs. The processor
task handles them one at a time, so it is the only code that moves delivery cursors.

Contract:

* **Exactly once, in order**: every message of every known case reaches :meth:`events`
  once and in seq order (own messages included, from their ack), across reconnects.
  A record at or below the case's cursor is dropped, the next one is delivered, and one
  further ahead first syncs from the cursor (cursors.py has the rule).
* **Verified or flagged**: each record is decrypted with the verified epoch key
  (keymanager.py), its sender's signature and its hash-chain link to the previous
  record are checked (casekeys.open_record); a failure yields a Message with
  ``verified=False`` and no body, never text.
* **Cases**: :class:`CaseMap` keeps what the hub said about each case (state, epoch,
  participants), updated from ``welcome``, events and case requests, never lowered.
* **Cursors persist**: consuming a MessageEvent from :meth:`events` advances the stored
  cursor (written at most once a second and on close), so a later session resumes
  after the last message the application saw.

All network access goes through the ``request`` callable, so the pure paths (dedupe,
own acks, events that carry no ciphertext) run in tests without a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import cast

import msgspec

from protocol import errors as pe
from protocol import frames as f
from protocol.chain import GENESIS
from protocol.limits import MAX_SYNC_BATCH

from .casekeys import link_matches, open_record
from .connection import expect
from .cursors import Cursor, CursorTracker, Verdict
from .errors import ClientClosed
from .keymanager import KeyManager, Request
from .models import (
    CaseAssignedEvent,
    CaseClosedEvent,
    DisputeEvent,
    Event,
    Message,
    MessageEvent,
    ReceiptEvent,
    TypingEvent,
)
from .outbox import Outgoing

__all__ = ["PERSIST_DELAY_S", "CaseMap", "Processor", "own_message"]

log = logging.getLogger("chat_client")

#: Cursors are written at most this often (and on close).
PERSIST_DELAY_S = 1.0


class CaseMap:
    """What the hub said about each case of this account. ``by_id`` is shared with the
    key manager, which raises a case's epoch there when it learns of a newer key.
    ``on_remember`` sees every case as it is stored (the client creates epoch 1 there)."""

    def __init__(
        self, request: Request, *, on_remember: Callable[[f.CaseInfo], None] | None = None
    ) -> None:
        self._request = request
        self._on_remember = on_remember
        self.by_id: dict[str, f.CaseInfo] = {}

    def get(self, case_id: str) -> f.CaseInfo | None:
        return self.by_id.get(case_id)

    def remember(self, case: f.CaseInfo) -> f.CaseInfo:
        """Store ``case`` (never lowering a known epoch) and return what is stored."""
        old = self.by_id.get(case.case_id)
        if old is not None and old.epoch > case.epoch:
            case = msgspec.structs.replace(case, epoch=old.epoch)
        self.by_id[case.case_id] = case
        if self._on_remember is not None:
            self._on_remember(case)
        return case

    def mark_closed(self, case_id: str) -> None:
        case = self.by_id.get(case_id)
        if case is not None:
            self.by_id[case_id] = msgspec.structs.replace(case, state="closed")

    def raise_epoch(self, case_id: str, epoch: int) -> None:
        case = self.by_id.get(case_id)
        if case is not None and epoch > case.epoch:
            self.by_id[case_id] = msgspec.structs.replace(case, epoch=epoch)

    async def refresh(self) -> list[f.CaseInfo]:
        """Ask the hub for every case of this account (``case.list``) and store them."""
        result = expect(await self._request(f.CaseList), f.CaseListResult)
        for case in result.cases:
            self.remember(case)
        return list(result.cases)

    async def lookup(self, case_id: str) -> f.CaseInfo | None:
        """The freshest CaseInfo known; refreshed from the hub when unknown or still
        waiting for a counselor. None if the case is not ours."""
        case = self.by_id.get(case_id)
        if case is None or case.state == "waiting":
            with contextlib.suppress(pe.RemoteError):
                await self.refresh()
            case = self.by_id.get(case_id)
        return case


@dataclasses.dataclass(eq=False)
class _Resync:
    cases: list[str]
    done: asyncio.Future[None]


@dataclasses.dataclass(eq=False)
class _OwnAck:
    out: Outgoing
    ack: f.MsgAck


_Work = f.ServerFrame | _Resync | _OwnAck
_END = object()  # sentinel closing the events() stream


def own_message(out: Outgoing, ack: f.MsgAck, account_id: str, prev: bytes | None) -> Message:
    """The sender's own message, from the entry it sent and the hub's ack. ``prev`` is
    the chain hash of the record before it (None: unknown); the acked hash must follow
    from it, else the message is flagged (the hub altered the stored record)."""
    record = f.MessageRecord(
        case_id=out.case_id,
        seq=ack.seq,
        epoch=out.epoch,
        sender_id=account_id,
        client_msg_id=out.client_msg_id,
        nonce=out.nonce,
        ciphertext=out.ciphertext,
        chain_hash=ack.chain_hash,
        server_ts=0,
    )
    intact = prev is None or link_matches(prev, record)
    return Message(
        case_id=out.case_id,
        seq=ack.seq,
        epoch=out.epoch,
        sender_id=account_id,
        client_msg_id=out.client_msg_id,
        body=out.body if intact else None,
        ts=out.ts,
        verified=intact,
        error=None if intact else "hash chain mismatch (a stored message was altered)",
        chain_hash=ack.chain_hash,
    )


class Processor:
    """See the module docstring. ``save_cursors`` writes the consumed cursors (the key
    store); it is called from :meth:`persist`."""

    def __init__(
        self,
        account_id: str,
        request: Request,
        keys: KeyManager,
        cases: CaseMap,
        *,
        cursors: Mapping[str, Cursor],
        save_cursors: Callable[[dict[str, Cursor]], None],
    ) -> None:
        self._account_id = account_id
        self._request = request
        self._keys = keys
        self._cases = cases
        self._cursors = CursorTracker(cursors)  # what the processor has queued
        self._delivered: dict[str, Cursor] = dict(cursors)  # what the app consumed
        self._saved: dict[str, Cursor] = dict(cursors)
        self._save_cursors = save_cursors
        self._inbox: asyncio.Queue[_Work] = asyncio.Queue()
        self._events: asyncio.Queue[Event | object] = asyncio.Queue()
        self._ended: BaseException | None = None
        self._persist_handle: asyncio.TimerHandle | None = None

    # -- input -------------------------------------------------------------------------

    def put(self, frame: f.ServerFrame) -> None:
        """Queue a server event (the link's ``on_event``), in wire order."""
        self._inbox.put_nowait(frame)

    def own_ack(self, out: Outgoing, ack: f.MsgAck) -> None:
        """Queue an acknowledged send of ours (the outbox's ``on_stored``)."""
        self._inbox.put_nowait(_OwnAck(out, ack))

    async def resync(self, welcome: f.Welcome) -> None:
        """After ``welcome``: sync every case that may have moved; return when done."""
        wanted = [
            c.case_id
            for c in welcome.cases
            if c.state != "closed" or c.last_seq > self._cursors.last(c.case_id)
        ]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(_Resync(wanted, done))
        await done

    # -- output --------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        if self._ended is None:
            self._events.put_nowait(event)

    def end(self, exc: BaseException) -> None:
        """Close the event stream: :meth:`events` ends (or raises ``exc`` unless it is
        ClientClosed) after the events queued before."""
        if self._ended is None:
            self._ended = exc
            self._events.put_nowait(_END)

    async def events(self) -> AsyncIterator[Event]:
        """Events in arrival order; see ChatClient.events for the contract."""
        while True:
            item = await self._events.get()
            if item is _END:
                self._events.put_nowait(_END)  # let a later iterator end too
                if self._ended is not None and not isinstance(self._ended, ClientClosed):
                    raise self._ended
                return
            if isinstance(item, MessageEvent):
                self._mark_delivered(item.message)
            yield cast(Event, item)

    def persist(self) -> None:
        """Write the consumed cursors now, if they moved."""
        if self._persist_handle is not None:
            self._persist_handle.cancel()
            self._persist_handle = None
        if self._delivered == self._saved:
            return
        self._save_cursors(dict(self._delivered))
        self._saved = dict(self._delivered)

    def _mark_delivered(self, message: Message) -> None:
        current = self._delivered.get(message.case_id, Cursor())
        if message.seq > current.seq:
            self._delivered[message.case_id] = Cursor(message.seq, message.chain_hash or None)
            if self._persist_handle is None:
                loop = asyncio.get_running_loop()
                self._persist_handle = loop.call_later(PERSIST_DELAY_S, self.persist)

    # -- the processor task ------------------------------------------------------------------

    async def run(self) -> None:
        """Handle queued work until cancelled or the stream ends."""
        while True:
            item = await self._inbox.get()
            try:
                await self.handle(item)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if isinstance(item, _Resync) and not item.done.done():
                    item.done.set_result(None)
                if self._ended is not None:
                    return
                log.exception("failed to handle %s: %s", type(item).__name__, type(exc).__name__)

    async def handle(self, item: _Work) -> None:
        """Handle one work item (what :meth:`run` does for each queued one)."""
        if isinstance(item, f.MsgNew):
            await self._on_record(item.message)
        elif isinstance(item, _OwnAck):
            await self._on_own_ack(item.out, item.ack)
        elif isinstance(item, _Resync):
            try:
                for case_id in item.cases:
                    try:
                        await self._sync_case(case_id)
                    except pe.RemoteError as exc:
                        log.warning("sync of a case failed: %s", exc.code.value)
            finally:
                if not item.done.done():
                    item.done.set_result(None)
        elif isinstance(item, f.CaseAssigned):
            self._cases.remember(item.case)
            self.emit(CaseAssignedEvent(item.case))
        elif isinstance(item, f.CaseKeyNew):
            self._cases.raise_epoch(item.case_id, item.epoch)
        elif isinstance(item, f.CaseClosed):
            self._cases.mark_closed(item.case_id)
            self.emit(CaseClosedEvent(item.case_id))
        elif isinstance(item, f.TypingNew):
            self.emit(TypingEvent(item.case_id, item.account_id, item.active))
        elif isinstance(item, f.ReceiptNew):
            self.emit(ReceiptEvent(item.case_id, item.account_id, item.kind, item.up_to_seq))
        elif isinstance(item, f.DisputeUpdated):
            d = item.dispute
            self.emit(DisputeEvent(d.request_id, d.case_id, d.state, d.kind, d.legal_order))
        else:
            log.debug("ignoring unexpected event %s", type(item).__name__)

    async def _on_record(self, record: f.MessageRecord) -> None:
        verdict = self._cursors.classify(record.case_id, record.seq)
        if verdict is Verdict.NEXT:
            await self._deliver_record(record)
        elif verdict is Verdict.GAP:
            await self._sync_case(record.case_id)  # brings this record too, in order

    async def _on_own_ack(self, out: Outgoing, ack: f.MsgAck) -> None:
        verdict = self._cursors.classify(ack.case_id, ack.seq)
        if verdict is Verdict.GAP:
            await self._sync_case(ack.case_id)
            return
        if verdict is Verdict.DUPLICATE:
            return
        prev = self._cursors.get(ack.case_id).chain_hash
        message = own_message(out, ack, self._account_id, prev)
        self._cursors.advance(ack.case_id, ack.seq, ack.chain_hash)
        self.emit(MessageEvent(message))

    async def _sync_case(self, case_id: str) -> None:
        """Deliver everything after the cursor, looping while the server has more."""
        while True:
            result = expect(
                await self._request(
                    f.Sync,
                    case_id=case_id,
                    after_seq=self._cursors.last(case_id),
                    limit=MAX_SYNC_BATCH,
                ),
                f.SyncResult,
            )
            for record in result.messages:
                if self._cursors.classify(case_id, record.seq) is not Verdict.DUPLICATE:
                    await self._deliver_record(record)
            if not result.has_more or not result.messages:
                return

    async def _deliver_record(self, record: f.MessageRecord) -> None:
        cursor = self._cursors.get(record.case_id)
        # The chain can only be checked against the record right before this one.
        prev = cursor.chain_hash if cursor.seq == record.seq - 1 else None
        if prev is None and cursor.seq != record.seq - 1:
            log.warning("server skipped seqs %d..%d", cursor.seq + 1, record.seq - 1)
        case = await self._cases.lookup(record.case_id)
        message = await self._open(record, case, prev)
        self._cursors.raise_to(record.case_id, record.seq, record.chain_hash)
        self.emit(MessageEvent(message))

    async def _open(
        self, record: f.MessageRecord, case: f.CaseInfo | None, prev: bytes | None
    ) -> Message:
        key = sender = None
        if case is not None:
            key = await self._keys.key_for(case, record.epoch)
            sender = await self._keys.entry(record.sender_id)
        return open_record(record, case=case, key=key, sender=sender, prev_hash=prev)

    # -- history -----------------------------------------------------------------------------

    async def history(self, case_id: str) -> list[Message]:
        """The whole case, synced from seq 0, decrypted and verified (chain included).
        Independent of :meth:`events`: it moves no cursor."""
        records: list[f.MessageRecord] = []
        after = 0
        while True:
            result = expect(
                await self._request(f.Sync, case_id=case_id, after_seq=after, limit=MAX_SYNC_BATCH),
                f.SyncResult,
            )
            records.extend(result.messages)
            if not result.has_more or not result.messages:
                break
            after = result.messages[-1].seq
        case = await self._cases.lookup(case_id)
        messages: list[Message] = []
        prev = GENESIS
        for expected_seq, record in enumerate(records, start=1):
            message = await self._open(record, case, prev)
            if record.seq != expected_seq and message.verified:
                message = dataclasses.replace(
                    message, body=None, verified=False, error=f"seq {expected_seq} is missing"
                )
            messages.append(message)
            prev = record.chain_hash
        return messages
