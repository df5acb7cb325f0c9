"""Persistence for the chat hub: SQLAlchemy 2 async models, repositories, migrations.

The database holds ciphertext, public keys and routing metadata; the few readable
personal fields (counselor display names, case topics) are encrypted at rest with the
server's data key. Entry point: :func:`open_database`; repositories return the plain
records in :mod:`storage.records` (a stored message is the protocol's
:class:`~protocol.frames.MessageRecord`).
"""

from .engine import Database, open_database, sqlite_url
from .outage import is_outage
from .records import (
    AccountRecord,
    AlreadyStored,
    AppendResult,
    CaseRecord,
    EpochKeyRecord,
    InviteRecord,
    MessageRecord,
    NewMessage,
)

__all__ = [
    "AccountRecord",
    "AlreadyStored",
    "AppendResult",
    "CaseRecord",
    "Database",
    "EpochKeyRecord",
    "InviteRecord",
    "MessageRecord",
    "NewMessage",
    "is_outage",
    "open_database",
    "sqlite_url",
]
