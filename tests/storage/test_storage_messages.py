"""MessageRepository against both backends: group-commit append, idempotency, reads."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from protocol.chain import GENESIS, verify_chain
from protocol.errors import Duplicate, Forbidden, InvalidFrame, NotFound
from storage import AlreadyStored, Database, MessageRecord, open_database, sqlite_url
from storage.models import Message, table
from tests.helpers.storage_factories import (
    DATA_KEY,
    add_account,
    all_messages,
    assigned_case,
    epoch_key,
    message,
)


async def _row_count(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table(Message))) or 0)


async def test_seqs_start_at_one_gap_free_and_chain_verifies(db: Database) -> None:
    await assigned_case(db, "k1", "cl", "co")
    assert await db.messages.last("k1") == (0, GENESIS)
    batch = [message("k1", "cl" if i % 2 else "co") for i in range(7)]
    results = await db.messages.append_batch(batch, now_ms=5_000)
    assert all(isinstance(r, MessageRecord) for r in results)
    assert [r.seq for r in results if isinstance(r, MessageRecord)] == list(range(1, 8))

    more = await db.messages.append_batch([message("k1", "cl")], now_ms=6_000)
    assert isinstance(more[0], MessageRecord) and more[0].seq == 8

    stored = await all_messages(db, "k1")
    assert [m.seq for m in stored] == list(range(1, 9))
    assert verify_chain(stored) == []
    assert stored == [*results, *more]  # what the append returned is what was stored
    assert stored[0].server_ts == 5_000 and stored[-1].server_ts == 6_000
    for sent, got in zip(batch, stored, strict=False):
        assert (got.client_msg_id, got.nonce, got.ciphertext, got.epoch, got.sender_id) == (
            sent.client_msg_id,
            sent.nonce,
            sent.ciphertext,
            sent.epoch,
            sent.sender_id,
        )
    assert await db.messages.last("k1") == (8, stored[-1].chain_hash)
    case = await db.cases.get("k1")
    assert case is not None and (case.last_seq, case.chain_head) == (8, stored[-1].chain_hash)


async def test_cases_have_independent_sequences(db: Database) -> None:
    await assigned_case(db, "k1", "cl-1", "co-1")
    await assigned_case(db, "k2", "cl-2", "co-2")
    batch = [message("k1", "cl-1"), message("k2", "cl-2"), message("k1", "co-1")]
    results = await db.messages.append_batch(batch, now_ms=1)
    assert [(r.seq if isinstance(r, MessageRecord) else None) for r in results] == [1, 1, 2]
    for case_id in ("k1", "k2"):
        assert verify_chain(await all_messages(db, case_id)) == []


async def test_identical_retry_returns_original_and_stores_nothing(db: Database) -> None:
    await assigned_case(db, "k1", "cl", "co")
    first = message("k1", "cl", "cmid-1")
    original, _ = await db.messages.append_batch([first, message("k1", "cl")], now_ms=1)
    assert isinstance(original, MessageRecord)
    before = (await _row_count(db), await db.messages.last("k1"))

    [retry] = await db.messages.append_batch([first], now_ms=2)
    assert retry == AlreadyStored(original)  # its seq, hash and server time, not now
    assert (await _row_count(db), await db.messages.last("k1")) == before


async def test_conflicting_retry_is_duplicate_and_changes_nothing(db: Database) -> None:
    await assigned_case(db, "k1", "cl", "co")
    first = message("k1", "cl", "cmid-1")
    await db.messages.append_batch([first], now_ms=1)
    before = (await _row_count(db), await db.messages.last("k1"), await all_messages(db, "k1"))

    changed = dataclasses.replace(first, ciphertext=b"x" * 40)
    other_nonce = dataclasses.replace(first, nonce=b"n" * 24)
    other_epoch = dataclasses.replace(first, epoch=2)
    await db.cases.add_epoch_key(epoch_key("k1", 2, "cl", ["cl", "co"]))
    results = await db.messages.append_batch([changed, other_nonce, other_epoch], now_ms=2)
    assert all(isinstance(r, Duplicate) for r in results)
    assert str(results[0]) == "client_msg_id already used"
    after = (await _row_count(db), await db.messages.last("k1"), await all_messages(db, "k1"))
    assert after == before


async def test_same_client_msg_id_from_another_sender_is_a_new_message(db: Database) -> None:
    await assigned_case(db, "k1", "cl", "co")
    results = await db.messages.append_batch(
        [message("k1", "cl", "same"), message("k1", "co", "same")], now_ms=1
    )
    assert [r.seq for r in results if isinstance(r, MessageRecord)] == [1, 2]


async def test_duplicates_within_one_batch(db: Database) -> None:
    await assigned_case(db, "k1", "cl", "co")
    a = message("k1", "cl", "a")
    a_conflict = dataclasses.replace(a, ciphertext=b"other" * 8)
    b = message("k1", "cl", "b")
    results = await db.messages.append_batch([a, a, b, a_conflict, b, a], now_ms=1)
    first_a, first_b = results[0], results[2]
    assert isinstance(first_a, MessageRecord) and isinstance(first_b, MessageRecord)
    assert (first_a.seq, first_b.seq) == (1, 2)
    assert results[1] == AlreadyStored(first_a)
    assert isinstance(results[3], Duplicate)
    assert results[4] == AlreadyStored(first_b)
    assert results[5] == AlreadyStored(first_a)
    assert await _row_count(db) == 2
    assert await db.messages.last("k1") == (2, first_b.chain_hash)


async def test_unknown_case_gets_not_found_in_its_slot_only(db: Database) -> None:
    await assigned_case(db, "k1", "cl", "co")
    results = await db.messages.append_batch(
        [message("k1", "cl"), message("ghost", "cl"), message("k1", "cl")], now_ms=1
    )
    assert isinstance(results[1], NotFound)
    assert [r.seq for r in results if isinstance(r, MessageRecord)] == [1, 2]
    with pytest.raises(NotFound):
        await db.messages.last("ghost")


async def test_case_state_and_epoch_are_checked_under_the_lock(db: Database) -> None:
    """The append reads each case's state and epoch in its own transaction: a closed
    case, or an epoch without a key (a waiting case's too), refuses the message in its
    slot only, and a retry of a stored message is refused once the case is closed."""
    await assigned_case(db, "k1", "cl", "co")
    await add_account(db, "cl-w")
    await db.cases.create("cl-w", "anxiety", "en", "waiting", 1)
    stored = message("k1", "cl", "kept")
    too_new = dataclasses.replace(message("k1", "cl"), epoch=2)
    results = await db.messages.append_batch([stored, message("waiting", "cl-w"), too_new], 1)
    assert isinstance(results[0], MessageRecord)
    assert isinstance(results[1], InvalidFrame)
    assert str(results[1]) == "no key has been deposited for this epoch"
    assert isinstance(results[2], InvalidFrame)
    assert str(results[2]) == "no key has been deposited for this epoch"

    assert await db.cases.close("k1", 2) is not None
    after = await db.messages.append_batch([message("k1", "co"), stored], 3)
    assert [type(r) for r in after] == [Forbidden, Forbidden]
    assert all(str(r) == "case is closed" for r in after)
    assert [m.seq for m in await all_messages(db, "k1")] == [1]


async def test_empty_batch(db: Database) -> None:
    assert await db.messages.append_batch([], now_ms=1) == []


async def test_large_batch_is_one_transaction(db: Database) -> None:
    await assigned_case(db, "k1", "cl", "co")
    results = await db.messages.append_batch([message("k1", "cl") for _ in range(600)], 1)
    assert [r.seq for r in results if isinstance(r, MessageRecord)] == list(range(1, 601))
    assert verify_chain(await all_messages(db, "k1")) == []


async def test_concurrent_batches_keep_seq_gap_free(db: Database) -> None:
    await assigned_case(db, "k1", "cl-1", "co-1")
    await assigned_case(db, "k2", "cl-2", "co-2")

    async def sender(task: int) -> list[int]:
        seqs: list[int] = []
        for round_ in range(6):
            case, who = ("k1", "cl-1") if (task + round_) % 3 else ("k2", "cl-2")
            batch = [message(case, who) for _ in range(1 + (task + round_) % 4)]
            results = await db.messages.append_batch(batch, now_ms=round_)
            seqs.extend(r.seq for r in results if isinstance(r, MessageRecord))
        return seqs

    appended = await asyncio.gather(*(sender(t) for t in range(8)))
    total = sum(len(s) for s in appended)
    for case_id in ("k1", "k2"):
        stored = await all_messages(db, case_id)
        assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
        assert verify_chain(stored) == []
    assert await _row_count(db) == total


async def test_two_hubs_appending_concurrently_keep_seq_gap_free(db: Database, db_url: str) -> None:
    """Two Database objects (as two hub processes would have) append to one case."""
    await assigned_case(db, "k1", "cl", "co")
    other = await open_database(db_url, DATA_KEY, migrate=False)
    try:

        async def sender(hub: Database, who: str) -> None:
            for _ in range(10):
                await hub.messages.append_batch([message("k1", who) for _ in range(3)], 1)

        await asyncio.gather(
            sender(db, "cl"), sender(other, "co"), sender(db, "co"), sender(other, "cl")
        )
    finally:
        await other.close()
    stored = await all_messages(db, "k1")
    assert [m.seq for m in stored] == list(range(1, 121))
    assert verify_chain(stored) == []


async def test_concurrent_identical_retries_store_once(db: Database) -> None:
    await assigned_case(db, "k1", "cl", "co")
    m = message("k1", "cl", "retry-me")
    results = await asyncio.gather(*(db.messages.append_batch([m], 1) for _ in range(5)))
    slots = [r[0] for r in results]
    assert sum(1 for s in slots if isinstance(s, MessageRecord) and s.seq == 1) == 1
    assert sum(1 for s in slots if isinstance(s, AlreadyStored) and s.message.seq == 1) == 4
    assert await _row_count(db) == 1


async def test_range_paginates(db: Database) -> None:
    await assigned_case(db, "k1", "cl", "co")
    await db.messages.append_batch([message("k1", "cl") for _ in range(25)], now_ms=1)
    pages, after = [], 0
    while True:
        page = await db.messages.range("k1", after, 10)
        if not page:
            break
        pages.append([m.seq for m in page])
        after = page[-1].seq
    assert pages == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert [m.seq for m in await db.messages.range("k1", 23, 100)] == [24, 25]
    assert await db.messages.range("k1", 25, 10) == []
    assert await db.messages.range("k1", 0, 0) == []
    assert await db.messages.range("ghost", 0, 10) == []


async def test_messages_need_a_known_sender(db: Database) -> None:
    # Membership is the server's rule, but the foreign key still refuses a sender that
    # is not an account at all: the whole batch fails and nothing is stored.
    await assigned_case(db, "k1", "cl", "co")
    with pytest.raises(Exception, match=r"(?i)foreign key"):
        await db.messages.append_batch([message("k1", "cl"), message("k1", "ghost")], 1)
    assert await db.messages.last("k1") == (0, GENESIS)
    await add_account(db, "ghost")
    [slot] = await db.messages.append_batch([message("k1", "ghost")], 1)
    assert isinstance(slot, MessageRecord)


async def test_sqlite_idempotency_lookup_uses_the_index(tmp_path: Path) -> None:
    """The hot path must not scan the messages table (a row-value IN would, on SQLite)."""
    db = await open_database(sqlite_url(tmp_path / "chat.db"), DATA_KEY)
    seen: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().startswith("SELECT") and "FROM messages" in statement:
            seen.append((statement, params))

    try:
        await assigned_case(db, "k1", "cl", "co")
        event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
        await db.messages.append_batch([message("k1", "cl") for _ in range(5)], 1)
        event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
        assert len(seen) == 1
        statement, params = seen[0]
        async with db.engine.connect() as conn:
            plan = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)).all()
    finally:
        await db.close()
    details = [str(row[-1]) for row in plan]
    assert not any(d.startswith("SCAN messages") for d in details), details
    assert any("USING INDEX" in d for d in details), details


async def test_a_replayed_nonce_is_refused_and_the_rest_of_the_batch_stored(
    db: Database,
) -> None:
    """The other side's exact bytes resent under a new key: ``Replayed``, not stored;
    the batch's other messages commit, and an identical retry is still a retry."""
    from protocol.errors import Replayed

    await assigned_case(db, "k1", "cl", "co")
    await assigned_case(db, "k2", "cl2", "co2")
    original = message("k1", "co", "from-counselor")
    [stored] = await db.messages.append_batch([original], now_ms=1)
    assert isinstance(stored, MessageRecord)
    replay = dataclasses.replace(original, sender_id="cl", client_msg_id="replayed-1")
    fresh = message("k1", "cl")
    other_case = dataclasses.replace(message("k2", "cl2"), nonce=original.nonce)
    results = await db.messages.append_batch([fresh, replay, original, other_case], now_ms=2)
    assert isinstance(results[0], MessageRecord) and results[0].seq == 2
    assert isinstance(results[1], Replayed) and results[1].code == "replayed"
    assert results[2] == AlreadyStored(stored)  # the sender's own retry
    assert isinstance(results[3], MessageRecord)  # nonces are unique per case only
    assert [m.client_msg_id for m in await all_messages(db, "k1")] == [
        "from-counselor",
        fresh.client_msg_id,
    ]
    assert verify_chain(await all_messages(db, "k1")) == []


async def test_one_nonce_twice_in_a_batch_stores_the_first(db: Database) -> None:
    from protocol.errors import Replayed

    await assigned_case(db, "k1", "cl", "co")
    first = message("k1", "co")
    again = dataclasses.replace(first, sender_id="cl", client_msg_id="copy")
    results = await db.messages.append_batch([first, again], now_ms=1)
    assert isinstance(results[0], MessageRecord) and isinstance(results[1], Replayed)
    assert await _row_count(db) == 1
