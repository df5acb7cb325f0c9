"""Fixtures shared by the whole suite: real PostgreSQL and Redis, or a clear skip.

Tests run against real services, never mocks. When a service is not reachable the
tests that need it are skipped with the reason, so ``pytest`` works on a laptop
without PostgreSQL; CI sets ``CHAT_REQUIRE_SERVICES=1`` so that a missing service
fails the run instead of silently skipping half of it
(:func:`tests.helpers.services.require_service`).

Environment:

``CHAT_TEST_PG_URL``     admin URL of a PostgreSQL server, default
                         ``postgresql://postgres@127.0.0.1:5432/test``; the suite creates
                         one scratch database ``chat_test_<hex>`` per run and drops it.
``CHAT_TEST_REDIS_URL``  default ``redis://127.0.0.1:6379/0``; keys are namespaced by a
                         per-run prefix (``redis_prefix``) and deleted at the end.
``CHAT_REQUIRE_SERVICES`` ``1``: unreachable services fail instead of skip.
``CHAT_TEST_WEAK_KDF``   set to ``1`` here for the whole run (and the CLIs it starts): the
                         hubs run Argon2id at libsodium's minimum, below the clients' floor
                         (chat_client/policy.py). Tests of the floor itself unset it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from tests.helpers.services import require_service

# Before any test imports the client: the test hubs' KDF is below the real floor.
os.environ["CHAT_TEST_WEAK_KDF"] = "1"

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_CONNECT_TIMEOUT_S = 5.0


# -- PostgreSQL ----------------------------------------------------------------


def _asyncpg_dsn(url: str) -> str:
    """A libpq-style DSN for asyncpg from any SQLAlchemy-style PostgreSQL URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _pg_admin(dsn: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_S)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The admin URL (``CHAT_TEST_PG_URL``), checked to accept connections."""
    url = os.environ.get("CHAT_TEST_PG_URL", DEFAULT_PG_URL)
    try:
        asyncio.run(_pg_admin(_asyncpg_dsn(url), "SELECT 1"))
    except Exception as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        require_service("PostgreSQL", f"at {shown}: {type(exc).__name__}: {exc}")
    return url


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """``postgresql+asyncpg://`` URL of a scratch database created for this run.

    Session-scoped: created once, dropped (WITH (FORCE), so leftover connections do
    not block it) when the run ends. Tests share it; each test must start from a state
    it controls (the storage tests truncate every table first).
    """
    name = f"chat_test_{secrets.token_hex(6)}"
    admin_dsn = _asyncpg_dsn(pg_admin_url)
    # asyncio.run: a private event loop, independent of the per-test loops.
    asyncio.run(_pg_admin(admin_dsn, f'CREATE DATABASE "{name}"'))
    try:
        yield (
            make_url(pg_admin_url)
            .set(drivername="postgresql+asyncpg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        asyncio.run(_pg_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- Redis ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis URL (``CHAT_TEST_REDIS_URL``), checked to answer PING."""
    import redis

    url = os.environ.get("CHAT_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=_CONNECT_TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        require_service("Redis", f"at {url}: {type(exc).__name__}: {exc}")
    return url


@pytest.fixture(scope="session")
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this run (``chat_test_<hex>:``); every key under it is
    deleted when the run ends, so runs sharing one Redis do not see each other."""
    import redis

    prefix = f"chat_test_{secrets.token_hex(6)}:"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=_CONNECT_TIMEOUT_S)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()
