"""Persistence for the chat hub: SQLAlchemy 2 async models, repositories, migrations.

The database holds ciphertext, public keys and routing metadata; the few readable
personal fields (counselor display names, case topics) are encrypted at rest with the
server's data key. Entry point: :func:`open_database`; repositories return the plain
records in :mod:`storage.records`.
"""

from .engine import Database, open_database, sqlite_url
from .records import (
    AccountRecord,
    Appended,
    AppendResult,
    CaseRecord,
    EpochKeyRecord,
    InviteRecord,
    NewMessage,
    StoredMessage,
)

__all__ = [
    "AccountRecord",
    "AppendResult",
    "Appended",
    "CaseRecord",
    "Database",
    "EpochKeyRecord",
    "InviteRecord",
    "NewMessage",
    "StoredMessage",
    "open_database",
    "sqlite_url",
]
