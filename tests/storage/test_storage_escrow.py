"""Escrow, consent, dispute and audit repositories against both backends.

The end-to-end escrow tests run on SQLite only; these pin the repository contracts
(conflicts, filters, state transitions, the audit hash chain) on PostgreSQL too,
including what concurrent writers do, since PostgreSQL does not serialise writers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from protocol.errors import Conflict, NotFound
from storage import Database, open_database
from storage.audit import AUDIT_GENESIS, audit_hash
from storage.consents import ConsentRecord
from storage.disputes import DisputeRecord
from storage.escrow import CapsuleRecord, PolicyRecord
from tests.helpers.storage_factories import DATA_KEY, add_account, assigned_case, epoch_key

FP_A = "a" * 64
FP_B = "b" * 64


def _capsule(case_id: str, epoch: int, depositor: str, fp: str, at: int) -> CapsuleRecord:
    return CapsuleRecord(case_id, epoch, depositor, fp, secrets.token_bytes(48), at)


def _consent(account: str, terms: int = 1, fp: str = FP_A, at: int = 500) -> ConsentRecord:
    return ConsentRecord(account, terms, fp, secrets.token_bytes(64), at)


async def _actions(db: Database) -> list[tuple[str, str]]:
    return [(e.action, e.subject) for e in await db.audit.entries()]


async def _dispute(
    db: Database, dispute_id: str, *, requester: str | None = "cl-1", at: int = 5_000
) -> DisputeRecord:
    return await db.disputes.create(
        dispute_id=dispute_id,
        case_id="case-1",
        kind="client" if requester is not None else "legal",
        requester_id=requester,
        document=b'{"doc":"' + dispute_id.encode() + b'"}',
        policy_fingerprint=FP_A,
        legal_order=None if requester is not None else "order-42",
        now_ms=at,
    )


# -- escrow policies and capsules ----------------------------------------------


async def test_no_policy_installed(db: Database) -> None:
    assert await db.escrow.current() is None
    assert await db.escrow.by_fingerprint(FP_A) is None
    assert await db.escrow.capsules_for("case-1") == []


async def test_install_newest_wins_and_reinstall_is_conflict(db: Database) -> None:
    first = await db.escrow.install(FP_A, b'{"p":"a"}', 1, 100)
    assert first == PolicyRecord(FP_A, b'{"p":"a"}', 1, 100)
    assert await db.escrow.current() == first
    second = await db.escrow.install(FP_B, b'{"p":"b"}', 2, 200)
    assert await db.escrow.current() == second
    # Newest by install order, not by the caller's clock.
    third_fp = "c" * 64
    third = await db.escrow.install(third_fp, b'{"p":"c"}', 3, 50)
    assert await db.escrow.current() == third
    assert await db.escrow.by_fingerprint(FP_A) == first
    assert await db.escrow.by_fingerprint("d" * 64) is None

    with pytest.raises(Conflict, match="installed before"):
        await db.escrow.install(FP_A, b'{"p":"a2"}', 4, 300)
    # The refused install changed nothing, not even the audit log.
    assert await db.escrow.current() == third
    assert await db.escrow.by_fingerprint(FP_A) == first
    entries = await db.audit.entries()
    assert [(e.action, e.subject) for e in entries] == [
        ("policy.install", FP_A),
        ("policy.install", FP_B),
        ("policy.install", third_fp),
    ]
    assert json.loads(entries[1].detail) == {"terms_version": 2}
    assert await db.audit.verify() == []


async def test_put_capsule_conflict_and_order(db: Database) -> None:
    await assigned_case(db)  # case-1 between cl-1 and co-1, epoch 1 keyed
    await db.cases.add_epoch_key(epoch_key("case-1", 2, "co-1", ["cl-1", "co-1"]))
    c2_co = _capsule("case-1", 2, "co-1", FP_A, 10)
    c1_co = _capsule("case-1", 1, "co-1", FP_A, 20)
    c1_cl = _capsule("case-1", 1, "cl-1", FP_A, 20)
    c1_cl_b = _capsule("case-1", 1, "cl-1", FP_B, 5)
    for capsule in (c2_co, c1_co, c1_cl, c1_cl_b):
        await db.escrow.put_capsule(capsule)
    # Ordered by epoch, then creation time, then depositor.
    assert await db.escrow.capsules_for("case-1") == [c1_cl_b, c1_cl, c1_co, c2_co]

    duplicate = dataclasses.replace(c1_cl, capsule=secrets.token_bytes(48), created_at=99)
    with pytest.raises(Conflict, match="already deposited"):
        await db.escrow.put_capsule(duplicate)
    # An epoch without a key cannot hold capsules either.
    with pytest.raises(Conflict):
        await db.escrow.put_capsule(_capsule("case-1", 3, "cl-1", FP_A, 30))
    stored = await db.escrow.capsules_for("case-1")
    assert stored == [c1_cl_b, c1_cl, c1_co, c2_co]  # the first capsule is kept
    assert await db.escrow.capsules_for("case-2") == []


async def test_concurrent_capsule_deposits_store_one(db: Database) -> None:
    await assigned_case(db)
    attempts = [_capsule("case-1", 1, "cl-1", FP_A, 10 + i) for i in range(4)]
    results = await asyncio.gather(
        *(db.escrow.put_capsule(c) for c in attempts), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == [
        "Conflict",
        "Conflict",
        "Conflict",
        "NoneType",
    ]
    stored = await db.escrow.capsules_for("case-1")
    assert len(stored) == 1 and stored[0] in attempts


# -- consents --------------------------------------------------------------------


async def test_consent_record_has_and_all(db: Database) -> None:
    await add_account(db, "cl-1")
    await add_account(db, "cl-2")
    first = _consent("cl-1", 1, FP_A, 500)
    assert not await db.consents.has("cl-1", 1, FP_A)
    assert await db.consents.record(first) is True
    assert await db.consents.has("cl-1", 1, FP_A)
    # Another terms version or policy is a separate acceptance.
    assert not await db.consents.has("cl-1", 2, FP_A)
    assert not await db.consents.has("cl-1", 1, FP_B)
    assert not await db.consents.has("cl-2", 1, FP_A)

    # Accepting again is not an error, and the first acceptance is the one kept.
    assert await db.consents.record(_consent("cl-1", 1, FP_A, 900)) is False
    newer_terms = _consent("cl-1", 2, FP_A, 600)
    other_policy = _consent("cl-1", 1, FP_B, 400)
    other_account = _consent("cl-2", 1, FP_A, 500)
    for consent in (newer_terms, other_policy, other_account):
        assert await db.consents.record(consent) is True
    # Ordered by acceptance time, then account.
    assert await db.consents.all() == [other_policy, first, other_account, newer_terms]

    # One audit row per stored acceptance, none for the repeat.
    entries = await db.audit.entries()
    assert [(e.action, e.subject) for e in entries] == [("consent", "cl-1")] * 3 + [
        ("consent", "cl-2")
    ]
    assert json.loads(entries[0].detail) == {"terms_version": 1, "policy": FP_A}
    assert await db.audit.verify() == []


async def test_consent_for_unknown_account_is_refused(db: Database) -> None:
    with pytest.raises(IntegrityError):  # the account foreign key
        await db.consents.record(_consent("ghost"))
    assert await db.consents.all() == []
    assert await db.audit.count() == 0


async def test_concurrent_consents_same_account_stored_once(db: Database) -> None:
    await add_account(db, "cl-1")
    attempts = [_consent("cl-1", 1, FP_A, 500 + i) for i in range(4)]
    results = await asyncio.gather(*(db.consents.record(c) for c in attempts))
    assert sorted(results) == [False, False, False, True]
    stored = await db.consents.all()
    assert len(stored) == 1 and stored[0] in attempts
    assert await _actions(db) == [("consent", "cl-1")]
    assert await db.audit.verify() == []


async def test_concurrent_consents_of_many_accounts_all_stored(db: Database) -> None:
    """Many clients accepting new terms at once: every acceptance is stored, and the
    audit log stays one unbroken chain (PostgreSQL writers run in parallel)."""
    accounts = [f"cl-{i}" for i in range(8)]
    for account in accounts:
        await add_account(db, account)
    results = await asyncio.gather(*(db.consents.record(_consent(a, 1, FP_A)) for a in accounts))
    assert results == [True] * len(accounts)
    assert {c.account_id for c in await db.consents.all()} == set(accounts)
    entries = await db.audit.entries()
    assert [e.seq for e in entries] == list(range(1, len(accounts) + 1))
    assert sorted(e.subject for e in entries) == sorted(accounts)
    assert await db.audit.verify() == []


# -- disputes --------------------------------------------------------------------


async def test_create_and_get_client_and_legal(db: Database) -> None:
    await assigned_case(db)
    client = await _dispute(db, "d-1", at=5_000)
    assert client == DisputeRecord(
        id="d-1",
        case_id="case-1",
        kind="client",
        state="pending",
        requester_id="cl-1",
        document=b'{"doc":"d-1"}',
        created_at=5_000,
        updated_at=5_000,
    )
    assert await db.disputes.get("d-1") == client
    legal = await _dispute(db, "d-2", requester=None, at=5_100)
    assert (legal.kind, legal.requester_id) == ("legal", None)
    assert await db.disputes.get("d-2") == legal
    with pytest.raises(NotFound):
        await db.disputes.get("d-3")

    entries = await db.audit.entries()
    assert [(e.action, e.subject) for e in entries] == [
        ("dispute.request", "d-1"),
        ("dispute.legal", "d-2"),
    ]
    assert json.loads(entries[0].detail) == {"case": "case-1", "policy": FP_A, "requester": "cl-1"}
    assert json.loads(entries[1].detail) == {"case": "case-1", "policy": FP_A, "order": "order-42"}


async def test_create_duplicate_or_unknown_case_writes_nothing(db: Database) -> None:
    await assigned_case(db)
    await _dispute(db, "d-1")
    with pytest.raises(IntegrityError):  # the primary key
        await _dispute(db, "d-1", at=6_000)
    with pytest.raises(IntegrityError):  # the case foreign key
        await db.disputes.create(
            dispute_id="d-2",
            case_id="no-such-case",
            kind="legal",
            requester_id=None,
            document=b"{}",
            policy_fingerprint=FP_A,
            legal_order="o",
            now_ms=6_000,
        )
    assert [d.id for d in await db.disputes.find()] == ["d-1"]
    assert (await db.disputes.get("d-1")).created_at == 5_000
    assert await _actions(db) == [("dispute.request", "d-1")]


async def test_find_filters_and_order(db: Database) -> None:
    await assigned_case(db)
    await assigned_case(db, "case-2", client="cl-2", counselor="co-2")
    await _dispute(db, "d-b", at=5_000)
    await _dispute(db, "d-a", at=5_000)  # same time: ordered by id
    await _dispute(db, "d-legal", requester=None, at=4_000)
    await db.disputes.create(
        dispute_id="d-other",
        case_id="case-2",
        kind="client",
        requester_id="cl-2",
        document=b"{}",
        policy_fingerprint=FP_A,
        legal_order=None,
        now_ms=6_000,
    )
    assert [d.id for d in await db.disputes.find()] == ["d-legal", "d-a", "d-b", "d-other"]
    assert [d.id for d in await db.disputes.find(requester_id="cl-1")] == ["d-a", "d-b"]
    assert [d.id for d in await db.disputes.find(requester_id="cl-2")] == ["d-other"]
    assert await db.disputes.find(requester_id="co-1") == []
    # changed_after is strict.
    assert [d.id for d in await db.disputes.find(changed_after=5_000)] == ["d-other"]
    assert [d.id for d in await db.disputes.find(changed_after=4_999)] == [
        "d-a",
        "d-b",
        "d-other",
    ]
    assert await db.disputes.find(requester_id="cl-1", changed_after=5_000) == []

    # An approval bumps updated_at, so the request shows up as changed.
    await db.disputes.add_approval("d-b", 0, b"ap-0", 2, 7_000)
    assert [d.id for d in await db.disputes.find(changed_after=6_000)] == ["d-b"]
    assert [d.id for d in await db.disputes.find(requester_id="cl-1", changed_after=6_000)] == [
        "d-b"
    ]
    found = (await db.disputes.find(changed_after=6_000))[0]
    assert (found.created_at, found.updated_at, found.state) == (5_000, 7_000, "pending")


async def test_approvals_threshold_and_export(db: Database) -> None:
    await assigned_case(db)
    await _dispute(db, "d-1", at=5_000)

    one = await db.disputes.add_approval("d-1", 2, b"ap-2", 2, 6_000)
    assert (one.state, one.updated_at, one.approvals) == ("pending", 6_000, (b"ap-2",))
    with pytest.raises(Conflict, match="already approved"):
        await db.disputes.add_approval("d-1", 2, b"ap-2-again", 2, 6_100)
    unchanged = await db.disputes.get("d-1")
    assert (unchanged.state, unchanged.updated_at, unchanged.approvals) == (
        "pending",
        6_000,
        (b"ap-2",),
    )

    two = await db.disputes.add_approval("d-1", 0, b"ap-0", 2, 6_200)
    # Approvals come back by officer index, not by arrival.
    assert (two.state, two.updated_at, two.approvals) == ("approved", 6_200, (b"ap-0", b"ap-2"))
    # Past the threshold the request stays approved (it never goes back to pending).
    three = await db.disputes.add_approval("d-1", 1, b"ap-1", 2, 6_300)
    assert three.state == "approved"
    assert three.approvals == (b"ap-0", b"ap-1", b"ap-2")

    await db.disputes.mark_exported("d-1", "f" * 64, 12, 7_000)
    exported = await db.disputes.get("d-1")
    assert (exported.state, exported.updated_at) == ("exported", 7_000)
    assert [d.id for d in await db.disputes.find(changed_after=6_999)] == ["d-1"]

    entries = await db.audit.entries()
    assert [(e.action, e.subject) for e in entries] == [
        ("dispute.request", "d-1"),
        ("dispute.approve", "d-1"),
        ("dispute.approve", "d-1"),
        ("dispute.approve", "d-1"),
        ("dispute.export", "d-1"),
    ]
    assert [json.loads(e.detail) for e in entries[1:4]] == [
        {"officer": 2, "approvals": 1, "threshold": 2},
        {"officer": 0, "approvals": 2, "threshold": 2},
        {"officer": 1, "approvals": 3, "threshold": 2},
    ]
    assert json.loads(entries[4].detail) == {"bundle_blake2b": "f" * 64, "messages": 12}
    assert await db.audit.verify() == []


async def test_approval_of_unknown_request_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        await db.disputes.add_approval("d-9", 0, b"ap-0", 1, 6_000)
    assert await db.audit.count() == 0


async def test_threshold_one_approves_at_once(db: Database) -> None:
    await assigned_case(db)
    await _dispute(db, "d-1", requester=None)
    approved = await db.disputes.add_approval("d-1", 0, b"ap-0", 1, 6_000)
    assert approved.state == "approved"


async def test_concurrent_approvals_by_same_officer_stored_once(db: Database) -> None:
    await assigned_case(db)
    await _dispute(db, "d-1")
    results = await asyncio.gather(
        *(db.disputes.add_approval("d-1", 0, f"ap-{i}".encode(), 2, 6_000 + i) for i in range(4)),
        return_exceptions=True,
    )
    conflicts = [r for r in results if isinstance(r, Conflict)]
    stored = [r for r in results if isinstance(r, DisputeRecord)]
    assert (len(conflicts), len(stored)) == (3, 1), results
    final = await db.disputes.get("d-1")
    assert final.state == "pending"
    assert len(final.approvals) == 1 and final.approvals == stored[0].approvals
    assert [a for a, _ in await _actions(db)].count("dispute.approve") == 1
    assert await db.audit.verify() == []


async def test_concurrent_approvals_by_distinct_officers_reach_threshold(db: Database) -> None:
    """Officers approving at the same moment: every approval is stored and the request
    is approved once the threshold is met, however the transactions interleave."""
    await assigned_case(db)
    await _dispute(db, "d-1")
    results = await asyncio.gather(
        *(db.disputes.add_approval("d-1", i, f"ap-{i}".encode(), 3, 6_000) for i in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, DisputeRecord) for r in results), results
    final = await db.disputes.get("d-1")
    assert final.state == "approved"
    assert final.approvals == (b"ap-0", b"ap-1", b"ap-2")
    approvals = [json.loads(e.detail) for e in await db.audit.entries()][1:]
    assert sorted(a["approvals"] for a in approvals) == [1, 2, 3]
    assert await db.audit.verify() == []


# -- the audit log ----------------------------------------------------------------


async def test_append_builds_hash_chain(db: Database) -> None:
    assert await db.audit.verify() == []  # an empty log is intact
    first = await db.audit.append("policy.install", FP_A, {"z": 1, "a": [1, 2]}, 100)
    second = await db.audit.append("consent", "cl-1", {}, 200)
    third = await db.audit.append("dispute.export", "d-1", {"messages": 3}, 150)
    assert first.detail == '{"a":[1,2],"z":1}'  # canonical JSON: sorted, compact
    assert [e.seq for e in (first, second, third)] == [1, 2, 3]
    assert first.prev_hash == AUDIT_GENESIS
    assert second.prev_hash == first.hash and third.prev_hash == second.hash
    for entry in (first, second, third):
        assert entry.hash == audit_hash(
            entry.prev_hash, entry.seq, entry.ts, entry.action, entry.subject, entry.detail
        )
    assert len({first.hash, second.hash, third.hash}) == 3
    assert await db.audit.entries() == [first, second, third]
    assert await db.audit.count() == 3
    assert await db.audit.verify() == []


async def _chain(db: Database, n: int) -> None:
    for i in range(n):
        await db.audit.append("consent", f"cl-{i}", {"terms_version": i}, 100 + i)


async def _raw(db: Database, sql: str, **params: object) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(text(sql), params)


async def test_verify_detects_altered_row(db: Database) -> None:
    await _chain(db, 4)
    await _raw(db, "UPDATE audit_log SET detail = :d WHERE seq = 2", d='{"terms_version":9}')
    assert await db.audit.verify() == ["row 2: contents do not match its hash"]


async def test_verify_detects_rehashed_row(db: Database) -> None:
    """Rewriting a row and its hash consistently still breaks the next link."""
    await _chain(db, 4)
    row = (await db.audit.entries())[1]
    forged = audit_hash(row.prev_hash, row.seq, row.ts, row.action, "cl-x", row.detail)
    await _raw(db, "UPDATE audit_log SET subject = 'cl-x', hash = :h WHERE seq = 2", h=forged)
    assert await db.audit.verify() == ["row 3: does not link to the previous row"]


async def test_verify_detects_deleted_row_and_timestamp_change(db: Database) -> None:
    await _chain(db, 4)
    await _raw(db, "DELETE FROM audit_log WHERE seq = 2")
    await _raw(db, "UPDATE audit_log SET ts = ts + 1 WHERE seq = 4")
    assert await db.audit.verify() == [
        "row 3: expected seq 2 (rows missing)",
        "row 3: does not link to the previous row",
        "row 4: contents do not match its hash",
    ]


async def test_two_hubs_appending_at_once_keep_one_chain(db: Database, db_url: str) -> None:
    """Two Database objects on one database, as two hub processes would be."""
    accounts = [f"cl-{i}" for i in range(6)]
    for account in accounts:
        await add_account(db, account)
    other = await open_database(db_url, DATA_KEY, migrate=False)
    try:
        results = await asyncio.gather(
            *(db.consents.record(_consent(a, 1, FP_A)) for a in accounts),
            *(other.consents.record(_consent(a, 2, FP_A)) for a in accounts),
            *(other.audit.append("note", f"n-{i}", {}, 700) for i in range(3)),
        )
    finally:
        await other.close()
    assert results[: 2 * len(accounts)] == [True] * (2 * len(accounts))
    entries = await db.audit.entries()
    assert [e.seq for e in entries] == list(range(1, 2 * len(accounts) + 4))
    assert await db.audit.verify() == []
