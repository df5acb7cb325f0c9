"""ordering.py: the order a client signs when sending, and the warnings it raises."""

from __future__ import annotations

import pytest

from chat_client import ClientClosed
from chat_client.keymanager import KeyManager
from chat_client.models import Message, WarningEvent
from chat_client.ordering import Ordering
from chat_client.processor import CaseMap, Processor
from protocol import crypto
from protocol.frames import MessageRecord, SignedReceipt

ME, PEER, CASE = "acc_me", "acc_peer", "case_1"


def record(seq: int, sender: str, h: int, cmid: str | None = None) -> MessageRecord:
    return MessageRecord(
        case_id=CASE,
        seq=seq,
        epoch=1,
        sender_id=sender,
        client_msg_id=cmid or f"cmid-{seq:04d}",
        nonce=bytes(24),
        ciphertext=bytes(40),
        chain_hash=bytes([h]) * 32,
        server_ts=1,
    )


def message(r: MessageRecord, prev_seq: int, prev_h: int, n: int) -> Message:
    envelope = crypto.Envelope(
        body="x",
        ts=1,
        client_msg_id=r.client_msg_id,
        prev_seq=prev_seq,
        prev_hash=bytes([prev_h]) * 32 if prev_seq else bytes(32),
        n=n,
    )
    return Message(
        case_id=CASE,
        seq=r.seq,
        epoch=1,
        sender_id=r.sender_id,
        client_msg_id=r.client_msg_id,
        body="x",
        ts=1,
        verified=True,
        chain_hash=r.chain_hash,
        envelope=envelope,
    )


def test_next_order_follows_what_was_seen_and_counts_own_messages() -> None:
    o = Ordering(ME)
    assert o.next_order(CASE) == (0, bytes(32), 1)
    r1 = record(1, ME, 1)
    o.add(r1, message(r1, 0, 0, 1))
    r2 = record(2, PEER, 2)
    o.add(r2, message(r2, 1, 1, 1))
    assert o.next_order(CASE) == (2, bytes([2]) * 32, 2)
    assert o.next_order(CASE) == (2, bytes([2]) * 32, 3)  # a second send before an ack
    assert o.chain_hash_at(CASE, 1) == bytes([1]) * 32 and o.chain_hash_at(CASE, 9) is None


def test_clean_history_has_no_warning() -> None:
    o = Ordering(ME)
    for seq, (sender, n) in enumerate([(PEER, 1), (ME, 1), (PEER, 2)], start=1):
        r = record(seq, sender, seq)
        assert o.add(r, message(r, seq - 1, seq - 1, n)) == []
    assert o.check(CASE, {}) == []


def test_dropped_message_is_named_once() -> None:
    o = Ordering(ME)
    r1, r2 = record(1, PEER, 1), record(2, PEER, 2)
    o.add(r1, message(r1, 0, 0, 1))
    o.add(r2, message(r2, 1, 1, 3))  # n=2 of PEER never arrived
    warnings = o.check(CASE, {})
    assert [(w.kind, w.seq) for w in warnings] == [("dropped", 2)]
    assert "n=2" in warnings[0].text
    assert o.check(CASE, {}) == []  # reported once


def test_replay_and_reorder() -> None:
    o = Ordering(ME)
    r1, r2 = record(1, PEER, 1, "cmid-a"), record(2, PEER, 2, "cmid-b")
    o.add(r1, message(r1, 0, 0, 2))
    o.add(r2, message(r2, 0, 0, 1))  # n goes down: reordered
    r3 = record(3, PEER, 3, "cmid-a")
    o.add(r3, message(r3, 0, 0, 2))  # same client_msg_id and n again: replayed
    kinds = {(w.kind, w.seq) for w in o.check(CASE, {})}
    assert ("reordered", 2) in kinds and ("replayed", 3) in kinds


def test_seen_chain_hash_changed_is_a_rewrite_warning() -> None:
    o = Ordering(ME)
    o.seen_before(CASE, 2, bytes([2]) * 32)  # what the last process stored as cursor
    r2 = record(2, PEER, 9)  # presented again with another hash
    warnings = o.compare(r2)
    assert (
        warnings == [WarningEvent(CASE, "rewritten", warnings[0].text, 2)]
        and "seen chain hash changed" in warnings[0].text
    )
    assert not o.loaded(CASE)  # comparing never fakes a loaded window


def test_receipt_over_another_chain_hash_is_rewritten() -> None:
    peer = crypto.Identity.generate()
    o = Ordering(ME)
    r1 = record(1, PEER, 1)
    o.add(r1, message(r1, 0, 0, 1))
    h = bytes([7]) * 32  # PEER signed a different history at seq 1
    sig = crypto.sign_receipt(peer, CASE, "read", 1, h)
    o.add_receipts(
        CASE, [SignedReceipt(account_id=PEER, kind="read", up_to_seq=1, chain_hash=h, sig=sig)]
    )
    assert o.has_receipts(CASE)
    warnings = o.check(CASE, {PEER: peer.sign_pk})
    assert [(w.kind, w.seq) for w in warnings] == [("rewritten", 1)]


def test_a_seq_that_vanished_is_reported_once() -> None:
    o = Ordering(ME)
    (warning,) = o.vanished(CASE, 6)
    assert (warning.kind, warning.seq) == ("dropped", 6) and "no longer" in warning.text
    assert o.vanished(CASE, 6) == []


async def test_prepare_on_a_stopped_processor_fails_instead_of_hanging() -> None:
    async def no_network(*args: object, **kwargs: object) -> object:
        raise AssertionError("no network here")

    cases = CaseMap(no_network)
    keys = KeyManager(crypto.Identity.generate(), ME, no_network, cases.by_id, cases.lookup)
    processor = Processor(ME, no_network, keys, cases, cursors={}, save_cursors=lambda c: None)
    with pytest.raises(ClientClosed):
        await processor.prepare(CASE)
