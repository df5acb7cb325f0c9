"""Which exceptions mean "the database cannot do this now", as opposed to a bug.

The hub answers those with the typed, retryable ``unavailable`` and keeps the session
(issue 13, item 10): a PostgreSQL backend terminated or restarted under a request, a
connection the pool handed out that has died since, a pool with no connection to give,
SQLite finding its filesystem full or its file locked. The transaction they interrupted
was rolled back, so nothing was stored or acknowledged; the client retries the same
request (a ``msg.send`` with the same client_msg_id is idempotent). Anything else is a
fault of ours and still closes with 1011.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

__all__ = ["is_outage"]

_OUTAGES = (
    sa_exc.OperationalError,  # server gone, connection reset, SQLITE_FULL, SQLITE_BUSY
    sa_exc.InterfaceError,  # the connection was already closed
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # the pool had no connection within its timeout
    ConnectionError,
    TimeoutError,
)


def is_outage(error: BaseException) -> bool:
    """True when ``error`` (or what it was raised from) is the database being unavailable."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 8:
        if isinstance(current, _OUTAGES):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False
