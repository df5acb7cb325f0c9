"""Opening the database: engine set-up per backend, migrations, the Database facade.

Two backends, same models and migrations:

* **SQLite** (default; ``sqlite+aiosqlite:///path``): one file, WAL mode, so
  ``chat-server serve`` works on a fresh machine with nothing else running. Pragmas
  and transaction handling are in :mod:`storage.transactions`.
* **PostgreSQL** (``postgresql+asyncpg://...``): for several hub processes sharing one
  database; an ordinary connection pool.

Plain ``sqlite:///`` and ``postgresql://`` URLs are accepted and given the async
driver, so configuration can use the URL people already know.

Usage::

    db = await open_database(sqlite_url("var/chat.db"), data_key)
    try:
        ...  # db.accounts, db.cases, db.messages, db.receipts
    finally:
        await db.close()
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .accounts import AccountRepository
from .atrest import AtRestCipher
from .audit import AuditRepository
from .cases import CaseRepository
from .consents import ConsentRepository
from .disputes import DisputeRepository
from .escrow import EscrowRepository
from .messages import MessageRepository
from .prefs import PrefsRepository
from .receipts import ReceiptRepository
from .transactions import Dialect, Transactions, configure_sqlite

__all__ = [
    "MIGRATIONS_DIR",
    "Database",
    "create_engine",
    "migrations_config",
    "normalise_url",
    "open_database",
    "run_migrations",
    "sqlite_url",
]

#: The Alembic script directory (env.py and versions/), shipped as package data.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: Arbitrary constant key for pg_advisory_xact_lock: hubs starting together migrate
#: one at a time instead of racing to create the same tables.
_MIGRATION_LOCK_KEY = 0x63686174_6D696772  # "chatmigr"

_SQLITE_DRIVERS = {"sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"}
_PG_DRIVERS = {"postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg2"}


def sqlite_url(path: str | Path) -> str:
    """The async SQLAlchemy URL of a SQLite file (made absolute, so the working
    directory of a later process does not matter)."""
    return f"sqlite+aiosqlite:///{Path(path).expanduser().resolve()}"


def normalise_url(url: str | URL) -> tuple[URL, Dialect]:
    """``url`` with the async driver of its backend, and that backend's name.

    Raises ValueError for other backends and for in-memory SQLite (each pooled
    connection would see its own empty database; use a temporary file instead).
    """
    parsed = make_url(url)
    if parsed.drivername in _SQLITE_DRIVERS:
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("SQLite needs a file path (in-memory databases are not shared)")
        return parsed.set(drivername="sqlite+aiosqlite"), "sqlite"
    if parsed.drivername in _PG_DRIVERS:
        return parsed.set(drivername="postgresql+asyncpg"), "postgresql"
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def create_engine(url: str | URL) -> tuple[AsyncEngine, Dialect]:
    """An async engine for ``url`` with this package's per-backend settings.

    For SQLite the file's parent directory is created if missing. Used by
    :func:`open_database` and by the Alembic CLI environment.
    """
    parsed, dialect = normalise_url(url)
    if dialect == "sqlite":
        assert parsed.database is not None
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed)
        configure_sqlite(engine)
    else:
        # pre_ping: a hub outlives database restarts and failovers; a stale pooled
        # connection is replaced instead of failing the first request after one.
        engine = create_async_engine(parsed, pool_size=10, max_overflow=10, pool_pre_ping=True)
    return engine, dialect


def migrations_config(
    connection: Connection | None = None, data_key: bytes | None = None
) -> Config:
    """An Alembic Config built in code (no alembic.ini needed).

    With ``connection``, env.py migrates on that connection inside the caller's
    transaction; without, env.py expects ``sqlalchemy.url`` to be set by the caller.
    ``data_key`` is for migrations that convert values sealed at rest (0003).
    """
    cfg = Config()
    # ConfigParser interpolates "%": escape it in case the install path contains one.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    if data_key is not None:
        cfg.attributes["data_key"] = data_key
    return cfg


def run_migrations(
    connection: Connection, revision: str = "head", data_key: bytes | None = None
) -> None:
    """Upgrade the database on ``connection`` to ``revision`` (sync; use ``run_sync``)."""
    command.upgrade(migrations_config(connection, data_key), revision)


class Database:
    """An open database: the engine plus one repository per aggregate.

    Repositories are safe to share between tasks; each call is its own transaction.
    """

    __slots__ = (
        "_data_key",
        "_tx",
        "accounts",
        "audit",
        "cases",
        "consents",
        "dialect",
        "disputes",
        "engine",
        "escrow",
        "messages",
        "prefs",
        "receipts",
    )

    def __init__(self, engine: AsyncEngine, dialect: Dialect, data_key: bytes) -> None:
        self.engine = engine
        self.dialect: Dialect = dialect
        self._tx = Transactions(engine, dialect, AtRestCipher(data_key))
        self._data_key = data_key
        self.accounts = AccountRepository(self._tx)
        self.cases = CaseRepository(self._tx)
        self.messages = MessageRepository(self._tx)
        self.receipts = ReceiptRepository(self._tx)
        self.prefs = PrefsRepository(self._tx)
        # Escrow and disputes (docs/DISPUTES.md).
        self.escrow = EscrowRepository(self._tx)
        self.consents = ConsentRepository(self._tx)
        self.disputes = DisputeRepository(self._tx)
        self.audit = AuditRepository(self._tx)

    async def migrate(self) -> None:
        """Upgrade the schema to the newest migration (idempotent).

        One write transaction: on SQLite ``BEGIN IMMEDIATE`` (DDL is transactional
        there too), on PostgreSQL serialised across processes by an advisory lock.
        """
        async with self._tx.write() as conn:
            if self.dialect == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY}
                )
            data_key = self._data_key
            await conn.run_sync(lambda c: run_migrations(c, data_key=data_key))

    async def ping(self) -> None:
        """One round trip to the database (health checks); raises if it is unreachable."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        """Close every pooled connection. The Database is unusable afterwards."""
        await self.engine.dispose()


async def open_database(url: str, data_key: bytes, *, migrate: bool = True) -> Database:
    """Open (and by default migrate) the database at ``url``.

    ``data_key`` is the server's 32-byte at-rest key (ValueError otherwise); the same
    key must be given every time, or encrypted fields will not open. With
    ``migrate=False`` the schema must already be current.
    """
    engine, dialect = create_engine(url)
    try:
        db = Database(engine, dialect, data_key)
        if migrate:
            await db.migrate()
    except BaseException:
        await engine.dispose()
        raise
    return db
