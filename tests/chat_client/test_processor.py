"""The processor: dedupe, gap-fill, own acks, case facts, the event stream, cursors.

What needs no ciphertext runs without a network (a request function that fails the test
if called proves it); gap-filling and decryption run against the real hub.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from chat_client import (
    CaseAssignedEvent,
    CaseClosedEvent,
    ClientClosed,
    DisputeEvent,
    Event,
    MessageEvent,
    ReceiptEvent,
    SessionEnded,
    TypingEvent,
)
from chat_client.cursors import Cursor
from chat_client.keymanager import KeyManager
from chat_client.outbox import Outbox
from chat_client.processor import CaseMap, Processor, own_message
from protocol import crypto
from protocol import frames as f
from protocol.chain import GENESIS, chain_hash
from tests.helpers.clients import Pair, take

ME = "acct_client"
COUNSELOR = "acct_counselor"
CASE = f.CaseInfo(
    case_id="case_p",
    client_id=ME,
    counselor_id=COUNSELOR,
    state="assigned",
    topic="anxiety",
    language="en",
    epoch=1,
    last_seq=0,
    created_at=1,
)


async def no_network(*args: Any, **fields: Any) -> f.ServerFrame:
    raise AssertionError(f"this path must not touch the network: {args} {fields}")


def offline_processor(
    cursors: dict[str, Cursor] | None = None,
) -> tuple[Processor, CaseMap, list[dict[str, Cursor]]]:
    saved: list[dict[str, Cursor]] = []
    cases = CaseMap(no_network)
    keys = KeyManager(crypto.Identity.generate(), ME, no_network, cases.by_id, cases.lookup)
    processor = Processor(
        ME, no_network, keys, cases, cursors=cursors or {}, save_cursors=saved.append
    )
    return processor, cases, saved


async def drain(processor: Processor) -> list[Event]:
    """Every event queued so far (the stream is ended first, so this returns)."""
    processor.end(ClientClosed("test"))
    return [event async for event in processor.events()]


def sealed_ack(seq: int, prev: bytes) -> tuple[Outbox, Any, f.MsgAck]:
    outbox = Outbox(None, None, crypto.Identity.generate(), ME, on_stored=lambda o, a: None)
    out = outbox.seal(CASE.case_id, 1, crypto.new_case_key(), f"mine {seq}")
    link = chain_hash(
        prev,
        case_id=out.case_id,
        seq=seq,
        epoch=out.epoch,
        sender_id=ME,
        client_msg_id=out.client_msg_id,
        nonce=out.nonce,
        ciphertext=out.ciphertext,
    )
    ack = f.MsgAck(
        id="r1",
        case_id=CASE.case_id,
        client_msg_id=out.client_msg_id,
        seq=seq,
        chain_hash=link,
        duplicate=False,
    )
    return outbox, out, ack


async def test_own_message_is_verified_only_if_the_acked_hash_follows_the_chain() -> None:
    _, out, ack = sealed_ack(1, GENESIS)
    good = own_message(out, ack, ME, GENESIS)
    assert (good.verified, good.body, good.seq) == (True, "mine 1", 1)
    assert good.chain_hash == ack.chain_hash
    assert own_message(out, ack, ME, None).verified  # nothing to check against
    bad = own_message(out, ack, ME, bytes(31) + b"\x01")
    assert (bad.verified, bad.body) == (False, None)
    assert bad.error is not None and "hash chain" in bad.error


async def test_own_ack_is_delivered_once_in_order_without_a_network() -> None:
    processor, _, _ = offline_processor()
    _, out, ack = sealed_ack(1, GENESIS)
    processor.own_ack(out, ack)
    processor.own_ack(out, ack)  # the ack of a resent copy: a duplicate
    await processor.handle(processor._inbox.get_nowait())
    await processor.handle(processor._inbox.get_nowait())
    [event] = await drain(processor)
    assert isinstance(event, MessageEvent)
    assert (event.message.seq, event.message.verified) == (1, True)


async def test_records_at_or_below_the_cursor_are_dropped_without_a_network() -> None:
    processor, _, _ = offline_processor({CASE.case_id: Cursor(5, b"h" * 32)})
    for seq in (1, 4, 5):
        record = f.MessageRecord(
            case_id=CASE.case_id,
            seq=seq,
            epoch=1,
            sender_id=COUNSELOR,
            client_msg_id=f"cmid-{seq}",
            nonce=bytes(24),
            ciphertext=bytes(40),
            chain_hash=bytes(32),
            server_ts=1,
        )
        await processor.handle(f.MsgNew(message=record))
    assert await drain(processor) == []


async def test_events_without_ciphertext_update_cases_and_reach_the_stream() -> None:
    processor, cases, _ = offline_processor()
    waiting = msgspec.structs.replace(CASE, state="waiting", counselor_id=None)
    cases.remember(waiting)
    await processor.handle(f.CaseAssigned(case=CASE))
    assert cases.get(CASE.case_id) == CASE
    await processor.handle(f.CaseKeyNew(case_id=CASE.case_id, epoch=3))
    await processor.handle(f.CaseKeyNew(case_id=CASE.case_id, epoch=2))  # never lowered
    await processor.handle(f.TypingNew(case_id=CASE.case_id, account_id=COUNSELOR, active=True))
    await processor.handle(
        f.ReceiptNew(
            case_id=CASE.case_id,
            account_id=COUNSELOR,
            kind="read",
            up_to_seq=4,
            chain_hash=bytes(32),
            sig=bytes(64),
        )
    )
    await processor.handle(f.CaseClosed(case_id=CASE.case_id))
    dispute = f.DisputeInfo(
        request_id="dsp_1", case_id=CASE.case_id, state="approved", created_at=1
    )
    await processor.handle(f.DisputeUpdated(dispute=dispute))
    stored = cases.get(CASE.case_id)
    assert stored is not None and (stored.epoch, stored.state) == (3, "closed")
    assert await drain(processor) == [
        CaseAssignedEvent(CASE),
        TypingEvent(CASE.case_id, COUNSELOR, True),
        ReceiptEvent(CASE.case_id, COUNSELOR, "read", 4),
        CaseClosedEvent(CASE.case_id),
        DisputeEvent("dsp_1", CASE.case_id, "approved"),
    ]


async def test_remembering_a_case_never_lowers_its_epoch() -> None:
    seen: list[f.CaseInfo] = []
    cases = CaseMap(no_network, on_remember=seen.append)
    cases.remember(msgspec.structs.replace(CASE, epoch=4))
    stored = cases.remember(CASE)
    assert stored.epoch == 4 and [c.epoch for c in seen] == [4, 4]


async def test_stream_ends_quietly_on_close_and_raises_a_session_end() -> None:
    processor, _, _ = offline_processor()
    processor.emit(TypingEvent(CASE.case_id, COUNSELOR, False))
    processor.end(SessionEnded(4009, "replaced"))
    processor.emit(TypingEvent(CASE.case_id, COUNSELOR, True))  # after the end: dropped
    got: list[Event] = []
    with pytest.raises(SessionEnded):
        async for event in processor.events():
            got.append(event)
    assert got == [TypingEvent(CASE.case_id, COUNSELOR, False)]
    with pytest.raises(SessionEnded):  # a later iterator ends the same way
        await anext(aiter(processor.events()))


async def test_consumed_messages_move_the_saved_cursor() -> None:
    processor, _, saved = offline_processor()
    _, out, ack = sealed_ack(1, GENESIS)
    processor.own_ack(out, ack)
    await processor.handle(processor._inbox.get_nowait())
    processor.persist()
    assert saved == []  # queued but not consumed yet
    events: AsyncIterator[Event] = processor.events()
    assert isinstance(await anext(events), MessageEvent)
    processor.persist()
    processor.persist()  # unchanged: not written again
    assert saved == [{CASE.case_id: Cursor(1, ack.chain_hash)}]


async def test_a_gap_is_filled_from_the_hub_in_order_and_once(pair: Pair) -> None:
    """A processor with no cursor gets seq 3 first: it syncs 1..3 and then drops 2."""
    client, counselor, case = pair.client, pair.counselor, pair.case
    for text in ("one", "two", "three"):
        await counselor.send(case.case_id, text)
    await take(client, 3)
    synced = await client._request(f.Sync, case_id=case.case_id, after_seq=0, limit=10)
    assert isinstance(synced, f.SyncResult)
    records = {r.seq: r for r in synced.messages}
    saved: list[dict[str, Cursor]] = []
    fresh = Processor(
        client.account_id,
        client._request,
        client._keys,
        client._cases,
        cursors={},
        save_cursors=saved.append,
    )
    await fresh.handle(f.MsgNew(message=records[3]))
    await fresh.handle(f.MsgNew(message=records[2]))
    events = await drain(fresh)
    messages = [e.message for e in events if isinstance(e, MessageEvent)]
    assert [(m.seq, m.body, m.verified) for m in messages] == [
        (1, "one", True),
        (2, "two", True),
        (3, "three", True),
    ]
