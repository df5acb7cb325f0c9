"""protocol/transcript.py: the order participants signed against the presented history.

Each test builds an honest history (two senders, each envelope naming the record its
sender last saw and its own counter), lets a hostile hub drop, reorder, replay or
rewrite something, re-chains it as a hub would, and checks the exact findings."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from protocol import crypto
from protocol.chain import GENESIS, chain_hash
from protocol.crypto import Envelope
from protocol.frames import MessageRecord, SignedReceipt
from protocol.transcript import OrderProblem, check_order, check_receipts

CASE = "case-1"
A = crypto.Identity.from_secret_bytes(bytes(range(64)))
B = crypto.Identity.from_secret_bytes(bytes(range(64, 128)))
KEYS = {"a": A.sign_pk, "b": B.sign_pk}


@dataclasses.dataclass
class Item:
    """One message as the sender wrote it: its envelope fields and its record."""

    sender: str
    cmid: str
    prev_seq: int
    prev_hash: bytes
    n: int


def history(senders: str) -> list[Item]:
    """An honest history: e.g. "aab" = a, a, b; each saw everything before it."""
    items: list[Item] = []
    counters: dict[str, int] = {}
    for i, who in enumerate(senders, start=1):
        counters[who] = counters.get(who, 0) + 1
        items.append(Item(who, f"cmid-{i}", i - 1, b"", counters[who]))
    return items


def present(items: list[Item]) -> tuple[list[MessageRecord], dict[int, Envelope]]:
    """Store ``items`` as a hub would, seq 1.. in this order, re-chained, and open them.

    An item's prev_hash, if empty, is filled from the honest chain as it is built
    (what the sender saw); a test that rewrites history sets it beforehand."""
    records: list[MessageRecord] = []
    opened: dict[int, Envelope] = {}
    prev = GENESIS
    honest: dict[int, bytes] = {0: GENESIS}
    for seq, item in enumerate(items, start=1):
        if not item.prev_hash:
            item.prev_hash = honest.get(item.prev_seq, GENESIS)
        nonce, ct = bytes(24), item.cmid.encode() * 2
        link = chain_hash(
            prev,
            case_id=CASE,
            seq=seq,
            epoch=1,
            sender_id=item.sender,
            client_msg_id=item.cmid,
            nonce=nonce,
            ciphertext=ct,
        )
        records.append(
            MessageRecord(
                case_id=CASE,
                seq=seq,
                epoch=1,
                sender_id=item.sender,
                client_msg_id=item.cmid,
                nonce=nonce,
                ciphertext=ct + bytes(17),
                chain_hash=link,
                server_ts=seq,
            )
        )
        opened[seq] = Envelope(
            body="x",
            ts=seq,
            client_msg_id=item.cmid,
            prev_seq=item.prev_seq,
            prev_hash=item.prev_hash,
            n=item.n,
        )
        honest[seq] = link
        prev = link
    return records, opened


def kinds(problems: list[OrderProblem]) -> list[tuple[int, str, str]]:
    return [(p.seq, p.kind, p.sender_id) for p in problems]


def test_an_honest_history_has_no_problem() -> None:
    records, opened = present(history("aabab"))
    assert check_order(records, opened) == []
    assert check_order([], {}) == []


def test_a_message_the_caller_could_not_open_is_skipped() -> None:
    records, opened = present(history("aab"))
    del opened[2]
    # a's n=2 is unreadable, and its gap is not reported here (the reader reports it).
    assert check_order(records, opened) == []


def test_dropped_message_is_named_by_the_next_one() -> None:
    items = history("abab")  # a1 b1 a2 b2; the hub drops a2 and re-chains
    present(items)  # what the senders signed
    records, opened = present([items[0], items[1], items[3]])
    # b2 now sits at seq 3, yet says it saw seq 3 (a2) before it was written.
    problems = check_order(records, opened)
    assert kinds(problems) == [(3, "reordered", "b")]
    assert problems[0].detail == "written after seq 3, stored at seq 3"


def test_dropped_message_gap_in_the_counter() -> None:
    # a1 a2 a3, the hub removes a2 but keeps everything else as the sender signed it
    records, opened = present(history("aaa"))
    del_records = [records[0], records[2]]
    problems = check_order(del_records, opened)
    assert kinds(problems) == [(3, "dropped", "a"), (3, "dropped", "a")]
    assert "seq 2, which its sender saw, is missing" in problems[0].detail
    assert "message n=2 of a is missing" in problems[1].detail
    assert str(problems[1]) == "seq 3: dropped (a): message n=2 of a is missing"


def test_reordered_messages_of_one_sender() -> None:
    items = history("aaa")
    swapped = [items[0], items[2], items[1]]
    for item in swapped:  # the hub re-chains; prev_seq and n stay as signed
        item.prev_hash = b""
    records, opened = present(swapped)
    problems = check_order(records, opened)
    assert (2, "reordered", "a") in kinds(problems)  # a3 says it saw seq 2 before writing
    assert (3, "reordered", "a") in kinds(problems)  # n=2 comes after n=3
    assert any("n=2 of a comes after n=3 (seq 2)" in p.detail for p in problems)
    assert not [p for p in problems if p.kind == "dropped"]


def test_replayed_message() -> None:
    items = history("ab")
    records, opened = present([*items, items[0]])
    problems = check_order(records, opened)
    assert kinds(problems) == [(3, "replayed", "a"), (3, "replayed", "a")]
    assert "message cmid-1 appears again" in problems[0].detail


def test_replay_under_a_new_message_id_repeats_the_counter() -> None:
    items = history("ab")
    again = dataclasses.replace(items[0], cmid="cmid-9")
    records, opened = present([*items, again])
    assert kinds(check_order(records, opened)) == [(3, "replayed", "a")]


def test_rewritten_history_before_a_message() -> None:
    items = history("aba")
    records, opened = present(items)
    honest_hash = records[1].chain_hash
    # The hub swaps b1's ciphertext: every later chain hash changes, a2's prev_hash
    # still names the chain hash a saw.
    forged = [records[0], msgspec.structs.replace(records[1], chain_hash=bytes(32)), records[2]]
    problems = check_order(forged, opened)
    assert kinds(problems) == [(3, "rewritten", "a")]
    assert "history before seq 3 was rewritten" in problems[0].detail
    assert opened[3].prev_hash == honest_hash


def test_first_message_with_prev_zero_needs_no_record() -> None:
    records, opened = present(history("a"))
    assert opened[1].prev_seq == 0 and opened[1].prev_hash == GENESIS
    assert check_order(records, opened) == []


# -- receipts ------------------------------------------------------------------------


def receipt(
    who: str, seq: int, chain: bytes, *, signer: crypto.Identity | None = None
) -> SignedReceipt:
    ident = signer or {"a": A, "b": B}[who]
    return SignedReceipt(
        account_id=who,
        kind="read",
        up_to_seq=seq,
        chain_hash=chain,
        sig=crypto.sign_receipt(ident, CASE, "read", seq, chain),
    )


def test_receipts_that_match_the_presented_history() -> None:
    records, _ = present(history("ab"))
    receipts = [receipt("a", 2, records[1].chain_hash), receipt("b", 0, GENESIS)]
    assert check_receipts(CASE, records, receipts, KEYS) == []


def test_receipt_for_a_rewritten_history() -> None:
    records, _ = present(history("ab"))
    signed = receipt("b", 2, records[1].chain_hash)
    rewritten = [records[0], msgspec.structs.replace(records[1], chain_hash=bytes(32))]
    problems = check_receipts(CASE, rewritten, [signed], KEYS)
    assert kinds(problems) == [(2, "rewritten", "b")]
    assert problems[0].detail == "history up to seq 2 differs from what b signed"


def test_receipt_for_a_dropped_record() -> None:
    records, _ = present(history("ab"))
    problems = check_receipts(CASE, records[:1], [receipt("b", 2, records[1].chain_hash)], KEYS)
    assert kinds(problems) == [(2, "dropped", "b")]


@pytest.mark.parametrize("who", ["a", "stranger"])
def test_receipt_not_signed_by_its_account(who: str) -> None:
    records, _ = present(history("ab"))
    forged = receipt(who, 2, records[1].chain_hash, signer=B)
    problems = check_receipts(CASE, records, [forged], KEYS)
    assert kinds(problems) == [(2, "rewritten", who)]
    assert "receipt is not signed by" in problems[0].detail


def test_receipt_of_another_case_does_not_verify() -> None:
    records, _ = present(history("ab"))
    signed = receipt("a", 2, records[1].chain_hash)
    assert kinds(check_receipts("case-2", records, [signed], KEYS)) == [(2, "rewritten", "a")]
