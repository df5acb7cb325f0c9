"""Delivery and read receipts: per (case, account, kind), the highest seq reached.

Receipts only ever move forward. A client may send them out of order (two devices,
a retry after reconnect), so :meth:`ReceiptRepository.advance` stores the maximum of
the stored and the new value, in one atomic upsert: there is no read-then-write
window in which two concurrent receipts could lower the value.
"""

from __future__ import annotations

from sqlalchemy import case, select
from sqlalchemy.dialects import postgresql, sqlite

from .models import Receipt, table
from .records import ReceiptKind, as_receipt_kind
from .transactions import Transactions

__all__ = ["ReceiptRepository"]

_RECEIPTS = table(Receipt)


class ReceiptRepository:
    """Monotonic receipts. Every method is one transaction."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    async def advance(
        self, case_id: str, account_id: str, kind: ReceiptKind, up_to_seq: int
    ) -> int:
        """Raise the stored receipt to ``up_to_seq`` unless it is already higher.

        Returns the value stored afterwards (``max(old, up_to_seq)``), which is what the
        other participants should be told. Checking that the account is a participant
        and that ``up_to_seq`` does not exceed the case's last seq is the caller's job.
        """
        values = {
            "case_id": case_id,
            "account_id": account_id,
            "kind": kind,
            "up_to_seq": up_to_seq,
        }
        # Both dialects spell the upsert "INSERT ... ON CONFLICT DO UPDATE"; only the
        # construct's module differs. GREATEST/MAX differ too, so use a portable CASE.
        ins = (
            postgresql.insert(_RECEIPTS) if self._tx.is_postgresql else sqlite.insert(_RECEIPTS)
        ).values(values)
        stored = _RECEIPTS.c.up_to_seq
        higher = case((ins.excluded.up_to_seq > stored, ins.excluded.up_to_seq), else_=stored)
        stmt = ins.on_conflict_do_update(
            index_elements=[_RECEIPTS.c.case_id, _RECEIPTS.c.account_id, _RECEIPTS.c.kind],
            set_={"up_to_seq": higher},
        ).returning(stored)
        async with self._tx.write() as conn:
            value = (await conn.execute(stmt)).scalar_one()
        return int(value)

    async def for_case(self, case_id: str) -> list[tuple[str, ReceiptKind, int]]:
        """Every receipt of the case as ``(account_id, kind, up_to_seq)``, sorted by
        account then kind."""
        async with self._tx.read() as conn:
            rows = (
                await conn.execute(
                    select(_RECEIPTS.c.account_id, _RECEIPTS.c.kind, _RECEIPTS.c.up_to_seq)
                    .where(_RECEIPTS.c.case_id == case_id)
                    .order_by(_RECEIPTS.c.account_id, _RECEIPTS.c.kind)
                )
            ).all()
        return [(a, as_receipt_kind(k), int(s)) for a, k, s in rows]
