"""Protocol version 2 in storage, on both backends: box key signatures, counselor
certificates (stored only if they match the account), the prefs blob's
compare-and-swap, and the chain hash at a seq."""

from __future__ import annotations

import asyncio
import dataclasses

import msgspec
import pytest

from protocol import crypto
from protocol.chain import GENESIS
from protocol.errors import Conflict, NotFound
from protocol.frames import CounselorCert
from storage import Database
from tests.helpers.storage_factories import account_record, assigned_case

ORG = crypto.ServerKey.from_seed(bytes(range(32)))


def cert_of(account_id: str, handle: str, sign_pk: bytes, box_pk: bytes) -> CounselorCert:
    return crypto.sign_counselor_cert(
        ORG, account_id=account_id, handle=handle, sign_pk=sign_pk, box_pk=box_pk, issued_at=5
    )


async def test_box_sig_is_stored_at_registration_and_by_attestation(db: Database) -> None:
    with_sig = dataclasses.replace(account_record("a-1"), box_sig=bytes([7]) * 64)
    await db.accounts.create(with_sig)
    got = await db.accounts.by_id("a-1")
    assert got is not None and got.box_sig == bytes([7]) * 64
    await db.accounts.create(account_record("a-2"))
    got = await db.accounts.by_id("a-2")
    assert got is not None and got.box_sig is None
    await db.accounts.set_box_sig("a-2", bytes([9]) * 64)
    got = await db.accounts.by_id("a-2")
    assert got is not None and got.box_sig == bytes([9]) * 64
    with pytest.raises(NotFound):
        await db.accounts.set_box_sig("nobody", bytes(64))


async def test_a_certificate_is_stored_only_for_the_keys_it_names(db: Database) -> None:
    counselor = await db.accounts.create(account_record("co-1", role="counselor", handle="carol"))
    client = await db.accounts.create(account_record("cl-1", handle="cleo"))
    good = cert_of("co-1", "carol", counselor.sign_pk, counselor.box_pk)
    for bad in (
        msgspec.structs.replace(good, box_pk=bytes(32)),  # the hub swapped the box key
        msgspec.structs.replace(good, sign_pk=bytes(32)),
        msgspec.structs.replace(good, handle="mallory"),
        cert_of("cl-1", "cleo", client.sign_pk, client.box_pk),  # not a counselor
    ):
        with pytest.raises(Conflict, match="does not match"):
            await db.accounts.set_cert(bad)
    with pytest.raises(NotFound):
        await db.accounts.set_cert(cert_of("nobody", "nobody", bytes(32), bytes(32)))
    stored = await db.accounts.by_id("co-1")
    assert stored is not None and stored.cert is None
    await db.accounts.set_cert(good)
    stored = await db.accounts.by_id("co-1")
    assert stored is not None and stored.cert == good
    [listed] = [a for a in await db.accounts.counselors() if a.id == "co-1"]
    assert listed.cert == good


async def test_prefs_compare_and_swap(db: Database) -> None:
    await db.accounts.create(account_record("a-1"))
    await db.accounts.create(account_record("a-2"))
    assert await db.prefs.get("a-1") == (None, 0)
    assert await db.prefs.put("a-1", b"one", 0, now_ms=10) == 1
    assert await db.prefs.get("a-1") == (b"one", 1)
    with pytest.raises(Conflict):
        await db.prefs.put("a-1", b"stale", 0, now_ms=11)  # someone wrote version 1
    with pytest.raises(Conflict):
        await db.prefs.put("a-1", b"future", 5, now_ms=11)
    assert await db.prefs.put("a-1", b"two", 1, now_ms=12) == 2
    assert await db.prefs.get("a-1") == (b"two", 2)
    assert await db.prefs.get("a-2") == (None, 0)  # per account


async def test_concurrent_prefs_writes_one_wins(db: Database) -> None:
    await db.accounts.create(account_record("a-1"))
    results = await asyncio.gather(
        *(db.prefs.put("a-1", bytes([i]), 0, now_ms=i) for i in range(5)),
        return_exceptions=True,
    )
    assert sum(r == 1 for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 4
    blob, version = await db.prefs.get("a-1")
    assert version == 1 and blob is not None and results[blob[0]] == 1


async def test_chain_hash_at(db: Database) -> None:
    await assigned_case(db, "k1", "cl", "co")
    assert await db.messages.chain_hash_at("k1", 0) == GENESIS
    assert await db.messages.chain_hash_at("k1", 1) is None
    assert await db.messages.chain_hash_at("nope", 3) is None
