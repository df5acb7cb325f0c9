"""Dispute requests and the officers' approvals.

A request is stored as its document (protocol.escrow.DisputeDocument as JSON: ids, a
timestamp, the reason sealed to each officer, the client's signature or the legal order
reference). State: ``pending`` until the policy threshold of distinct valid approvals
is stored (``approved``), then ``exported`` after the first bundle export. The caller
verifies approvals before storing them; this module keeps states and the audit log in
step, in one transaction per action.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from protocol.errors import Conflict, NotFound

from .audit import append_in
from .models import Case, Dispute, DisputeApproval, table
from .transactions import AnyRow, Transactions

__all__ = ["DisputeRecord", "DisputeRepository", "DisputeState"]

_DISPUTES = table(Dispute)
_CASES = table(Case)
_APPROVALS = table(DisputeApproval)

DisputeState = Literal["pending", "approved", "exported"]


def _state(value: str) -> DisputeState:
    if value == "pending":
        return "pending"
    if value == "approved":
        return "approved"
    if value == "exported":
        return "exported"
    raise ValueError(f"unexpected dispute state {value!r} in the database")


@dataclasses.dataclass(frozen=True, slots=True)
class DisputeRecord:
    id: str
    case_id: str
    kind: str
    state: DisputeState
    requester_id: str | None
    document: bytes
    created_at: int
    updated_at: int
    approvals: tuple[bytes, ...] = ()


def _record(row: AnyRow, approvals: tuple[bytes, ...] = ()) -> DisputeRecord:
    return DisputeRecord(
        id=row.id,
        case_id=row.case_id,
        kind=row.kind,
        state=_state(row.state),
        requester_id=row.requester_id,
        document=bytes(row.document),
        created_at=int(row.created_at),
        updated_at=int(row.updated_at),
        approvals=approvals,
    )


class DisputeRepository:
    __slots__ = ("_tx",)

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    async def create(
        self,
        *,
        dispute_id: str,
        case_id: str,
        kind: Literal["client", "legal"],
        requester_id: str | None,
        document: bytes,
        policy_fingerprint: str,
        legal_order: str | None,
        now_ms: int,
    ) -> DisputeRecord:
        async with self._tx.write() as conn:
            await conn.execute(
                insert(_DISPUTES).values(
                    id=dispute_id,
                    case_id=case_id,
                    kind=kind,
                    state="pending",
                    requester_id=requester_id,
                    document=document,
                    created_at=now_ms,
                    updated_at=now_ms,
                )
            )
            detail: dict[str, object] = {"case": case_id, "policy": policy_fingerprint}
            if kind == "legal":
                detail["order"] = legal_order
            else:
                detail["requester"] = requester_id
            await append_in(
                conn,
                "dispute.legal" if kind == "legal" else "dispute.request",
                dispute_id,
                detail,
                now_ms,
            )
        return DisputeRecord(
            dispute_id, case_id, kind, "pending", requester_id, document, now_ms, now_ms
        )

    async def get(self, dispute_id: str) -> DisputeRecord:
        async with self._tx.read() as conn:
            row = (
                await conn.execute(select(_DISPUTES).where(_DISPUTES.c.id == dispute_id))
            ).first()
            if row is None:
                raise NotFound("no such dispute request")
            approvals = (
                await conn.execute(
                    select(_APPROVALS.c.approval)
                    .where(_APPROVALS.c.dispute_id == dispute_id)
                    .order_by(_APPROVALS.c.officer_index)
                )
            ).scalars()
            return _record(row, tuple(bytes(a) for a in approvals))

    async def find(
        self,
        *,
        requester_id: str | None = None,
        client_id: str | None = None,
        changed_after: int | None = None,
    ) -> list[DisputeRecord]:
        """Requests, oldest first: all, or those filed by ``requester_id``, or those on
        the cases of ``client_id`` (their own and legal orders), or changed after a time."""
        query = select(_DISPUTES).order_by(_DISPUTES.c.created_at, _DISPUTES.c.id)
        if requester_id is not None:
            query = query.where(_DISPUTES.c.requester_id == requester_id)
        if client_id is not None:
            cases = select(_CASES.c.id).where(_CASES.c.client_id == client_id)
            query = query.where(_DISPUTES.c.case_id.in_(cases))
        if changed_after is not None:
            query = query.where(_DISPUTES.c.updated_at > changed_after)
        async with self._tx.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    async def add_approval(
        self, dispute_id: str, officer_index: int, approval: bytes, threshold: int, now_ms: int
    ) -> DisputeRecord:
        """Store a (verified) approval; move to ``approved`` at the threshold.
        Conflict if this officer already approved the request; NotFound if no such
        request."""
        try:
            async with self._tx.write() as conn:
                # Lock the request first (PostgreSQL; SQLite writers are serialised), so
                # concurrent approvals count each other's rows: without it two officers
                # approving at once each count only their own and the threshold is missed.
                locked = (
                    await conn.execute(
                        select(_DISPUTES.c.id).where(_DISPUTES.c.id == dispute_id).with_for_update()
                    )
                ).first()
                if locked is None:
                    raise NotFound("no such dispute request")
                await conn.execute(
                    insert(_APPROVALS).values(
                        dispute_id=dispute_id,
                        officer_index=officer_index,
                        approval=approval,
                        created_at=now_ms,
                    )
                )
                count = (
                    await conn.execute(
                        select(func.count())
                        .select_from(_APPROVALS)
                        .where(_APPROVALS.c.dispute_id == dispute_id)
                    )
                ).scalar_one()
                values: dict[str, object] = {"updated_at": now_ms}
                if int(count) >= threshold:
                    values["state"] = "approved"
                await conn.execute(
                    update(_DISPUTES)
                    .where(_DISPUTES.c.id == dispute_id, _DISPUTES.c.state == "pending")
                    .values(**values)
                )
                await append_in(
                    conn,
                    "dispute.approve",
                    dispute_id,
                    {"officer": officer_index, "approvals": int(count), "threshold": threshold},
                    now_ms,
                )
        except IntegrityError:
            raise Conflict("this officer already approved the request") from None
        return await self.get(dispute_id)

    async def mark_exported(
        self, dispute_id: str, bundle_digest: str, messages: int, now_ms: int
    ) -> None:
        async with self._tx.write() as conn:
            await conn.execute(
                update(_DISPUTES)
                .where(_DISPUTES.c.id == dispute_id)
                .values(state="exported", updated_at=now_ms)
            )
            await append_in(
                conn,
                "dispute.export",
                dispute_id,
                {"bundle_blake2b": bundle_digest, "messages": messages},
                now_ms,
            )
