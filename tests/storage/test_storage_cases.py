"""CaseRepository against both backends: lifecycle, races, epoch keys."""

from __future__ import annotations

import asyncio

import pytest

from protocol.chain import GENESIS
from protocol.errors import Conflict, Forbidden, NotFound
from storage import Database, open_database
from storage.escrow import CapsuleRecord
from storage.records import CaseRecord
from tests.helpers.storage_factories import DATA_KEY, add_account, assigned_case, epoch_key, message


async def _people(db: Database) -> None:
    await add_account(db, "cl-1")
    await add_account(db, "cl-2")
    await add_account(db, "co-1", "counselor")
    await add_account(db, "co-2", "counselor")


async def test_create_and_get(db: Database) -> None:
    await _people(db)
    created = await db.cases.create("cl-1", "anxiety", "en", "k1", 100)
    assert created == CaseRecord(
        id="k1",
        client_id="cl-1",
        counselor_id=None,
        state="waiting",
        topic="anxiety",
        language="en",
        epoch=0,
        last_seq=0,
        chain_head=GENESIS,
        created_at=100,
    )
    assert await db.cases.get("k1") == created
    assert await db.cases.get("nope") is None


async def test_create_duplicate_id_or_unknown_client_is_conflict(db: Database) -> None:
    await _people(db)
    await db.cases.create("cl-1", "anxiety", "en", "k1", 100)
    with pytest.raises(Conflict):
        await db.cases.create("cl-2", "grief", "en", "k1", 101)
    with pytest.raises(Conflict):
        await db.cases.create("ghost", "grief", "en", "k2", 101)


async def test_waiting_oldest_first_and_for_account_newest_first(db: Database) -> None:
    await _people(db)
    await db.cases.create("cl-1", "a", "en", "k2", 200)
    await db.cases.create("cl-2", "b", "en", "k1", 100)
    await db.cases.create("cl-1", "c", "en", "k3", 300)
    assert [c.id for c in await db.cases.waiting()] == ["k1", "k2", "k3"]
    await db.cases.assign("k2", "co-1", 400)
    assert [c.id for c in await db.cases.waiting()] == ["k1", "k3"]
    assert [c.id for c in await db.cases.for_account("cl-1")] == ["k3", "k2"]
    assert [c.id for c in await db.cases.for_account("co-1")] == ["k2"]
    assert await db.cases.for_account("co-2") == []


async def test_assign_then_close(db: Database) -> None:
    await _people(db)
    await db.cases.create("cl-1", "anxiety", "en", "k1", 100)
    assigned = await db.cases.assign("k1", "co-1", 150)
    assert assigned is not None
    assert (assigned.state, assigned.counselor_id, assigned.assigned_at) == (
        "assigned",
        "co-1",
        150,
    )
    assert await db.cases.assign("k1", "co-2", 160) is None  # no longer waiting
    assert await db.cases.assign("nope", "co-2", 160) is None

    closed = await db.cases.close("k1", 200)
    assert closed is not None
    assert (closed.state, closed.closed_at, closed.counselor_id) == ("closed", 200, "co-1")
    assert await db.cases.close("k1", 300) is None  # already closed: nothing changes
    again = await db.cases.get("k1")
    assert again is not None and again.closed_at == 200
    assert await db.cases.close("nope", 300) is None
    assert await db.cases.assign("k1", "co-2", 400) is None


async def test_waiting_case_can_be_closed(db: Database) -> None:
    await _people(db)
    await db.cases.create("cl-1", "anxiety", "en", "k1", 100)
    closed = await db.cases.close("k1", 200)
    assert closed is not None and closed.state == "closed" and closed.counselor_id is None
    assert await db.cases.waiting() == []


