"""Encryption at rest: no display name or topic reaches the database in clear."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from storage import Database, open_database, sqlite_url
from storage.atrest import AtRestCipher, AtRestError, context
from storage.models import Base
from tests.helpers.storage_factories import DATA_KEY, account_record, add_account

NAME_MARKER = "MARKER-name-7f3a"
TOPIC_MARKER = "marker-topic-7f3a"  # topics match [a-z][a-z0-9_-]*
INVITE_MARKER = "MARKER-invite-name-c41d"


async def _write_personal_data(db: Database) -> None:
    await db.accounts.create_invite(b"inv-1", "counselor", f"Dr {NAME_MARKER}", ["en"], [])
    await db.accounts.create_invite(b"inv-2", "counselor", INVITE_MARKER, ["en"], [])
    await db.accounts.create(account_record("co-1", handle="counselor-one"), b"inv-1")
    await add_account(db, "cl-1")
    await db.cases.create("cl-1", TOPIC_MARKER, "en", "k1", 100)


async def _read_back(db: Database) -> None:
    counselor = await db.accounts.by_id("co-1")
    assert counselor is not None and counselor.display_name == f"Dr {NAME_MARKER}"
    invite = await db.accounts.invite(b"inv-2")
    assert invite is not None and invite.display_name == INVITE_MARKER
    case = await db.cases.get("k1")
    assert case is not None and case.topic == TOPIC_MARKER


def _assert_no_markers(blob: bytes, where: str) -> None:
    for marker in (NAME_MARKER, TOPIC_MARKER, INVITE_MARKER):
        assert marker.encode() not in blob, f"{marker!r} found in {where}"


async def test_sqlite_files_hold_no_personal_data_in_clear(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    db = await open_database(sqlite_url(path), DATA_KEY)
    try:
        await _write_personal_data(db)
        await _read_back(db)
        # Before close: the committed rows live in the -wal file, not yet checkpointed.
        files = sorted(tmp_path.glob("chat.db*"))
        assert Path(f"{path}-wal") in files
        for f in files:
            _assert_no_markers(f.read_bytes(), f.name)
    finally:
        await db.close()
    for f in sorted(tmp_path.glob("chat.db*")):  # after the checkpoint on close
        _assert_no_markers(f.read_bytes(), f.name)


async def test_no_column_holds_personal_data_in_clear(db: Database) -> None:
    """Every value of every table, read raw through SQL, on both backends."""
    await _write_personal_data(db)
    await _read_back(db)
    async with db.engine.connect() as conn:
        for t in Base.metadata.sorted_tables:
            for row in await conn.execute(select(t)):
                for value in row:
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    _assert_no_markers(raw, f"table {t.name}")


async def test_wrong_data_key_cannot_read_personal_data(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "chat.db")
    db = await open_database(url, DATA_KEY)
    try:
        await _write_personal_data(db)
    finally:
        await db.close()
    wrong = await open_database(url, bytes(32))
    try:
        with pytest.raises(AtRestError):
            await wrong.cases.get("k1")
        with pytest.raises(AtRestError):
            await wrong.accounts.by_id("co-1")
        # Every account's login salt and wrapped keys are sealed too (protocol v2).
        with pytest.raises(AtRestError):
            await wrong.accounts.by_id("cl-1")
    finally:
        await wrong.close()


def test_cipher_round_trip_and_binding() -> None:
    cipher = AtRestCipher(DATA_KEY)
    ctx = context("cases.topic", "k1")
    sealed = cipher.seal("grief", ctx)
    assert cipher.open(sealed, ctx) == "grief"
    assert cipher.seal("grief", ctx) != sealed  # fresh nonce each time
    with pytest.raises(AtRestError):  # moved to another row
        cipher.open(sealed, context("cases.topic", "k2"))
    with pytest.raises(AtRestError):  # moved to another column
        cipher.open(sealed, context("accounts.name", "k1"))
    with pytest.raises(AtRestError):  # altered
        cipher.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), ctx)
    with pytest.raises(AtRestError):  # not ours at all
        cipher.open(b"grief", ctx)
    assert cipher.seal_optional(None, ctx) is None
    assert cipher.open_optional(None, ctx) is None


@pytest.mark.parametrize("key", [b"", bytes(31), bytes(33)])
def test_data_key_must_be_32_bytes(key: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        AtRestCipher(key)


async def test_login_salt_and_wrapped_keys_are_sealed_at_rest(db: Database) -> None:
    record = account_record("cl-9")
    await db.accounts.create(record)
    got = await db.accounts.by_id("cl-9")
    assert got is not None
    assert (got.salt, got.wrapped_keys) == (record.salt, record.wrapped_keys)
    async with db.engine.connect() as conn:
        for row in await conn.execute(select(Base.metadata.tables["accounts"])):
            for value in row:
                raw = value if isinstance(value, bytes) else str(value).encode()
                assert record.salt not in raw and record.wrapped_keys not in raw
    # Each sealed value is bound to its column and its account.
    cipher = AtRestCipher(DATA_KEY)
    sealed = cipher.seal_bytes(record.salt, context("accounts.salt", "cl-9"))
    assert cipher.open_bytes(sealed, context("accounts.salt", "cl-9")) == record.salt
    for ctx in (context("accounts.salt", "cl-8"), context("accounts.wrapped_keys", "cl-9")):
        with pytest.raises(AtRestError):
            cipher.open_bytes(sealed, ctx)
    with pytest.raises(AtRestError, match="unknown format"):
        cipher.open_bytes(record.salt, context("accounts.salt", "cl-9"))
