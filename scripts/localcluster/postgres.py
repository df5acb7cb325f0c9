"""Databases on the local PostgreSQL for scripts/cluster, the benchmark and the tests.

    await ensure_database("postgresql+asyncpg://postgres@127.0.0.1/chat_cluster")
    async with scratch_database("postgresql://postgres@127.0.0.1/postgres", "bench") as (url, name):
        ...   # url: postgresql+asyncpg://.../bench_<hex>, dropped afterwards

Both connect through the server's ``postgres`` database with the URL's credentials
(local trust authentication in development). A scratch database is dropped
``WITH (FORCE)``, so connections left behind by killed hub processes do not keep it.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

from sqlalchemy.engine import make_url

__all__ = ["ensure_database", "scratch_database"]


@contextlib.asynccontextmanager
async def scratch_database(admin_url: str, prefix: str) -> AsyncIterator[tuple[str, str]]:
    """``(postgresql+asyncpg URL, database name)`` of a fresh database ``PREFIX_<hex>``."""
    import asyncpg

    admin = make_url(admin_url).set(drivername="postgresql")
    dsn = admin.render_as_string(hide_password=False)
    name = f"{prefix}_{secrets.token_hex(5)}"
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        url = admin.set(drivername="postgresql+asyncpg", database=name)
        yield url.render_as_string(hide_password=False), name
    finally:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def ensure_database(url: str) -> None:
    """Create the database named in ``url`` if it does not exist (local trust auth)."""
    import asyncpg

    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        return
    admin = parsed.set(drivername="postgresql", database="postgres")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False), timeout=5)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", parsed.database):
            await conn.execute(f'CREATE DATABASE "{parsed.database}"')
            print(f"created database {parsed.database}", flush=True)
    finally:
        await conn.close()
