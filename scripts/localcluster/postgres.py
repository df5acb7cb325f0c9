"""A PostgreSQL database of one's own, for a test or a benchmark run, dropped afterwards.

    async with scratch_database("postgresql://postgres@127.0.0.1/postgres", "bench") as (url, name):
        ...   # url: postgresql+asyncpg://.../bench_<hex>

Created with ``CREATE DATABASE`` through the admin URL, and dropped ``WITH (FORCE)``, so
connections left behind by killed hub processes do not keep it alive.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

from sqlalchemy.engine import make_url

__all__ = ["scratch_database"]


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
