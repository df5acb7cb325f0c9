"""ReceiptRepository against both backends: receipts only move forward."""

from __future__ import annotations

import asyncio

from storage import Database
from tests.helpers.storage_factories import assigned_case


async def test_advance_is_monotonic(db: Database) -> None:
    await assigned_case(db, "k1", "cl", "co")
    assert await db.receipts.for_case("k1") == []
    assert await db.receipts.advance("k1", "cl", "delivered", 5) == 5
    assert await db.receipts.advance("k1", "cl", "delivered", 3) == 5  # never backwards
    assert await db.receipts.advance("k1", "cl", "delivered", 5) == 5
    assert await db.receipts.advance("k1", "cl", "delivered", 9) == 9
    assert await db.receipts.advance("k1", "cl", "read", 2) == 2  # kinds are independent
    assert await db.receipts.advance("k1", "co", "read", 7) == 7
    assert await db.receipts.for_case("k1") == [
        ("cl", "delivered", 9),
        ("cl", "read", 2),
        ("co", "read", 7),
    ]


async def test_concurrent_advances_keep_the_maximum(db: Database) -> None:
    await assigned_case(db, "k1", "cl", "co")
    values = [17, 3, 42, 8, 41, 1, 40, 2]
    await asyncio.gather(*(db.receipts.advance("k1", "co", "read", v) for v in values))
    assert await db.receipts.for_case("k1") == [("co", "read", 42)]


async def test_receipts_are_per_case(db: Database) -> None:
    await assigned_case(db, "k1", "cl-1", "co-1")
    await assigned_case(db, "k2", "cl-2", "co-2")
    await db.receipts.advance("k1", "cl-1", "read", 4)
    assert await db.receipts.for_case("k2") == []
