"""The installed escrow policy (newest row wins) and the escrow capsules of case keys.

The hub stores both as opaque signed or sealed JSON: it can check a capsule's shape
against the policy (protocol.escrow.check_capsule_shape) but never open one.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from protocol.errors import Conflict

from .audit import append_capsule_in, append_in
from .models import EscrowCapsule, EscrowPolicy, table
from .transactions import Transactions

__all__ = ["CapsuleRecord", "EscrowRepository", "PolicyRecord"]

_POLICIES = table(EscrowPolicy)
_CAPSULES = table(EscrowCapsule)


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyRecord:
    fingerprint: str
    signed_policy: bytes  # JSON of protocol.frames.SignedEscrowPolicy
    terms_version: int
    installed_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class CapsuleRecord:
    case_id: str
    epoch: int
    depositor_id: str
    policy_fingerprint: str
    capsule: bytes  # JSON of protocol.frames.Capsule
    created_at: int


class EscrowRepository:
    __slots__ = ("_tx",)

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    async def install(
        self, fingerprint: str, signed_policy: bytes, terms_version: int, now_ms: int
    ) -> PolicyRecord:
        """Make this policy (with this terms version) the installed one. Conflict if the
        same policy was installed before (sign a new version instead)."""
        try:
            async with self._tx.write() as conn:
                await conn.execute(
                    insert(_POLICIES).values(
                        fingerprint=fingerprint,
                        signed_policy=signed_policy,
                        terms_version=terms_version,
                        installed_at=now_ms,
                    )
                )
                await append_in(
                    conn,
                    "policy.install",
                    fingerprint,
                    {"terms_version": terms_version},
                    now_ms,
                )
        except IntegrityError:
            raise Conflict("this policy was installed before") from None
        return PolicyRecord(fingerprint, signed_policy, terms_version, now_ms)

    async def current(self) -> PolicyRecord | None:
        async with self._tx.read() as conn:
            row = (
                await conn.execute(select(_POLICIES).order_by(_POLICIES.c.id.desc()).limit(1))
            ).first()
        if row is None:
            return None
        return PolicyRecord(
            row.fingerprint, bytes(row.signed_policy), int(row.terms_version), int(row.installed_at)
        )

    async def by_fingerprint(self, fingerprint: str) -> PolicyRecord | None:
        async with self._tx.read() as conn:
            row = (
                await conn.execute(select(_POLICIES).where(_POLICIES.c.fingerprint == fingerprint))
            ).first()
        if row is None:
            return None
        return PolicyRecord(
            row.fingerprint, bytes(row.signed_policy), int(row.terms_version), int(row.installed_at)
        )

    async def put_capsule(self, record: CapsuleRecord) -> None:
        """Store one participant's capsule of one epoch key; Conflict if it has one."""
        try:
            async with self._tx.write() as conn:
                await conn.execute(insert(_CAPSULES).values(dataclasses.asdict(record)))
                await append_capsule_in(
                    conn,
                    record.case_id,
                    record.epoch,
                    record.depositor_id,
                    record.policy_fingerprint,
                    record.created_at,
                )
        except IntegrityError:
            raise Conflict("a capsule for this epoch was already deposited") from None

    async def capsules_for(self, case_id: str) -> list[CapsuleRecord]:
        async with self._tx.read() as conn:
            rows = (
                await conn.execute(
                    select(_CAPSULES)
                    .where(_CAPSULES.c.case_id == case_id)
                    .order_by(_CAPSULES.c.epoch, _CAPSULES.c.created_at, _CAPSULES.c.depositor_id)
                )
            ).all()
        return [
            CapsuleRecord(
                r.case_id,
                int(r.epoch),
                r.depositor_id,
                r.policy_fingerprint,
                bytes(r.capsule),
                int(r.created_at),
            )
            for r in rows
        ]
