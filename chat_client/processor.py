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
* **Keys not shared yet wait**: a record under an epoch key the client has not shared
  with us yet (it wrote while the case was waiting) is not delivered; the case stops
  there with one :class:`KeyPendingEvent` ("waiting for the client's key") and is
  synced again when ``case.key.new`` says the key arrived (or on the next session), so
  the messages still come exactly once and in order, verified.
* **Refusals end the stream**: a SecurityRefusal (KeyChanged, KeyNotSigned,
  UncertifiedCounselor) met while handling an event ends :meth:`events` with it.
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
from protocol.transcript import OrderProblem, check_order, check_receipts

from .casekeys import link_matches, open_record
from .connection import expect
from .cursors import Cursor, CursorTracker, Verdict
from .errors import ClientClosed, SecurityRefusal
from .keymanager import KeyManager, Request
from .models import (
    WAITING_FOR_KEY,
    CaseAssignedEvent,
    CaseClosedEvent,
    DisputeEvent,
    Event,
    KeyPendingEvent,
    Message,
    MessageEvent,
    QueueEvent,
    ReceiptEvent,
    TypingEvent,
    WarningEvent,
)
from .ordering import Ordering
from .outbox import Outgoing

__all__ = [
    "PERSIST_DELAY_S",
    "CaseMap",
    "Processor",
    "SeenNonces",
    "own_message",
    "own_record",
    "replay_of",
]

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
class _Prepare:
    """Load the case's order window (ordering.py) in the processor task, then answer."""

    case_id: str
    done: asyncio.Future[None]


@dataclasses.dataclass(eq=False)
class _OwnAck:
    out: Outgoing
    ack: f.MsgAck


_Work = f.ServerFrame | _Resync | _OwnAck | _Prepare
_END = object()  # sentinel closing the events() stream


