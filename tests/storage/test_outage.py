"""storage.is_outage: the database being unavailable, as opposed to a bug."""

from __future__ import annotations

import sqlite3

from sqlalchemy import exc as sa_exc

from storage import is_outage


def _operational() -> sa_exc.OperationalError:
    return sa_exc.OperationalError(
        "INSERT", {}, sqlite3.OperationalError("database or disk is full")
    )


def test_outages() -> None:
    assert is_outage(_operational())
    assert is_outage(sa_exc.InterfaceError("SELECT", {}, Exception("connection is closed")))
    assert is_outage(sa_exc.TimeoutError("QueuePool limit reached"))
    assert is_outage(ConnectionResetError())
    invalidated = sa_exc.DBAPIError("SELECT", {}, Exception("gone"), connection_invalidated=True)
    assert is_outage(invalidated)


def test_an_outage_behind_another_exception_counts() -> None:
    try:
        try:
            raise _operational()
        except sa_exc.OperationalError as inner:
            raise RuntimeError("while storing") from inner
    except RuntimeError as outer:
        assert is_outage(outer)


def test_bugs_are_not_outages() -> None:
    assert not is_outage(ValueError("bad"))
    assert not is_outage(sa_exc.IntegrityError("INSERT", {}, Exception("unique")))
    assert not is_outage(sa_exc.DBAPIError("SELECT", {}, Exception("syntax")))