async def test_concurrent_assign_exactly_one_wins(db: Database) -> None:
    await _people(db)
    await db.cases.create("cl-1", "anxiety", "en", "k1", 100)
    results = await asyncio.gather(
        db.cases.assign("k1", "co-1", 150), db.cases.assign("k1", "co-2", 151)
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    stored = await db.cases.get("k1")
    assert stored == winners[0]


async def test_two_hubs_assign_race_exactly_one_wins(db: Database, db_url: str) -> None:
    """Two Database objects on one database: what two hub processes would do."""
    await _people(db)
    for i in range(10):
        await db.cases.create("cl-1", "anxiety", "en", f"k{i}", 100 + i)
    other = await open_database(db_url, DATA_KEY, migrate=False)
    try:
        results = await asyncio.gather(
            *(db.cases.assign(f"k{i}", "co-1", 200) for i in range(10)),
            *(other.cases.assign(f"k{i}", "co-2", 200) for i in range(10)),
        )
    finally:
        await other.close()
    for i in range(10):
        assert (results[i] is None) != (results[10 + i] is None), f"case k{i}"
    counts = await db.cases.open_counts(["co-1", "co-2"])
    assert counts["co-1"] + counts["co-2"] == 10


async def test_open_counts_counts_assigned_not_closed(db: Database) -> None:
    await _people(db)
    for i in range(4):
        await db.cases.create("cl-1", "t", "en", f"k{i}", i)
    await db.cases.assign("k0", "co-1", 10)
    await db.cases.assign("k1", "co-1", 10)
    await db.cases.assign("k2", "co-2", 10)
    await db.cases.close("k1", 20)
    assert await db.cases.open_counts(["co-1", "co-2", "cl-1", "nobody"]) == {
        "co-1": 1,
        "co-2": 1,
        "cl-1": 0,
        "nobody": 0,
    }
    assert await db.cases.open_counts([]) == {}


async def test_epoch_keys_advance_and_duplicate_epoch_conflicts(db: Database) -> None:
    case = await assigned_case(db, "k1", "cl-1", "co-1")
    assert case.epoch == 1
    with pytest.raises(Conflict, match="epoch already has a key"):
        await db.cases.add_epoch_key(epoch_key("k1", 1, "co-1", ["cl-1", "co-1"]))
    with pytest.raises(Conflict):  # skipping an epoch is refused the same way
        await db.cases.add_epoch_key(epoch_key("k1", 3, "co-1", ["cl-1", "co-1"]))
    with pytest.raises(NotFound):
        await db.cases.add_epoch_key(epoch_key("nope", 1, "co-1", ["co-1"]))
    second = epoch_key("k1", 2, "co-1", ["cl-1", "co-1"])
    await db.cases.add_epoch_key(second)
    stored = await db.cases.get("k1")
    assert stored is not None and stored.epoch == 2
    assert await db.cases.epoch_key("k1", 2) == second
    assert await db.cases.epoch_key("k1", 9) is None


async def test_key_deposit_on_a_waiting_case_and_seal_added_later(db: Database) -> None:
    """Issue 14: a waiting case takes its client's key (sealed to the client only); the
    counselor's seal is added once, later, by ``add_seal``; keys_for says who holds one."""
    await _people(db)
    await db.cases.create("cl-1", "anxiety", "en", "w", 100)
    first = epoch_key("w", 1, "cl-1", ["cl-1"])
    await db.cases.add_epoch_key(first)
    [mine] = await db.cases.keys_for("w", "cl-1")
    assert mine.sealed_for == ("cl-1",)
    assert await db.cases.keys_for("w", "co-1") == []
    assigned = await db.cases.assign("w", "co-1", 150)
    assert assigned is not None and assigned.epoch == 1
    await db.cases.add_seal("w", 1, "co-1", b"s" * 80)
    [theirs] = await db.cases.keys_for("w", "co-1")
    assert (theirs.seals, theirs.sealed_for) == ({"co-1": b"s" * 80}, ("cl-1", "co-1"))
    with pytest.raises(Conflict, match="already holds a seal"):
        await db.cases.add_seal("w", 1, "co-1", b"t" * 80)
    with pytest.raises(NotFound, match="the epoch has no key"):
        await db.cases.add_seal("w", 2, "co-1", b"s" * 80)
    [still] = await db.cases.keys_for("w", "co-1")
    assert still.seals == {"co-1": b"s" * 80}


async def test_no_key_deposit_on_a_closed_case(db: Database) -> None:
    """The deposit's conditional UPDATE also requires an open case, so a close that
    committed first (on any hub) wins over a deposit made from an older read."""
    await _people(db)
    await assigned_case(db, "k1", "cl-3", "co-3")
    assert await db.cases.close("k1", 200) is not None
    with pytest.raises(Forbidden, match=r"^case is closed$"):
        await db.cases.add_epoch_key(epoch_key("k1", 2, "co-3", ["cl-3", "co-3"]))
    assert await db.cases.epoch_key("k1", 2) is None
    closed = await db.cases.get("k1")
    assert closed is not None and closed.epoch == 1


async def test_case_participants(db: Database) -> None:
    await _people(db)
    waiting = await db.cases.create("cl-1", "anxiety", "en", "w", 100)
    assert waiting.participants == ("cl-1",)
    assigned = await db.cases.assign("w", "co-1", 101)
    assert assigned is not None and assigned.participants == ("cl-1", "co-1")


async def test_capsule_is_stored_with_its_key_or_not_at_all(db: Database) -> None:
    await assigned_case(db, "k1", "cl-1", "co-1")

    def capsule(epoch: int) -> CapsuleRecord:
        return CapsuleRecord("k1", epoch, "co-1", "fp", b'{"capsule": 1}', 5)

    with pytest.raises(Conflict):  # epoch 1 already has a key: neither row is written
        await db.cases.add_epoch_key(epoch_key("k1", 1, "co-1", ["cl-1", "co-1"]), capsule(1))
    assert await db.escrow.capsules_for("k1") == []
    await db.cases.add_epoch_key(epoch_key("k1", 2, "co-1", ["cl-1", "co-1"]), capsule(2))
    assert await db.escrow.capsules_for("k1") == [capsule(2)]


async def test_concurrent_deposits_for_one_epoch_one_wins(db: Database) -> None:
    await _people(db)
    await db.cases.create("cl-1", "anxiety", "en", "k1", 100)
    await db.cases.assign("k1", "co-1", 150)
    a = epoch_key("k1", 1, "cl-1", ["cl-1", "co-1"])
    b = epoch_key("k1", 1, "co-1", ["cl-1", "co-1"])
    results = await asyncio.gather(
        db.cases.add_epoch_key(a), db.cases.add_epoch_key(b), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "NoneType"]
    winner = a if results[0] is None else b
    assert await db.cases.epoch_key("k1", 1) == winner


async def test_seals_are_visible_only_to_their_account(db: Database) -> None:
    await assigned_case(db, "k1", "cl-1", "co-1")
    await add_account(db, "co-2", "counselor")
    # Epoch 2: the case moved to another counselor; co-1 no longer gets the key.
    e2 = epoch_key("k1", 2, "cl-1", ["cl-1", "co-2"])
    await db.cases.add_epoch_key(e2)
    e1 = await db.cases.epoch_key("k1", 1)
    assert e1 is not None

    client_keys = await db.cases.keys_for("k1", "cl-1")
    assert [k.epoch for k in client_keys] == [1, 2]
    assert [k.seals for k in client_keys] == [
        {"cl-1": e1.seals["cl-1"]},
        {"cl-1": e2.seals["cl-1"]},
    ]
    assert client_keys[1].commitment == e2.commitment
    assert client_keys[1].commitment_sig == e2.commitment_sig
    assert client_keys[1].creator_id == "cl-1"

    assert [(k.epoch, k.seals) for k in await db.cases.keys_for("k1", "co-1")] == [
        (1, {"co-1": e1.seals["co-1"]})
    ]
    assert [(k.epoch, k.seals) for k in await db.cases.keys_for("k1", "co-2")] == [
        (2, {"co-2": e2.seals["co-2"]})
    ]
    assert await db.cases.keys_for("k1", "stranger") == []
    assert await db.cases.keys_for("nope", "cl-1") == []


async def test_activity_since_finds_what_changed_in_the_cases_of_some_accounts(
    db: Database,
) -> None:
    case = await assigned_case(db, "k1")  # assigned at 2001, epoch-1 key at 3001
    await add_account(db, "cl-2")
    await db.cases.create("cl-2", "grief", "en", "k2", 2_500)  # waiting, untouched
    results = await db.messages.append_batch([message("k1", "cl-1") for _ in range(2)], 5_000)
    newest = results[-1]

    everything = await db.cases.activity_since(["cl-1"], 0)
    assert [(a.case.id, a.new_epoch, a.last_message) for a in everything] == [("k1", True, newest)]
    assert everything[0].case.last_seq == 2
    # Only the newest message counts, and only what happened at or after the moment.
    later = await db.cases.activity_since(["co-1", "cl-2"], 4_000)
    assert [(a.case.id, a.new_epoch, a.last_message) for a in later] == [("k1", False, newest)]
    assert await db.cases.activity_since(["cl-1"], 5_001) == []
    await db.cases.close("k1", 6_000)
    closed = await db.cases.activity_since(["cl-1"], 5_500)
    assert [(a.case.state, a.case.closed_at, a.last_message) for a in closed] == [
        ("closed", 6_000, None)
    ]
    # A waiting case where nothing happened has nothing to tell (its opener got the
    # answer to case.open), and unknown accounts have no cases.
    assert await db.cases.activity_since(["cl-2", "nobody"], 0) == []
    # Accounts come in statements of 500: the one that matters may be in any of them.
    crowd = [f"acc-{i:04d}" for i in range(1200)] + ["co-1"]
    assert [a.case.id for a in await db.cases.activity_since(crowd, 5_500)] == [case.id]
