"""Alembic environment for the chat storage schema.

Two ways in:

* **From the application** (:func:`storage.engine.run_migrations`): a sync
  ``Connection`` is passed in ``config.attributes["connection"]``, already inside the
  caller's transaction (``AsyncConnection.run_sync``). We migrate on it and leave
  commit or rollback to the caller.
* **From the ``alembic`` CLI** (``alembic -c storage/alembic.ini upgrade head``): the URL
  comes from ``sqlalchemy.url`` in the ini file, or the ``CHAT_DATABASE_URL``
  environment variable. Async URLs (``sqlite+aiosqlite``, ``postgresql+asyncpg``) are
  expected; an async engine is created with the same settings the hub uses, and the
  migration runs through ``run_sync``. ``--sql`` (offline mode) prints the DDL.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from storage.engine import create_engine, normalise_url
from storage.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode ("move and copy") lets
        # later migrations be written once for both backends.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _run_on(connection: Connection) -> None:
    _configure(connection)
    # Inside a caller's transaction this joins it; otherwise it opens and commits one.
    with context.begin_transaction():
        context.run_migrations()


def _cli_url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("CHAT_DATABASE_URL")
    if not url:
        raise RuntimeError("set sqlalchemy.url in the ini file or CHAT_DATABASE_URL")
    return url


async def _run_cli_online() -> None:
    engine, _dialect = create_engine(_cli_url())
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run_on)
            await conn.commit()
    finally:
        await engine.dispose()


def _run_offline() -> None:
    url, _dialect = normalise_url(_cli_url())
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


_given = config.attributes.get("connection")
if _given is not None:
    _run_on(_given)
else:
    # Only the CLI configures logging; in the hub, the application owns logging.
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    if context.is_offline_mode():
        _run_offline()
    else:
        asyncio.run(_run_cli_online())
