"""ReceiptRepository against both backends: receipts only move forward, and the stored
chain hash and signature are always those of the stored (highest) seq."""

from __future__ import annotations

import asyncio

from protocol.frames import SignedReceipt
from storage import Database
from tests.helpers.storage_factories import assigned_case


def h(seq: int) -> bytes:
    """A stand-in chain hash for ``seq`` (storage does not verify; the hub does)."""
    return bytes([seq]) * 32


def s(seq: int) -> bytes:
    return bytes([seq]) * 64


async def advance(db: Database, case: str, who: str, kind: str, seq: int) -> int:
    return await db.receipts.advance(case, who, kind, seq, h(seq), s(seq))  # type: ignore[arg-type]


async def test_advance_is_monotonic(db: Database) -> None:
    await assigned_case(db, "k1", "cl", "co")
    assert await db.receipts.for_case("k1") == []
    assert await advance(db, "k1", "cl", "delivered", 5) == 5
    assert await advance(db, "k1", "cl", "delivered", 3) == 5  # never backwards
    assert await advance(db, "k1", "cl", "delivered", 5) == 5
    assert await advance(db, "k1", "cl", "delivered", 9) == 9
    assert await advance(db, "k1", "cl", "read", 2) == 2  # kinds are independent
    assert await advance(db, "k1", "co", "read", 7) == 7
    assert await db.receipts.for_case("k1") == [
        ("cl", "delivered", 9),
        ("cl", "read", 2),
        ("co", "read", 7),
    ]
    assert await db.receipts.signed_for_case("k1") == [
        SignedReceipt(account_id=a, kind=k, up_to_seq=n, chain_hash=h(n), sig=s(n))  # type: ignore[arg-type]
        for a, k, n in [("cl", "delivered", 9), ("cl", "read", 2), ("co", "read", 7)]
    ]


async def test_concurrent_advances_keep_the_maximum(db: Database) -> None:
    await assigned_case(db, "k1", "cl", "co")
    values = [17, 3, 42, 8, 41, 1, 40, 2]
    await asyncio.gather(*(advance(db, "k1", "co", "read", v) for v in values))
    assert await db.receipts.for_case("k1") == [("co", "read", 42)]
    # The signature stored is the one that goes with the maximum, never a lower one's.
    [signed] = await db.receipts.signed_for_case("k1")
    assert (signed.up_to_seq, signed.chain_hash, signed.sig) == (42, h(42), s(42))


async def test_receipts_are_per_case(db: Database) -> None:
    await assigned_case(db, "k1", "cl-1", "co-1")
    await assigned_case(db, "k2", "cl-2", "co-2")
    await advance(db, "k1", "cl-1", "read", 4)
    assert await db.receipts.for_case("k2") == []
    assert await db.receipts.signed_for_case("k2") == []
