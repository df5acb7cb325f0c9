"""Each account's encrypted preferences blob (contact pins, settings), with a version.

The blob is sealed by the client under a key derived from its passphrase
(protocol/crypto.py ``seal_prefs``); the hub only stores it. Writes are
compare-and-swap on ``version``, so two devices that both read version 4 cannot both
write version 5: the second gets :class:`~protocol.errors.Conflict` and must read,
merge and retry. Version 0 means "never written".
"""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from protocol.errors import Conflict

from .models import Prefs, table
from .transactions import Transactions

__all__ = ["PrefsRepository"]

_PREFS = table(Prefs)


class PrefsRepository:
    """One blob per account. Every method is one transaction."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    async def get(self, account_id: str) -> tuple[bytes | None, int]:
        """``(blob, version)``; ``(None, 0)`` if the account never wrote one."""
        async with self._tx.read() as conn:
            row = (
                await conn.execute(
                    select(_PREFS.c.blob, _PREFS.c.version).where(_PREFS.c.account_id == account_id)
                )
            ).one_or_none()
        return (None, 0) if row is None else (bytes(row.blob), int(row.version))

    async def put(self, account_id: str, blob: bytes, expected_version: int, now_ms: int) -> int:
        """Store ``blob`` if the stored version is ``expected_version``; return the new
        version (``expected_version + 1``). Conflict (nothing stored) otherwise."""
        new_version = expected_version + 1
        try:
            async with self._tx.write() as conn:
                if expected_version == 0:
                    await conn.execute(
                        insert(_PREFS).values(
                            account_id=account_id,
                            blob=blob,
                            version=new_version,
                            updated_at=now_ms,
                        )
                    )
                else:
                    res = await conn.execute(
                        update(_PREFS)
                        .where(
                            _PREFS.c.account_id == account_id,
                            _PREFS.c.version == expected_version,
                        )
                        .values(blob=blob, version=new_version, updated_at=now_ms)
                    )
                    if res.rowcount != 1:
                        raise Conflict("preferences changed since they were read")
        except IntegrityError as exc:  # version 0 expected, but a row exists
            raise Conflict("preferences changed since they were read") from exc
        return new_version
