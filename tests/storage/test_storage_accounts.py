"""AccountRepository against both backends: accounts, invites, tokens."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from protocol.errors import AuthFailed, Conflict
from storage import Database
from tests.helpers.storage_factories import account_record


async def test_create_and_read_back(db: Database) -> None:
    rec = account_record("a1", handle="alice", languages=("en", "de"), specialties=("grief",))
    stored = await db.accounts.create(rec)
    assert stored == rec
    assert await db.accounts.by_handle("alice") == rec
    assert await db.accounts.by_id("a1") == rec
    assert await db.accounts.by_handle("nobody") is None
    assert await db.accounts.by_id("nope") is None


async def test_handle_taken_is_conflict_and_stores_nothing(db: Database) -> None:
    await db.accounts.create(account_record("a1", handle="alice"))
    with pytest.raises(Conflict, match="handle is taken"):
        await db.accounts.create(account_record("a2", handle="alice"))
    assert await db.accounts.by_id("a2") is None


async def test_by_ids_and_counselors(db: Database) -> None:
    for i in range(4):
        await db.accounts.create(account_record(f"a{i}", role="counselor" if i % 2 else "client"))
    got = await db.accounts.by_ids(["a3", "a0", "missing", "a3"])
    assert [a.id for a in got] == ["a0", "a3"]
    assert await db.accounts.by_ids([]) == []
    assert [a.id for a in await db.accounts.counselors()] == ["a1", "a3"]


async def test_invite_gives_role_name_languages_and_is_single_use(db: Database) -> None:
    invite = await db.accounts.create_invite(
        b"code-hash-1", "counselor", "Dr. Jane Roe", ["en", "fr"], ["anxiety", "grief"], now_ms=5
    )
    assert invite.used_by is None and invite.created_at == 5
    # Whatever the registration said about role and profile, the invite decides.
    stored = await db.accounts.create(account_record("c1", role="client"), b"code-hash-1")
    assert stored.role == "counselor"
    assert stored.display_name == "Dr. Jane Roe"
    assert stored.languages == ("en", "fr")
    assert stored.specialties == ("anxiety", "grief")
    assert await db.accounts.by_id("c1") == stored
    used = await db.accounts.invite(b"code-hash-1")
    assert used is not None and used.used_by == "c1"

    with pytest.raises(AuthFailed, match="invalid or used invite"):
        await db.accounts.create(account_record("c2"), b"code-hash-1")
    assert await db.accounts.by_id("c2") is None


async def test_languages_offered_by_counselors_and_unused_invites(db: Database) -> None:
    assert await db.accounts.languages_offered() == frozenset()
    await db.accounts.create(account_record("k1", role="counselor", languages=("en", "ur")))
    await db.accounts.create(account_record("c1", role="client", languages=("de",)))
    await db.accounts.create_invite(b"hash-fr", "counselor", None, ["fr", "en"], [])
    await db.accounts.create_invite(b"hash-client", "client", None, ["it"], [])
    assert await db.accounts.languages_offered() == {"en", "ur", "fr"}
    await db.accounts.create_invite(b"hash-sw", "counselor", None, ["sw"], [])
    await db.accounts.create(account_record("k2", languages=("xx",)), b"hash-sw")
    # The used invite counts through its account (which took the invite's languages).
    assert await db.accounts.languages_offered() == {"en", "ur", "fr", "sw"}


async def test_unknown_invite_is_auth_failed(db: Database) -> None:
    with pytest.raises(AuthFailed):
        await db.accounts.create(account_record("c1"), b"no-such-code")
    assert await db.accounts.by_id("c1") is None


async def test_invite_with_taken_handle_leaves_invite_unused(db: Database) -> None:
    await db.accounts.create(account_record("a1", handle="taken"))
    await db.accounts.create_invite(b"inv", "counselor", None, ["en"], [])
    with pytest.raises(Conflict):
        await db.accounts.create(account_record("c1", handle="taken"), b"inv")
    invite = await db.accounts.invite(b"inv")
    assert invite is not None and invite.used_by is None
    # ... and it still works for the next registration.
    assert (await db.accounts.create(account_record("c1", handle="free"), b"inv")).role == (
        "counselor"
    )


async def test_concurrent_registrations_with_one_invite_one_wins(db: Database) -> None:
    await db.accounts.create_invite(b"inv", "counselor", "Name", ["en"], [])
    results = await asyncio.gather(
        *(db.accounts.create(account_record(f"c{i}"), b"inv") for i in range(4)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, AuthFailed) for r in results if isinstance(r, BaseException))
    assert len(await db.accounts.counselors()) == 1


async def test_duplicate_invite_hash_is_conflict(db: Database) -> None:
    await db.accounts.create_invite(b"inv", "counselor", None, [], [])
    with pytest.raises(Conflict):
        await db.accounts.create_invite(b"inv", "counselor", None, [], [])


async def test_tokens_valid_expired_revoked(db: Database) -> None:
    await db.accounts.create(account_record("a1"))
    await db.accounts.create(account_record("a2"))
    await db.accounts.add_token(b"t1", "a1", expires_at_ms=1_000)
    await db.accounts.add_token(b"t2", "a1", expires_at_ms=5_000)
    assert await db.accounts.token_valid(b"t1", "a1", now_ms=999)
    assert not await db.accounts.token_valid(b"t1", "a1", now_ms=1_000)  # expiry is exclusive
    assert not await db.accounts.token_valid(b"t1", "a2", now_ms=0)  # someone else's token
    assert not await db.accounts.token_valid(b"unknown", "a1", now_ms=0)

    await db.accounts.revoke_token(b"t2")
    assert not await db.accounts.token_valid(b"t2", "a1", now_ms=0)
    await db.accounts.revoke_token(b"t2")  # idempotent

    await db.accounts.add_token(b"t3", "a2", expires_at_ms=9_000)
    assert await db.accounts.purge_expired_tokens(now_ms=1_000) == 1
    assert await db.accounts.purge_expired_tokens(now_ms=1_000) == 0
    assert await db.accounts.token_valid(b"t3", "a2", now_ms=8_999)


async def test_list_fields_reject_commas(db: Database) -> None:
    bad = dataclasses.replace(account_record("a1"), languages=("en,de",))
    with pytest.raises(ValueError, match="comma"):
        await db.accounts.create(bad)


async def test_token_expiry_and_revoking_every_token_of_an_account(db: Database) -> None:
    await db.accounts.create(account_record("a1"))
    await db.accounts.create(account_record("a2"))
    await db.accounts.add_token(b"t1", "a1", expires_at_ms=1_000)
    await db.accounts.add_token(b"t2", "a1", expires_at_ms=5_000)
    await db.accounts.add_token(b"t3", "a2", expires_at_ms=5_000)
    assert await db.accounts.token_expiry(b"t1", "a1", now_ms=0) == 1_000
    assert await db.accounts.token_expiry(b"t1", "a1", now_ms=1_000) is None
    assert await db.accounts.token_expiry(b"t3", "a1", now_ms=0) is None
    assert await db.accounts.revoke_account_tokens("a1") == 2
    assert await db.accounts.token_expiry(b"t2", "a1", now_ms=0) is None
    assert await db.accounts.token_expiry(b"t3", "a2", now_ms=0) == 5_000  # not a2's
