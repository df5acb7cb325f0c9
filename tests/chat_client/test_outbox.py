"""The outbox: once per link, resent with the same bytes, settled once by client_msg_id.

The bookkeeping is exercised without a network; the last test runs it against the real
hub across a dropped connection.
"""

from __future__ import annotations

import asyncio

import pytest

from chat_client import ClientClosed, Sent
from chat_client.outbox import Outbox, Outgoing
from protocol import crypto, opening
from protocol import errors as pe
from protocol import frames as f
from tests.helpers.clients import Pair, take
from tests.helpers.waiting import wait_until

CASE = "case_outbox"
ME = "acct_me"


def _outbox(identity: crypto.Identity) -> tuple[Outbox, list[tuple[Outgoing, f.MsgAck]]]:
    stored: list[tuple[Outgoing, f.MsgAck]] = []
    return Outbox(None, None, identity, ME, on_stored=lambda o, a: stored.append((o, a))), stored


def _ack(out: Outgoing, seq: int, *, duplicate: bool = False, cmid: str | None = None) -> f.MsgAck:
    return f.MsgAck(
        id="r1",
        case_id=out.case_id,
        client_msg_id=cmid or out.client_msg_id,
        seq=seq,
        chain_hash=bytes([seq]) * 32,
        duplicate=duplicate,
    )


async def test_sealed_entry_signs_the_order_it_was_composed_in() -> None:
    me = crypto.Identity.generate()
    outbox, _ = _outbox(me)
    key = crypto.new_case_key()
    out = outbox.seal(CASE, 1, key, "after seq 5", order=(5, bytes([5]) * 32, 3))
    envelope = opening.decrypt_message(
        key,
        me.sign_pk,
        case_id=CASE,
        epoch=1,
        sender_id=ME,
        client_msg_id=out.client_msg_id,
        nonce=out.nonce,
        ciphertext=out.ciphertext,
    )
    assert (envelope.prev_seq, envelope.prev_hash, envelope.n) == (5, bytes([5]) * 32, 3)
    assert out.envelope == envelope  # kept with the entry: every resend carries this n
    # A padded size bucket: the ciphertext length does not give the text length away.
    assert len(out.ciphertext) == len(outbox.seal(CASE, 1, key, "x" * 25).ciphertext)


async def test_sealed_entry_is_signed_encrypted_text_with_a_fresh_id() -> None:
    me = crypto.Identity.generate()
    outbox, _ = _outbox(me)
    key = crypto.new_case_key()
    a = outbox.seal(CASE, 1, key, "hello \U0001f642")
    b = outbox.seal(CASE, 1, key, "hello \U0001f642")
    assert a.client_msg_id != b.client_msg_id and a.nonce != b.nonce
    envelope = opening.decrypt_message(
        key,
        me.sign_pk,
        case_id=CASE,
        epoch=1,
        sender_id=ME,
        client_msg_id=a.client_msg_id,
        nonce=a.nonce,
        ciphertext=a.ciphertext,
    )
    assert (envelope.body, envelope.client_msg_id, envelope.ts) == (
        "hello \U0001f642",
        a.client_msg_id,
        a.ts,
    )


async def test_each_entry_goes_out_once_per_link_in_send_order_with_the_same_bytes() -> None:
    outbox, _ = _outbox(crypto.Identity.generate())
    key = crypto.new_case_key()
    entries = [outbox.seal(CASE, 1, key, f"m{i}") for i in range(3)]
    for out in entries:
        outbox.add(out)
    first = [out.frame_fields() for out in outbox.due(1)]
    assert [fields["client_msg_id"] for fields in first] == [e.client_msg_id for e in entries]
    assert outbox.due(1) == []  # already on link 1
    # A reconnect (link 2): every unacked entry again, byte for byte.
    assert [out.frame_fields() for out in outbox.due(2)] == first
    assert outbox.pending() == entries and len(outbox) == 3


async def test_ack_settles_its_send_once() -> None:
    outbox, _ = _outbox(crypto.Identity.generate())
    out = outbox.seal(CASE, 1, crypto.new_case_key(), "once")
    outbox.add(out)
    sent = outbox.settle(out, _ack(out, 7, duplicate=True))
    assert sent == Sent(CASE, out.client_msg_id, 7, bytes([7]) * 32, True)
    assert out.future.result() == sent
    assert out.client_msg_id not in outbox and outbox.due(2) == []
    # The ack of a resent copy arrives too: ignored, the first result stands.
    assert outbox.settle(out, _ack(out, 7)) is None
    assert out.future.result() is sent


async def test_ack_naming_another_message_fails_only_that_send() -> None:
    outbox, _ = _outbox(crypto.Identity.generate())
    key = crypto.new_case_key()
    bad, good = outbox.seal(CASE, 1, key, "a"), outbox.seal(CASE, 1, key, "b")
    outbox.add(bad)
    outbox.add(good)
    assert outbox.settle(bad, _ack(bad, 1, cmid="someone-else")) is None
    with pytest.raises(pe.InvalidFrame, match="another message"):
        bad.future.result()
    outbox.fail(good, pe.Forbidden("case is closed"))
    with pytest.raises(pe.Forbidden):
        good.future.result()
    assert len(outbox) == 0


async def test_fail_all_fails_every_pending_send() -> None:
    outbox, stored = _outbox(crypto.Identity.generate())
    key = crypto.new_case_key()
    entries = [outbox.seal(CASE, 1, key, str(i)) for i in range(3)]
    for out in entries:
        outbox.add(out)
    outbox.fail_all(ClientClosed("client closed"))
    assert len(outbox) == 0 and outbox.due(1) == [] and stored == []
    for out in entries:
        assert isinstance(out.future.exception(), ClientClosed)


async def test_send_during_an_outage_waits_and_is_stored_once_with_its_bytes(
    pair: Pair,
) -> None:
    client, counselor, case = pair.client, pair.counselor, pair.case
    await client.send(case.case_id, "before")
    link = client._link
    assert link is not None
    link._ws.transport.abort()  # no close frame: 1006, resumable
    sending = asyncio.create_task(client.send(case.case_id, "during the outage"))
    # Until send() has sealed and queued it (it needs no round trip: the key is held).
    await wait_until(lambda: bool(client._outbox.pending()) or sending.done(), "queued")
    [queued] = client._outbox.pending()
    sent = await asyncio.wait_for(sending, 15)
    assert (sent.seq, sent.client_msg_id) == (2, queued.client_msg_id)
    assert len(client._outbox) == 0
    synced = await counselor._request(f.Sync, case_id=case.case_id, after_seq=1, limit=10)
    assert isinstance(synced, f.SyncResult)
    [record] = synced.messages
    assert (record.nonce, record.ciphertext) == (queued.nonce, queued.ciphertext)
    assert [m.body for m in await take(counselor, 2)] == ["before", "during the outage"]
