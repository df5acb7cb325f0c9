"""Storage fixtures: every test runs against SQLite (a real file) and PostgreSQL.

``db`` is parametrised over both backends. Both go through ``open_database`` with
migrations, exactly as the hub does. The SQLite database is a fresh file per test;
the PostgreSQL database is the run's scratch database (``pg_url``), whose tables are
truncated before each test, which is much faster than migrating a fresh schema each
time and leaves the migrated schema (and ``alembic_version``) in place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from storage import Database, open_database, sqlite_url
from storage.models import Base
from tests.helpers.storage_factories import DATA_KEY

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of an empty-or-truncatable database of the parametrised backend.

    A sync fixture on purpose: ``pg_url`` creates its database with ``asyncio.run``,
    which cannot run inside an async fixture's event loop.
    """
    if request.param == "sqlite":
        return sqlite_url(tmp_path_factory.mktemp("sqlite") / "chat.db")
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """An open, migrated Database with empty tables."""
    database = await open_database(db_url, DATA_KEY)
    try:
        if database.dialect == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            async with database.engine.begin() as conn:
                await conn.execute(text(f"TRUNCATE TABLE {names} CASCADE"))
        yield database
    finally:
        await database.close()
