"""Migrations and engine set-up: the migrated schema is exactly the models' schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from storage import Database, open_database, sqlite_url
from storage.engine import MIGRATIONS_DIR, migrations_config, normalise_url, run_migrations
from storage.models import Base
from tests.helpers.storage_factories import DATA_KEY

ROOT = Path(__file__).resolve().parents[2]


def _diffs(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(ctx, Base.metadata))


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _head() -> str | None:
    return ScriptDirectory.from_config(migrations_config()).get_current_head()


async def test_empty_sqlite_file_migrates_to_models(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "chat.db"  # parent directories are created
    db = await open_database(sqlite_url(path), DATA_KEY)
    try:
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_diffs) == []
            assert await conn.run_sync(_current) == _head() == "0005_escrow"
    finally:
        await db.close()
    assert path.exists()


async def test_migrated_schema_matches_models_on_every_backend(db: Database) -> None:
    async with db.engine.connect() as conn:
        assert await conn.run_sync(_diffs) == []
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert names == {t.name for t in Base.metadata.sorted_tables} | {"alembic_version"}


async def test_migrating_again_is_a_no_op(db: Database) -> None:
    await db.migrate()
    await db.migrate()
    async with db.engine.connect() as conn:
        assert await conn.run_sync(_current) == _head()


async def test_downgrade_to_base_and_up_again(tmp_path: Path) -> None:
    db = await open_database(sqlite_url(tmp_path / "chat.db"), DATA_KEY)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(migrations_config(c), "base"))
            assert await conn.run_sync(lambda c: inspect(c).get_table_names()) == [
                "alembic_version"
            ]
        async with db.engine.begin() as conn:
            await conn.run_sync(run_migrations)
            assert await conn.run_sync(_diffs) == []
    finally:
        await db.close()


async def test_migrate_false_leaves_the_file_empty(tmp_path: Path) -> None:
    db = await open_database(sqlite_url(tmp_path / "chat.db"), DATA_KEY, migrate=False)
    try:
        async with db.engine.connect() as conn:
            assert await conn.run_sync(lambda c: inspect(c).get_table_names()) == []
    finally:
        await db.close()


def test_alembic_cli_migrates_an_async_url(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "cli.db")
    env = {**os.environ, "CHAT_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "alembic", "-c", str(ROOT / "storage" / "alembic.ini")]
    done = subprocess.run(
        [*cli, "upgrade", "head"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    current = subprocess.run([*cli, "current"], env=env, capture_output=True, text=True, timeout=60)
    assert current.returncode == 0, current.stderr
    assert "0005_escrow" in current.stdout


async def test_sqlite_connections_get_the_pragmas(tmp_path: Path) -> None:
    db = await open_database(sqlite_url(tmp_path / "chat.db"), DATA_KEY)
    try:
        async with db.engine.connect() as conn:
            got = {
                p: (await conn.exec_driver_sql(f"PRAGMA {p}")).scalar()
                for p in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        await db.close()
    assert got == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 5000}


async def test_dialect_matches_the_engine(db: Database) -> None:
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    assert db.dialect == db.engine.dialect.name


@pytest.mark.parametrize(
    ("url", "driver", "dialect"),
    [
        ("sqlite:///var/chat.db", "sqlite+aiosqlite", "sqlite"),
        ("sqlite+aiosqlite:////abs/chat.db", "sqlite+aiosqlite", "sqlite"),
        ("postgresql://u@h/db", "postgresql+asyncpg", "postgresql"),
        ("postgres://u@h/db", "postgresql+asyncpg", "postgresql"),
        ("postgresql+asyncpg://u@h:5433/db", "postgresql+asyncpg", "postgresql"),
    ],
)
def test_urls_are_normalised_to_async_drivers(url: str, driver: str, dialect: str) -> None:
    parsed, got = normalise_url(url)
    assert (parsed.drivername, got) == (driver, dialect)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "mysql://u@h/db"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        normalise_url(url)


def test_sqlite_url_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_url("var/chat.db") == f"sqlite+aiosqlite:///{tmp_path / 'var' / 'chat.db'}"
    assert MIGRATIONS_DIR.joinpath("env.py").is_file()
