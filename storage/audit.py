"""The append-only, hash-chained audit log of escrow and dispute actions.

Every policy install, consent, capsule deposit, dispute request, legal order, approval
and export is one row; each row's hash covers the previous row's hash, so deleting,
altering, inserting or reordering a row breaks every later link, and
:meth:`AuditRepository.verify` finds it. Deleting the newest rows leaves a shorter chain
that is still whole; that is caught against an anchor kept outside the database
(:meth:`AuditRepository.check_anchor`: the head an officer's approval signed, or a
bundle carries). Rows hold ids, fingerprints and officer indices only: never message
content, reasons or names. Other repositories append in their own transaction
(:func:`append_in`), so an action and its audit row commit together or not at all.

hash = BLAKE2b-256(lp("chat.audit.v1", prev_hash, u64(seq), u64(ts), action, subject,
detail), person="chat-audit-hash1"); the first row's prev_hash is 32 zero bytes.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import nacl.hash
from nacl.encoding import RawEncoder
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from protocol.crypto import lp, u64

from .models import AuditEntry, table
from .transactions import Transactions

__all__ = [
    "AUDIT_GENESIS",
    "AuditRecord",
    "AuditRepository",
    "append_capsule_in",
    "append_in",
    "audit_hash",
]

_AUDIT = table(AuditEntry)
AUDIT_GENESIS = bytes(32)
#: PostgreSQL advisory lock key that serialises appends (any constant unused elsewhere).
_AUDIT_LOCK_KEY = 0x63686174_61756469  # "chataudi"


def audit_hash(prev: bytes, seq: int, ts: int, action: str, subject: str, detail: str) -> bytes:
    data = lp(
        b"chat.audit.v1",
        prev,
        u64(seq),
        u64(ts),
        action.encode(),
        subject.encode(),
        detail.encode(),
    )
    return nacl.hash.blake2b(data, digest_size=32, person=b"chat-audit-hash1", encoder=RawEncoder)


@dataclasses.dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    ts: int
    action: str
    subject: str
    detail: str
    prev_hash: bytes
    hash: bytes


async def append_in(
    conn: AsyncConnection, action: str, subject: str, detail: dict[str, Any], now_ms: int
) -> AuditRecord:
    """Append one row inside the caller's write transaction.

    SQLite writers are serialised already. PostgreSQL writers run in parallel, and two
    that read the same tail would collide on the seq primary key (one action failing
    for no reason of its own), so they first take a transaction-scoped advisory lock:
    appends queue, and each reads the tail its predecessor committed. The seq primary
    key still refuses a fork should anything bypass this function.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(_AUDIT_LOCK_KEY)))
    row = (
        await conn.execute(
            select(_AUDIT.c.seq, _AUDIT.c.hash).order_by(_AUDIT.c.seq.desc()).limit(1)
        )
    ).first()
    seq, prev = (int(row.seq) + 1, bytes(row.hash)) if row is not None else (1, AUDIT_GENESIS)
    text = json.dumps(detail, sort_keys=True, separators=(",", ":"))
    digest = audit_hash(prev, seq, now_ms, action, subject, text)
    await conn.execute(
        insert(_AUDIT).values(
            seq=seq,
            ts=now_ms,
            action=action,
            subject=subject,
            detail=text,
            prev_hash=prev,
            hash=digest,
        )
    )
    return AuditRecord(seq, now_ms, action, subject, text, prev, digest)


async def append_capsule_in(
    conn: AsyncConnection,
    case_id: str,
    epoch: int,
    depositor_id: str,
    policy_fingerprint: str,
    now_ms: int,
) -> AuditRecord:
    """The audit row of one escrow capsule deposit (ids and the policy only)."""
    detail = {"epoch": epoch, "depositor": depositor_id, "policy": policy_fingerprint}
    return await append_in(conn, "escrow.capsule", case_id, detail, now_ms)


class AuditRepository:
    """Reading and checking the audit log; appending a stand-alone entry."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    async def append(
        self, action: str, subject: str, detail: dict[str, Any], now_ms: int
    ) -> AuditRecord:
        async with self._tx.write() as conn:
            return await append_in(conn, action, subject, detail, now_ms)

    async def entries(self) -> list[AuditRecord]:
        async with self._tx.read() as conn:
            rows = (await conn.execute(select(_AUDIT).order_by(_AUDIT.c.seq))).all()
        return [
            AuditRecord(
                int(r.seq),
                int(r.ts),
                r.action,
                r.subject,
                r.detail,
                bytes(r.prev_hash),
                bytes(r.hash),
            )
            for r in rows
        ]

    async def head(self) -> tuple[int, bytes]:
        """(seq, hash) of the newest row; (0, AUDIT_GENESIS) for an empty log."""
        async with self._tx.read() as conn:
            row = (
                await conn.execute(
                    select(_AUDIT.c.seq, _AUDIT.c.hash).order_by(_AUDIT.c.seq.desc()).limit(1)
                )
            ).first()
        return (int(row.seq), bytes(row.hash)) if row is not None else (0, AUDIT_GENESIS)

    async def check_anchor(self, seq: int, digest: bytes) -> str | None:
        """None if the log holds row ``seq`` with hash ``digest`` (seq 0: the empty log's
        genesis), else what is wrong: a head seen outside the database that the log no
        longer has means rows were deleted (truncated) or rewritten."""
        if seq == 0:
            return None if digest == AUDIT_GENESIS else "anchor at seq 0 is not the genesis"
        async with self._tx.read() as conn:
            row = (await conn.execute(select(_AUDIT.c.hash).where(_AUDIT.c.seq == seq))).first()
        if row is None:
            last, _ = await self.head()
            return f"the log ends at seq {last}, but an anchor saw seq {seq}: rows were removed"
        if bytes(row.hash) != digest:
            return f"row {seq} is not the row the anchor saw: the log was rewritten"
        return None

    async def count(self) -> int:
        async with self._tx.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(_AUDIT))).scalar_one())

    async def verify(self) -> list[str]:
        """Every break in the chain, as text (empty: the log is intact)."""
        problems: list[str] = []
        prev = AUDIT_GENESIS
        expected = 1
        for entry in await self.entries():
            if entry.seq != expected:
                problems.append(f"row {entry.seq}: expected seq {expected} (rows missing)")
            if entry.prev_hash != prev:
                problems.append(f"row {entry.seq}: does not link to the previous row")
            digest = audit_hash(
                entry.prev_hash, entry.seq, entry.ts, entry.action, entry.subject, entry.detail
            )
            if digest != entry.hash:
                problems.append(f"row {entry.seq}: contents do not match its hash")
            prev = entry.hash
            expected = entry.seq + 1
        return problems