def own_record(out: Outgoing, ack: f.MsgAck, account_id: str) -> f.MessageRecord:
    """The record the hub says it stored for our ``out`` (server_ts unknown: 0)."""
    return f.MessageRecord(
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


def own_message(out: Outgoing, ack: f.MsgAck, account_id: str, prev: bytes | None) -> Message:
    """The sender's own message, from the entry it sent and the hub's ack. ``prev`` is
    the chain hash of the record before it (None: unknown); the acked hash must follow
    from it, else the message is flagged (the hub altered the stored record)."""
    record = own_record(out, ack, account_id)
    intact = prev is None or link_matches(prev, record)
    return Message(
        envelope=out.envelope if intact else None,
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


def _release(item: _Work) -> None:
    """Answer a waiter whose work item will never be handled (the processor stopped)."""
    if isinstance(item, _Resync) and not item.done.done():
        item.done.set_result(None)
    elif isinstance(item, _Prepare) and not item.done.done():
        item.done.set_exception(ClientClosed("the client was closed"))
        item.done.exception()  # retrieved: the waiter may be gone too


#: Nonces remembered per case to name replays (the newest ones; 24 bytes each).
MAX_NONCES_PER_CASE = 20_000


class SeenNonces:
    """Which seq first carried each nonce of a case, so that a ciphertext stored again
    (a participant or the hub replaying it) is reported as a replay, not as a mere
    verification failure. Bounded: the oldest nonces of a case are forgotten first."""

    def __init__(self, per_case: int = MAX_NONCES_PER_CASE) -> None:
        self._per_case = per_case
        self._cases: dict[str, dict[bytes, int]] = {}

    def first_seq(self, case_id: str, nonce: bytes, seq: int) -> int | None:
        """The earlier seq that carried ``nonce`` (None: first seen, now remembered)."""
        seen = self._cases.setdefault(case_id, {})
        earlier = seen.get(nonce)
        if earlier is not None and earlier != seq:
            return earlier
        seen[nonce] = seq
        if len(seen) > self._per_case:
            del seen[next(iter(seen))]
        return None


def replay_of(message: Message, earlier: int) -> Message:
    """``message`` refused as the replay of seq ``earlier``."""
    return dataclasses.replace(
        message,
        body=None,
        verified=False,
        error=f"replay of seq {earlier}: its nonce was already used in this case",
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
        self._nonces = SeenNonces()
        self._delivered: dict[str, Cursor] = dict(cursors)  # what the app consumed
        self._saved: dict[str, Cursor] = dict(cursors)
        self._save_cursors = save_cursors
        self._inbox: asyncio.Queue[_Work] = asyncio.Queue()
        self._events: asyncio.Queue[Event | object] = asyncio.Queue()
        self._ended: BaseException | None = None
        self._persist_handle: asyncio.TimerHandle | None = None
        self.ordering = Ordering(account_id)
        self._running = False  # is run() consuming the inbox (prepare waits on it)?
        #: case id -> the epoch whose key its client has not shared with us yet.
        self._key_pending: dict[str, int] = {}
        for case_id, cursor in cursors.items():
            self.ordering.seen_before(case_id, cursor.seq, cursor.chain_hash)

    # -- input -------------------------------------------------------------------------

    def put(self, frame: f.ServerFrame) -> None:
        """Queue a server event (the link's ``on_event``), in wire order."""
        self._inbox.put_nowait(frame)

    def own_ack(self, out: Outgoing, ack: f.MsgAck) -> None:
        """Queue an acknowledged send of ours (the outbox's ``on_stored``)."""
        self._inbox.put_nowait(_OwnAck(out, ack))

    async def prepare(self, case_id: str) -> None:
        """Return once the case's order window is loaded (before composing a message or
        signing a receipt in it): done by the processor task, so it never races it."""
        if not self._running:
            raise ClientClosed("the client is not running")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(_Prepare(case_id, done))
        await done

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
        self._running = True
        try:
            await self._run()
        finally:
            self._running = False
            # Nobody will answer what is still queued: fail the waiters.
            while not self._inbox.empty():
                _release(self._inbox.get_nowait())

    async def _run(self) -> None:
        while True:
            item = await self._inbox.get()
            try:
                await self.handle(item)
            except asyncio.CancelledError:
                _release(item)
                raise
            except BaseException as exc:
                if isinstance(item, _Resync) and not item.done.done():
                    item.done.set_result(None)
                if isinstance(item, _Prepare) and not item.done.done():
                    item.done.set_exception(exc)
                if isinstance(exc, SecurityRefusal):
                    # A swapped or unsigned key is a hard failure: events() raises it.
                    # Requests (prepare, resync) are still answered: each meets it again.
                    self.end(exc)
                    continue
                if self._ended is not None:
                    return
                log.exception("failed to handle %s: %s", type(item).__name__, type(exc).__name__)

    async def handle(self, item: _Work) -> None:
        """Handle one work item (what :meth:`run` does for each queued one)."""
        if isinstance(item, f.MsgNew):
            await self._on_record(item.message)
        elif isinstance(item, _OwnAck):
            await self._on_own_ack(item.out, item.ack)
        elif isinstance(item, _Prepare):
            await self._ensure_window(item.case_id)
            if not item.done.done():
                item.done.set_result(None)
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
            case = self._cases.remember(item.case)
            self.emit(CaseAssignedEvent(item.case))
            if case.last_seq > self._cursors.last(case.case_id):
                await self._sync_case(case.case_id)  # what the client wrote while waiting
        elif isinstance(item, f.CaseKeyNew):
            self._cases.raise_epoch(item.case_id, item.epoch)
            if self._key_pending.pop(item.case_id, None) is not None:
                await self._sync_case(item.case_id)  # the client shared its key
        elif isinstance(item, f.CaseClosed):
            self._cases.mark_closed(item.case_id)
            self.emit(CaseClosedEvent(item.case_id))
        elif isinstance(item, f.TypingNew):
            self.emit(TypingEvent(item.case_id, item.account_id, item.active))
        elif isinstance(item, f.ReceiptNew):
            receipt = f.SignedReceipt(
                account_id=item.account_id,
                kind=item.kind,
                up_to_seq=item.up_to_seq,
                chain_hash=item.chain_hash,
                sig=item.sig,
            )
            self.ordering.add_receipts(item.case_id, [receipt])
            await self._check_order(item.case_id)
            self.emit(ReceiptEvent(item.case_id, item.account_id, item.kind, item.up_to_seq))
        elif isinstance(item, f.CaseQueue):
            q = item.queue
            self.emit(
                QueueEvent(item.case_id, q.position, q.counselors_online, q.specialists_online)
            )
        elif isinstance(item, f.DisputeUpdated):
            d = item.dispute
            self.emit(DisputeEvent(d.request_id, d.case_id, d.state, d.kind, d.legal_order))
        else:
            log.debug("ignoring unexpected event %s", type(item).__name__)

    async def _on_record(self, record: f.MessageRecord) -> None:
        if record.case_id in self._key_pending:
            return  # delivered in order by the sync once the key arrives
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
        await self._ensure_window(ack.case_id)
        prev = self._cursors.get(ack.case_id).chain_hash
        self._nonces.first_seq(ack.case_id, out.nonce, ack.seq)
        message = own_message(out, ack, self._account_id, prev)
        self._cursors.advance(ack.case_id, ack.seq, ack.chain_hash)
        self._emit_all(self.ordering.add(own_record(out, ack, self._account_id), message))
        self.emit(MessageEvent(message))
        await self._check_order(ack.case_id)

    async def _sync_case(self, case_id: str) -> None:
        """Deliver everything after the cursor, looping while the server has more."""
        await self._ensure_window(case_id)
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
                    if not await self._deliver_record(record, check=False):
                        break
                else:
                    self._emit_all(self.ordering.compare(record))
            self.ordering.add_receipts(case_id, result.receipts)
            await self._check_order(case_id)  # once per batch: the check is O(window)
            if case_id in self._key_pending or not result.has_more or not result.messages:
                return

    async def _deliver_record(self, record: f.MessageRecord, *, check: bool = True) -> bool:
        """Deliver ``record`` (True), or hold it and the rest of its case back until its
        client shares the epoch key with us (False, one KeyPendingEvent)."""
        cursor = self._cursors.get(record.case_id)
        # The chain can only be checked against the record right before this one.
        prev = cursor.chain_hash if cursor.seq == record.seq - 1 else None
        if prev is None and cursor.seq != record.seq - 1:
            log.warning("server skipped seqs %d..%d", cursor.seq + 1, record.seq - 1)
        await self._ensure_window(record.case_id)
        case = await self._cases.lookup(record.case_id)
        message = await self._open(record, case, prev)
        if message.error == WAITING_FOR_KEY:
            if self._key_pending.get(record.case_id) != record.epoch:
                self._key_pending[record.case_id] = record.epoch
                self.emit(KeyPendingEvent(record.case_id, record.epoch, record.seq))
            return False
        earlier = self._nonces.first_seq(record.case_id, record.nonce, record.seq)
        if earlier is not None:
            message = replay_of(message, earlier)
        self._cursors.raise_to(record.case_id, record.seq, record.chain_hash)
        self._emit_all(self.ordering.add(record, message))
        self.emit(MessageEvent(message))
        if check:
            await self._check_order(record.case_id)
        return True

    # -- order (ordering.py) -----------------------------------------------------------------

    def _emit_all(self, events: list[WarningEvent]) -> None:
        for event in events:
            log.warning("case %s: %s", event.case_id, event.text)
            self.emit(event)

    async def _ensure_window(self, case_id: str) -> None:
        """Load what this account saw of the case before this process (seq 1 up to the
        cursor) into the order window, once: signed order is checked from seq 1."""
        if self.ordering.loaded(case_id):
            return
        upto = self._cursors.get(case_id).seq
        if upto == 0:
            self.ordering.start(case_id)
            return
        records, receipts = await self._fetch_all(case_id, upto=upto)
        case = await self._cases.lookup(case_id)
        self.ordering.start(case_id)  # only once loaded: a failed fetch is tried again
        prev = GENESIS
        for record in records:
            message = await self._open(record, case, prev)
            self._emit_all(self.ordering.add(record, message))
            prev = record.chain_hash
        if not records or records[-1].seq < upto:
            self._emit_all(self.ordering.vanished(case_id, upto))
        self.ordering.add_receipts(case_id, receipts)
        await self._check_order(case_id)

    async def _check_order(self, case_id: str) -> None:
        case = self._cases.get(case_id)
        sign_pks: dict[str, bytes] = {}
        if case is not None and self.ordering.has_receipts(case_id):
            ids = [a for a in (case.client_id, case.counselor_id) if a is not None]
            entries = await self._keys.entries(ids)
            sign_pks = {a: e.sign_pk for a, e in entries.items()}
        self._emit_all(self.ordering.check(case_id, sign_pks))

    async def _fetch_all(
        self, case_id: str, *, upto: int | None = None
    ) -> tuple[list[f.MessageRecord], list[f.SignedReceipt]]:
        """Every record of the case from seq 1 (up to ``upto``), and the receipts."""
        records: list[f.MessageRecord] = []
        receipts: list[f.SignedReceipt] = []
        after = 0
        while upto is None or after < upto:
            result = expect(
                await self._request(f.Sync, case_id=case_id, after_seq=after, limit=MAX_SYNC_BATCH),
                f.SyncResult,
            )
            records.extend(r for r in result.messages if upto is None or r.seq <= upto)
            receipts = list(result.receipts) or receipts
            if not result.has_more or not result.messages:
                break
            after = result.messages[-1].seq
        return records, receipts

    async def _open(
        self, record: f.MessageRecord, case: f.CaseInfo | None, prev: bytes | None
    ) -> Message:
        key = sender = None
        if case is not None:
            key = await self._keys.key_for(case, record.epoch)
            sender = await self._keys.entry(record.sender_id)
        message = open_record(record, case=case, key=key, sender=sender, prev_hash=prev)
        if (
            key is None
            and case is not None
            and (message.error or "").startswith("no verified key")
            and self._keys.awaiting_key(case.case_id, record.epoch)
        ):
            # Not a failure: the client has not shared this key with us yet.
            message = dataclasses.replace(message, error=WAITING_FOR_KEY)
        return message

    # -- history -----------------------------------------------------------------------------

    async def history(self, case_id: str) -> tuple[list[Message], list[OrderProblem]]:
        """The whole case, synced from seq 0, decrypted and verified (chain included),
        and every order problem in it (check_order, check_receipts, and seqs whose chain
        hash changed since this client saw them, also emitted as WarningEvents).
        Independent of :meth:`events`: it moves no cursor."""
        records, receipts = await self._fetch_all(case_id)
        case = await self._cases.lookup(case_id)
        messages: list[Message] = []
        prev = GENESIS
        nonces = SeenNonces(per_case=len(records) + 1)
        for expected_seq, record in enumerate(records, start=1):
            message = await self._open(record, case, prev)
            if (earlier := nonces.first_seq(case_id, record.nonce, record.seq)) is not None:
                message = replay_of(message, earlier)
            if record.seq != expected_seq and message.verified:
                message = dataclasses.replace(
                    message, body=None, verified=False, error=f"seq {expected_seq} is missing"
                )
            messages.append(message)
            prev = record.chain_hash
        return messages, await self._history_problems(case_id, case, records, messages, receipts)

    async def _history_problems(
        self,
        case_id: str,
        case: f.CaseInfo | None,
        records: list[f.MessageRecord],
        messages: list[Message],
        receipts: list[f.SignedReceipt],
    ) -> list[OrderProblem]:
        changed: list[OrderProblem] = []
        for record in records:
            for warning in self.ordering.compare(record):
                self._emit_all([warning])
            if self.ordering.seen_hashes(case_id, record.seq) - {record.chain_hash}:
                changed.append(
                    OrderProblem(
                        record.seq,
                        "rewritten",
                        record.sender_id,
                        "seen chain hash changed: not the record this client saw before",
                    )
                )
        opened = {m.seq: m.envelope for m in messages if m.envelope is not None}
        problems = check_order(records, opened)
        if case is not None:
            ids = [a for a in (case.client_id, case.counselor_id) if a is not None]
            entries = await self._keys.entries(ids)
            sign_pks = {a: e.sign_pk for a, e in entries.items()}
            problems += check_receipts(case_id, records, receipts, sign_pks)
        return sorted(changed + problems, key=lambda p: p.seq)
