"""The group committer (chat_server/committer.py) over a real SQLite file and the real
session registry: outcomes are delivered in submission order after the commit, a failed
transaction fails every message of its batch, and a crash neither loses a delivery nor
stops later batches."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from chat_server.committer import GroupCommitter
from chat_server.registry import SessionRegistry
from protocol import frames as f
from storage import Database, NewMessage, open_database, sqlite_url
from storage.records import AppendResult, EpochKeyRecord
from tests.helpers.usecases import RecordingPeer, account

KEY = bytes(range(32))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(sqlite_url(tmp_path / "chat.db"), KEY)
    for record in (account("cl"), account("co", "counselor")):
        await database.accounts.create(record)
    await database.cases.create("cl", "anxiety", "en", "k1", 1)
    await database.cases.assign("k1", "co", 2)
    await database.cases.add_epoch_key(
        EpochKeyRecord("k1", 1, "cl", bytes(32), bytes(64), {"cl": bytes(80), "co": bytes(80)}, 3)
    )
    try:
        yield database
    finally:
        await database.close()


def message(sender: str = "cl", cmid: str | None = None) -> NewMessage:
    return NewMessage(
        "k1", 1, sender, cmid or secrets.token_urlsafe(9), secrets.token_bytes(24), bytes(40)
    )


async def test_outcomes_are_delivered_in_submission_order_after_the_commit(db: Database) -> None:
    registry = SessionRegistry(8)
    sender, reader = RecordingPeer("s1"), RecordingPeer("s2")
    await registry.attach(reader, account("co", "counselor"))
    committer = GroupCommitter(db.messages, registry, max_batch=4)
    committer.start()
    try:
        ids = [f"r{i}" for i in range(10)]
        for request_id in ids:
            committer.submit(message(), sender, request_id, ("cl", "co"))
        assert sender.frames == []  # nothing is answered before its commit
        await committer.drain()
    finally:
        await committer.stop()
    acks = sender.of(f.MsgAck)
    assert [a.id for a in acks] == ids and [a.seq for a in acks] == list(range(1, 11))
    assert [n.message.seq for n in reader.of(f.MsgNew)] == list(range(1, 11))
    assert committer.batches == 3 and committer.messages == 10  # 4 + 4 + 2
    stored = await db.messages.range("k1", 0, 100)
    assert [m.chain_hash for m in stored] == [a.chain_hash for a in acks]


async def test_a_failed_transaction_fails_every_message_of_its_batch(db: Database) -> None:
    registry = SessionRegistry(8)
    sender = RecordingPeer("s1")
    committer = GroupCommitter(db.messages, registry)
    committer.start()
    try:
        # A sender that is no account: the foreign key refuses the whole transaction.
        committer.submit(message(), sender, "a", ("cl", "co"))
        committer.submit(message("ghost"), sender, "b", ("cl", "co"))
        await committer.drain()
        committer.submit(message(), sender, "c", ("cl", "co"))  # the next batch commits
        await committer.drain()
    finally:
        await committer.stop()
    a, b, c = sender.frames
    for refused in (a, b):
        assert isinstance(refused, f.ErrorFrame)
        assert (refused.code, refused.message) == ("unavailable", "not stored; retry")
    assert isinstance(c, f.MsgAck) and c.seq == 1
    assert [m.seq for m in await db.messages.range("k1", 0, 10)] == [1]


class _Results(Sequence[AppendResult]):
    """A result list whose iteration fails after ``good`` slots (a bug in the loop)."""

    def __init__(self, items: list[AppendResult], good: int) -> None:
        self._items, self._good = items, good

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        return self._items[i]

    def __iter__(self) -> Iterator[AppendResult]:
        for i, item in enumerate(self._items):
            if i == self._good:
                raise RuntimeError("bug")
            yield item


class _BrokenStore:
    """The real repository, with its results mangled the way a bug would mangle them."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.mode = "short"

    async def append_batch(
        self, batch: Sequence[NewMessage], now_ms: int
    ) -> Sequence[AppendResult]:
        results = await self.db.messages.append_batch(batch, now_ms)
        if self.mode == "short":
            return results[:-1]
        if self.mode == "midway":
            return _Results(results, good=1)
        return results


async def test_the_crash_path_delivers_every_slot_once_and_keeps_committing(
    db: Database,
) -> None:
    registry = SessionRegistry(8)
    sender = RecordingPeer("s1")
    store = _BrokenStore(db)
    committer = GroupCommitter(store, registry)
    committer.start()
    try:
        # Fewer results than messages: nothing was delivered, so every slot fails.
        first = [message(cmid=f"m{i}") for i in range(3)]
        for i, m in enumerate(first):
            committer.submit(m, sender, f"a{i}", ("cl", "co"))
        await committer.drain()
        assert [(x.id, x.code) for x in sender.of(f.ErrorFrame)] == [
            ("a0", "unavailable"),
            ("a1", "unavailable"),
            ("a2", "unavailable"),
        ]
        # A crash after the first delivery: the first is acked, only the rest fail.
        store.mode = "midway"
        sender.frames.clear()
        for i in range(3):
            committer.submit(message(), sender, f"b{i}", ("cl", "co"))
        await committer.drain()
        b0, b1, b2 = sender.frames
        assert isinstance(b0, f.MsgAck) and b0.id == "b0"
        assert [(x.id, x.code) for x in (b1, b2)] == [("b1", "unavailable"), ("b2", "unavailable")]
        # Later batches still commit; the failed ones were stored, so a retry with the
        # same client_msg_id is acked as a duplicate, never stored twice.
        store.mode = "ok"
        sender.frames.clear()
        committer.submit(first[0], sender, "retry", ("cl", "co"))
        await committer.drain()
    finally:
        await committer.stop()
    [retry] = sender.frames
    assert isinstance(retry, f.MsgAck) and retry.duplicate and retry.seq == 1
    assert len(await db.messages.range("k1", 0, 100)) == 6


async def test_a_failing_delivery_does_not_keep_the_others_from_theirs(db: Database) -> None:
    class Refusing(RecordingPeer):
        def push(self, frame: object) -> None:  # type: ignore[override]
            raise RuntimeError("socket gone")

    registry = SessionRegistry(8)
    broken, fine = Refusing("s1"), RecordingPeer("s2")
    committer = GroupCommitter(db.messages, registry)
    committer.start()
    try:
        committer.submit(message(), broken, "a", ("cl", "co"))
        committer.submit(message(), fine, "b", ("cl", "co"))
        await committer.drain()
    finally:
        await committer.stop()
    # The registry closes a peer it could not answer (1011: it resends after reconnecting).
    assert broken.closed == (1011, "internal error")
    [ack] = fine.frames
    assert isinstance(ack, f.MsgAck) and (ack.id, ack.seq) == ("b", 2)
