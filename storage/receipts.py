"""Delivery and read receipts: per (case, account, kind), the highest seq reached,
with the participant's signature over (case, kind, seq, chain hash at that seq).

Receipts only ever move forward. A client may send them out of order (two devices,
a retry after reconnect), so :meth:`ReceiptRepository.advance` stores the maximum of
the stored and the new value, with that value's chain hash and signature, in one
atomic upsert: there is no read-then-write window in which two concurrent receipts
could lower the value or pair a seq with another receipt's signature.
"""

from __future__ import annotations

from sqlalchemy import case, select
from sqlalchemy.dialects import postgresql, sqlite

from protocol.frames import SignedReceipt

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
        self,
        case_id: str,
        account_id: str,
        kind: ReceiptKind,
        up_to_seq: int,
        chain_hash: bytes,
        sig: bytes,
    ) -> int:
        """Raise the stored receipt to ``up_to_seq`` (with its ``chain_hash`` and
        ``sig``) unless it is already higher.

        Returns the value stored afterwards (``max(old, up_to_seq)``), which is what the
        other participants should be told. Checking that the account is a participant
        and that ``up_to_seq`` does not exceed the case's last seq is the caller's job.
        """
        values = {
            "case_id": case_id,
            "account_id": account_id,
            "kind": kind,
            "up_to_seq": up_to_seq,
            "chain_hash": chain_hash,
            "sig": sig,
        }
        # Both dialects spell the upsert "INSERT ... ON CONFLICT DO UPDATE"; only the
        # construct's module differs. GREATEST/MAX differ too, so use a portable CASE.
        ins = (
            postgresql.insert(_RECEIPTS) if self._tx.is_postgresql else sqlite.insert(_RECEIPTS)
        ).values(values)
        stored = _RECEIPTS.c.up_to_seq
        newer = ins.excluded.up_to_seq > stored

        def pick(column: str) -> object:
            return case((newer, ins.excluded[column]), else_=_RECEIPTS.c[column])

        stmt = ins.on_conflict_do_update(
            index_elements=[_RECEIPTS.c.case_id, _RECEIPTS.c.account_id, _RECEIPTS.c.kind],
            set_={name: pick(name) for name in ("up_to_seq", "chain_hash", "sig")},
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

    async def signed_for_case(self, case_id: str) -> list[SignedReceipt]:
        """The signed receipts of the case (the latest per account and kind), sorted by
        account then kind. Receipts a version-1 hub stored unsigned are left out."""
        async with self._tx.read() as conn:
            rows = (
                await conn.execute(
                    select(
                        _RECEIPTS.c.account_id,
                        _RECEIPTS.c.kind,
                        _RECEIPTS.c.up_to_seq,
                        _RECEIPTS.c.chain_hash,
                        _RECEIPTS.c.sig,
                    )
                    .where(_RECEIPTS.c.case_id == case_id, _RECEIPTS.c.sig.is_not(None))
                    .order_by(_RECEIPTS.c.account_id, _RECEIPTS.c.kind)
                )
            ).all()
        return [
            SignedReceipt(
                account_id=r.account_id,
                kind=as_receipt_kind(r.kind),
                up_to_seq=int(r.up_to_seq),
                chain_hash=bytes(r.chain_hash),
                sig=bytes(r.sig),
            )
            for r in rows
        ]
