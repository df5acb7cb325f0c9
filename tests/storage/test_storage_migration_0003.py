"""Migration 0003 (protocol version 2): existing accounts' secrets are sealed at rest,
the alembic CLI refuses to convert them without the data key, and the way down opens
them again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from storage import open_database, sqlite_url
from storage.engine import create_engine, migrations_config
from tests.helpers.storage_factories import DATA_KEY

ROOT = Path(__file__).resolve().parents[2]
SALT, WRAPPED = bytes(range(16)), bytes(range(100, 204))


async def _version_1_database(path: Path) -> str:
    """A database migrated to 0002 holding one account as a version-1 hub wrote it."""
    url = sqlite_url(path)
    engine, _ = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(migrations_config(c), "0002"))
            await conn.execute(
                text(
                    "INSERT INTO accounts (id, handle, role, salt, opslimit, memlimit, "
                    "auth_hash, sign_pk, box_pk, wrapped_keys, languages, specialties, "
                    "name_enc, created_at) VALUES ('acc_old', 'old-timer', 'client', :salt, "
                    "2, 67108864, 'h', :pk, :pk, :wrapped, '', '', NULL, 1)"
                ),
                {"salt": SALT, "wrapped": WRAPPED, "pk": bytes(32)},
            )
            await conn.execute(
                text(
                    "INSERT INTO cases (id, client_id, counselor_id, state, topic_enc, "
                    "language, epoch, last_seq, chain_head, created_at) VALUES ('k1', "
                    "'acc_old', NULL, 'waiting', :t, 'en', 0, 0, :g, 1)"
                ),
                {"t": b"x", "g": bytes(32)},
            )
            await conn.execute(
                text(
                    "INSERT INTO receipts (case_id, account_id, kind, up_to_seq) "
                    "VALUES ('k1', 'acc_old', 'read', 0)"
                )
            )
    finally:
        await engine.dispose()
    return url


async def _raw_account(url: str) -> tuple[bytes, bytes]:
    engine, _ = create_engine(url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(text("SELECT salt_enc, wrapped_keys_enc FROM accounts"))
            ).one()
    finally:
        await engine.dispose()
    return bytes(row[0]), bytes(row[1])


async def test_existing_accounts_are_sealed_and_read_back(tmp_path: Path) -> None:
    url = await _version_1_database(tmp_path / "old.db")
    db = await open_database(url, DATA_KEY)  # the hub migrates with its data key
    try:
        account = await db.accounts.by_id("acc_old")
        assert account is not None
        assert (account.salt, account.wrapped_keys) == (SALT, WRAPPED)
        assert account.box_sig is None and account.cert is None  # not yet attested
        # An unsigned version-1 receipt is kept but never served as a signed one.
        assert await db.receipts.signed_for_case("k1") == []
        assert await db.receipts.for_case("k1") == [("acc_old", "read", 0)]
    finally:
        await db.close()
    salt_enc, wrapped_enc = await _raw_account(url)
    assert SALT not in salt_enc and WRAPPED not in wrapped_enc
    assert len(salt_enc) == 1 + 24 + 16 + 16 and len(wrapped_enc) == 1 + 24 + 104 + 16


def test_the_alembic_cli_refuses_to_convert_without_the_data_key(tmp_path: Path) -> None:
    import asyncio

    url = asyncio.run(_version_1_database(tmp_path / "old.db"))
    env = {**os.environ, "CHAT_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "alembic", "-c", str(ROOT / "storage" / "alembic.ini")]
    done = subprocess.run(
        [*cli, "upgrade", "head"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "run it with chat-server" in done.stderr
    current = subprocess.run([*cli, "current"], env=env, capture_output=True, text=True, timeout=60)
    assert "0002" in current.stdout  # nothing was changed


async def test_downgrade_opens_the_secrets_again(tmp_path: Path) -> None:
    url = await _version_1_database(tmp_path / "old.db")
    db = await open_database(url, DATA_KEY)
    await db.close()
    engine, _ = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(migrations_config(c, DATA_KEY), "0002"))
            row = (await conn.execute(text("SELECT salt, wrapped_keys FROM accounts"))).one()
            assert (bytes(row[0]), bytes(row[1])) == (SALT, WRAPPED)
        async with engine.begin() as conn:
            with pytest.raises(RuntimeError, match="data key"):
                await conn.run_sync(lambda c: command.upgrade(migrations_config(c), "head"))
    finally:
        await engine.dispose()
