"""How the repositories get a connection and a transaction, per backend.

Every repository verb is one explicit transaction, opened through
:meth:`Transactions.read` or :meth:`Transactions.write`:

``read()``
    a consistent snapshot for one or more SELECTs. On SQLite in WAL mode readers never
    block the writer and never wait for it.

``write()``
    a transaction that will modify rows.

    * **SQLite** allows one writer per database file. A deferred transaction that reads
      first and writes later can fail with "database is locked" without waiting (its
      snapshot went stale), so writes begin ``BEGIN IMMEDIATE``: the write lock is taken
      up front and ``busy_timeout`` makes a second *process* wait for it. Inside one
      process, writers queue on an :class:`asyncio.Lock` instead of on SQLite's lock,
      so they wait in order without holding pool connections and without spinning in
      SQLite's busy handler.
    * **PostgreSQL** uses READ COMMITTED; verbs that race (assign, key deposit, append)
      use conditional UPDATEs or ``SELECT ... FOR UPDATE`` on the rows involved.

Why SQLAlchemy's pysqlite "BEGIN" handling is replaced: the stdlib ``sqlite3`` driver
(legacy transaction control, Python < 3.16) does not emit BEGIN before SELECTs or DDL,
so reads would not be snapshots and migrations would not be transactional. The
documented SQLAlchemy recipe turns the driver's own handling off
(``isolation_level = None``) and emits BEGIN from the ``begin`` event; we choose
``BEGIN IMMEDIATE`` there for connections marked as writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, TypeAlias, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Connection, Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .atrest import AtRestCipher

__all__ = ["AnyRow", "Dialect", "Transactions", "configure_sqlite"]

_T = TypeVar("_T")

Dialect = Literal["sqlite", "postgresql"]

#: A result row of any width (rows are read by column name).
AnyRow: TypeAlias = Row[*tuple[Any, ...]]

#: Execution option that makes the next BEGIN on a SQLite connection IMMEDIATE.
_WRITER = "storage_sqlite_writer"

#: Applied to every new SQLite connection (see the module docstring and engine.py).
SQLITE_PRAGMAS = (
    # Readers and the writer do not block each other; commits append to the -wal file.
    "PRAGMA journal_mode=WAL",
    # FULL (not NORMAL) in WAL mode: a commit is durable once acknowledged, which is
    # what msg.ack promises ("acks go out only after the commit that holds the message").
    "PRAGMA synchronous=FULL",
    # SQLite does not enforce foreign keys unless asked to, per connection.
    "PRAGMA foreign_keys=ON",
    # Another process holding the write lock: wait up to 5 s rather than fail at once.
    "PRAGMA busy_timeout=5000",
)


def configure_sqlite(engine: AsyncEngine) -> None:
    """Install the pragmas and our BEGIN handling on a SQLite engine (once, at creation)."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 driver (we emit BEGIN below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        writer = conn.get_execution_options().get(_WRITER, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


class Transactions:
    """The engine plus the per-backend rules for opening transactions.

    Shared by all repositories of one :class:`storage.engine.Database`. ``cipher`` is
    the at-rest cipher for the columns that hold personal data.
    """

    __slots__ = ("_write_lock", "cipher", "dialect", "engine")

    def __init__(self, engine: AsyncEngine, dialect: Dialect, cipher: AtRestCipher) -> None:
        self.engine = engine
        self.dialect: Dialect = dialect
        self.cipher = cipher
        # Only SQLite needs in-process write serialisation (one writer per file).
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if dialect == "sqlite" else None

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside a read transaction (a snapshot on SQLite), ended on exit."""
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside a write transaction: committed if the block returns,
        rolled back if it raises (the exception propagates)."""
        if self._write_lock is None:
            async with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        async with self._write_lock, self.engine.connect() as conn:
            await conn.execution_options(**{_WRITER: True})
            async with conn.begin():
                yield conn

    async def in_sqlite_thread(
        self, conn: AsyncConnection, fn: Callable[[sqlite3.Connection], _T]
    ) -> _T:
        """SQLite only: ``fn(dbapi_connection)`` in aiosqlite's thread, in ONE hop.

        For a hot path that would otherwise pay one thread round trip (and SQLAlchemy's
        per-statement and per-row work on the event loop) for each of several statements.
        ``fn`` runs inside ``conn``'s current transaction, which stays SQLAlchemy's to
        commit or roll back: ``fn`` must not end it. ``Connection._execute`` (run a
        callable in the connection's thread) is aiosqlite's own mechanism behind every
        one of its calls; aiosqlite is pinned.
        """
        assert self.dialect == "sqlite"
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection  # aiosqlite.Connection
        result: _T = await driver._execute(fn, driver._conn)
        return result

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"
