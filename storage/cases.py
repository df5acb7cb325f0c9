"""Cases (one client, at most one counselor) and their per-epoch key deposits.

State machine: ``waiting`` -(assign)-> ``assigned`` -(close)-> ``closed``; a waiting
case may also be closed. Transitions are conditional UPDATEs (``WHERE state = ...``),
so when several hub processes act on the same case at once exactly one wins and the
others see ``None``; no read-modify-write happens outside the database.

A case's topic is sensitive (it says what the person seeks help for), so it is
stored encrypted at rest and bound to its case row; the language stays in clear
because matching selects on it.

Key deposits: epoch ``n + 1`` may only be deposited while the case is open (waiting or
assigned) and at epoch ``n``. The deposit advances ``cases.epoch`` with ``UPDATE ...
WHERE epoch = n AND state <> 'closed'`` and inserts the key and its seals in the same
transaction, so two participants racing to create the same epoch get exactly one winner
and one :class:`~protocol.errors.Conflict`, and a deposit racing a close never lands
after it. A key made while the case waited is sealed to its client only; ``add_seal``
adds the seal its client later makes for the assigned counselor (once per account).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from protocol.chain import GENESIS
from protocol.errors import Conflict, Forbidden, NotFound

from .atrest import context
from .audit import append_capsule_in
from .escrow import CapsuleRecord
from .messages import message_from_row
from .models import Case, CaseKey, CaseKeySeal, EscrowCapsule, Message, table
from .records import CaseActivity, CaseRecord, EpochKeyRecord, as_case_state
from .transactions import AnyRow, Transactions

__all__ = ["CaseRepository"]

_CASES = table(Case)
_KEYS = table(CaseKey)
_SEALS = table(CaseKeySeal)
_CAPSULES = table(EscrowCapsule)
_MESSAGES = table(Message)

#: Accounts per statement of :meth:`CaseRepository.activity_since` (two IN lists each).
_ACTIVITY_CHUNK = 500


def _topic_ctx(case_id: str) -> bytes:
    return context("cases.topic", case_id)


class CaseRepository:
    """Cases and case keys. Every method is one transaction."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    # -- lifecycle ------------------------------------------------------------

    async def create(
        self, client_id: str, topic: str, language: str, case_id: str, now_ms: int
    ) -> CaseRecord:
        """Open a new case in state "waiting" (epoch 0, no messages).

        ``case_id`` is chosen by the caller (random). Raises Conflict if the id is
        taken or ``client_id`` is not an account (the foreign key refuses it).
        """
        record = CaseRecord(
            id=case_id,
            client_id=client_id,
            counselor_id=None,
            state="waiting",
            topic=topic,
            language=language,
            epoch=0,
            last_seq=0,
            chain_head=GENESIS,
            created_at=now_ms,
        )
        try:
            async with self._tx.write() as conn:
                await conn.execute(
                    insert(_CASES).values(
                        id=case_id,
                        client_id=client_id,
                        counselor_id=None,
                        state="waiting",
                        topic_enc=self._tx.cipher.seal(topic, _topic_ctx(case_id)),
                        language=language,
                        epoch=0,
                        last_seq=0,
                        chain_head=GENESIS,
                        created_at=now_ms,
                        assigned_at=None,
                        closed_at=None,
                    )
                )
        except IntegrityError as exc:
            raise Conflict("case id is taken or the client is unknown") from exc
        return record

    async def get(self, case_id: str) -> CaseRecord | None:
        """The case, or None."""
        async with self._tx.read() as conn:
            return await self._get(conn, case_id)

    async def for_account(self, account_id: str) -> list[CaseRecord]:
        """Cases where ``account_id`` is the client or the counselor, newest first."""
        async with self._tx.read() as conn:
            rows = (
                await conn.execute(
                    select(_CASES)
                    .where(
                        or_(_CASES.c.client_id == account_id, _CASES.c.counselor_id == account_id)
                    )
                    .order_by(_CASES.c.created_at.desc(), _CASES.c.id.desc())
                )
            ).all()
        return [self._case(r) for r in rows]

    async def waiting(self) -> list[CaseRecord]:
        """Cases waiting for a counselor, oldest first (the order they get assigned in)."""
        async with self._tx.read() as conn:
            rows = (
                await conn.execute(
                    select(_CASES)
                    .where(_CASES.c.state == "waiting")
                    .order_by(_CASES.c.created_at, _CASES.c.id)
                )
            ).all()
        return [self._case(r) for r in rows]

    async def assign(self, case_id: str, counselor_id: str, now_ms: int) -> CaseRecord | None:
        """Assign a waiting case to ``counselor_id``; returns the assigned case.

        Returns None if the case does not exist or is no longer waiting: another hub
        (or task) assigned or closed it first. Exactly one of concurrent callers wins.
        """
        async with self._tx.write() as conn:
            res = await conn.execute(
                update(_CASES)
                .where(_CASES.c.id == case_id, _CASES.c.state == "waiting")
                .values(state="assigned", counselor_id=counselor_id, assigned_at=now_ms)
            )
            if res.rowcount != 1:
                return None
            return await self._get(conn, case_id)

    async def close(self, case_id: str, now_ms: int) -> CaseRecord | None:
        """Close a waiting or assigned case; returns the closed case.

        Returns None if the case does not exist or was already closed, so of several
        concurrent closers exactly one gets the record (and announces ``case.closed``).
        Use :meth:`get` to tell "unknown" from "already closed".
        """
        async with self._tx.write() as conn:
            res = await conn.execute(
                update(_CASES)
                .where(_CASES.c.id == case_id, _CASES.c.state != "closed")
                .values(state="closed", closed_at=now_ms)
            )
            if res.rowcount != 1:
                return None
            return await self._get(conn, case_id)

    async def open_counts(self, counselor_ids: Iterable[str]) -> dict[str, int]:
        """For each counselor, how many cases they hold that are assigned and not closed.

        Every id asked for is in the result (0 if they hold none).
        """
        ids = sorted(set(counselor_ids))
        counts = dict.fromkeys(ids, 0)
        if not ids:
            return counts
        async with self._tx.read() as conn:
            rows = (
                await conn.execute(
                    select(_CASES.c.counselor_id, func.count())
                    .where(_CASES.c.counselor_id.in_(ids), _CASES.c.state == "assigned")
                    .group_by(_CASES.c.counselor_id)
                )
            ).all()
        for counselor_id, n in rows:
            counts[counselor_id] = int(n)
        return counts

    async def activity_since(self, account_ids: Iterable[str], since_ms: int) -> list[CaseActivity]:
        """Cases of ``account_ids`` that changed at or after ``since_ms``: assigned,
        closed, given a new epoch key, or given a message (only the newest message of
        each is returned: it is enough for a client to notice a gap and sync).

        For catching live sessions up after a missed wake-up (chat_server/catchup.py):
        one statement per 500 accounts, each an index lookup per case (the newest
        message is found by primary key at ``cases.last_seq``).
        """
        ids = sorted(set(account_ids))
        found: dict[str, CaseActivity] = {}
        m, k = _MESSAGES.alias("m"), _KEYS.alias("k")
        message_columns = [col.label(f"m_{col.name}") for col in m.c]
        for start in range(0, len(ids), _ACTIVITY_CHUNK):
            chunk = ids[start : start + _ACTIVITY_CHUNK]
            query = (
                select(_CASES, *message_columns, k.c.created_at.label("k_created_at"))
                .outerjoin(
                    m,
                    and_(
                        m.c.case_id == _CASES.c.id,
                        m.c.seq == _CASES.c.last_seq,
                        m.c.server_ts >= since_ms,
                    ),
                )
                .outerjoin(
                    k,
                    and_(
                        k.c.case_id == _CASES.c.id,
                        k.c.epoch == _CASES.c.epoch,
                        k.c.created_at >= since_ms,
                    ),
                )
                .where(
                    or_(_CASES.c.client_id.in_(chunk), _CASES.c.counselor_id.in_(chunk)),
                    or_(
                        _CASES.c.assigned_at >= since_ms,
                        _CASES.c.closed_at >= since_ms,
                        m.c.seq.is_not(None),
                        k.c.created_at.is_not(None),
                    ),
                )
            )
            async with self._tx.read() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                last = message_from_row(row, "m_") if row.m_seq is not None else None
                found[row.id] = CaseActivity(
                    self._case(row), last, new_epoch=row.k_created_at is not None
                )
        return sorted(found.values(), key=lambda a: (a.case.created_at, a.case.id))

    # -- epoch keys -----------------------------------------------------------

    async def add_epoch_key(
        self, rec: EpochKeyRecord, capsule: CapsuleRecord | None = None
    ) -> None:
        """Store the key deposit for epoch ``rec.epoch`` and make it the case's epoch.

        ``capsule``, the depositor's escrow capsule of this key, is stored in the same
        transaction: under an escrow policy there is never a key without its capsule.

        Only valid while the case is open (waiting or assigned) and ``rec.epoch ==
        case.epoch + 1``; otherwise stores nothing and raises Forbidden (the case is
        closed: a close committed first wins) or Conflict("epoch already has a key", typically:
        another participant deposited this epoch first). NotFound if there is no case.
        Checking who may deposit, and that there is one seal per participant, is the
        caller's job.
        """
        async with self._tx.write() as conn:
            # The conditional UPDATE is the race arbiter: on PostgreSQL a concurrent
            # depositor (or closer) blocks on the row lock, then re-checks "assigned at
            # epoch n" and misses.
            res = await conn.execute(
                update(_CASES)
                .where(
                    _CASES.c.id == rec.case_id,
                    _CASES.c.epoch == rec.epoch - 1,
                    _CASES.c.state != "closed",
                )
                .values(epoch=rec.epoch)
            )
            if res.rowcount != 1:
                case = await self._get(conn, rec.case_id)
                if case is None:
                    raise NotFound("case not found")
                if case.state == "closed":
                    raise Forbidden("case is closed")
                raise Conflict("epoch already has a key")
            await conn.execute(
                insert(_KEYS).values(
                    case_id=rec.case_id,
                    epoch=rec.epoch,
                    creator_id=rec.creator_id,
                    commitment=rec.commitment,
                    commitment_sig=rec.commitment_sig,
                    escrow=rec.escrow,
                    created_at=rec.created_at,
                )
            )
            if rec.seals:
                await conn.execute(
                    insert(_SEALS),
                    [
                        {
                            "case_id": rec.case_id,
                            "epoch": rec.epoch,
                            "account_id": account_id,
                            "sealed": sealed,
                        }
                        for account_id, sealed in sorted(rec.seals.items())
                    ],
                )
            if capsule is not None:
                await conn.execute(insert(_CAPSULES).values(dataclasses.asdict(capsule)))
                await append_capsule_in(
                    conn,
                    capsule.case_id,
                    capsule.epoch,
                    capsule.depositor_id,
                    capsule.policy_fingerprint,
                    capsule.created_at,
                )

    async def keys_for(self, case_id: str, account_id: str) -> list[EpochKeyRecord]:
        """The epoch keys of a case that were sealed to ``account_id``, by epoch.

        Each record's ``seals`` holds only that account's seal ({account_id: sealed}),
        so the result can be sent to the account as is; ``sealed_for`` names every
        account holding a seal of it. Epochs without a seal for the account (e.g. made
        before a counselor joined and not shared yet) are left out: it could not open them.
        """
        async with self._tx.read() as conn:
            rows = (
                await conn.execute(
                    select(_KEYS, _SEALS.c.sealed)
                    .join(
                        _SEALS,
                        (_SEALS.c.case_id == _KEYS.c.case_id) & (_SEALS.c.epoch == _KEYS.c.epoch),
                    )
                    .where(_KEYS.c.case_id == case_id, _SEALS.c.account_id == account_id)
                    .order_by(_KEYS.c.epoch)
                )
            ).all()
            holders = (
                await conn.execute(
                    select(_SEALS.c.epoch, _SEALS.c.account_id)
                    .where(_SEALS.c.case_id == case_id)
                    .order_by(_SEALS.c.epoch, _SEALS.c.account_id)
                )
            ).all()
        sealed_for: dict[int, list[str]] = {}
        for epoch, holder in holders:
            sealed_for.setdefault(epoch, []).append(holder)
        return [
            _key(r, {account_id: bytes(r.sealed)}, tuple(sealed_for.get(r.epoch, ()))) for r in rows
        ]

    async def add_seal(self, case_id: str, epoch: int, account_id: str, sealed: bytes) -> None:
        """Add ``account_id``'s seal to an existing epoch key (the client sharing a key
        it made while the case waited with the counselor assigned since).

        NotFound if the epoch has no key; Conflict if the account already holds a seal
        of it (a seal, once stored, is never replaced). Who may add which seal is the
        caller's rule.
        """
        async with self._tx.write() as conn:
            exists = (
                await conn.execute(
                    select(_KEYS.c.epoch).where(_KEYS.c.case_id == case_id, _KEYS.c.epoch == epoch)
                )
            ).one_or_none()
            if exists is None:
                raise NotFound("the epoch has no key")
            held = (
                await conn.execute(
                    select(_SEALS.c.account_id).where(
                        _SEALS.c.case_id == case_id,
                        _SEALS.c.epoch == epoch,
                        _SEALS.c.account_id == account_id,
                    )
                )
            ).one_or_none()
            if held is not None:
                raise Conflict("the account already holds a seal of this key")
            try:
                await conn.execute(
                    insert(_SEALS).values(
                        case_id=case_id, epoch=epoch, account_id=account_id, sealed=sealed
                    )
                )
            except IntegrityError:  # a concurrent share won the primary key
                raise Conflict("the account already holds a seal of this key") from None

    async def epoch_key(self, case_id: str, epoch: int) -> EpochKeyRecord | None:
        """One epoch's key deposit with every seal (for bundle export), or None."""
        async with self._tx.read() as conn:
            row = (
                await conn.execute(
                    select(_KEYS).where(_KEYS.c.case_id == case_id, _KEYS.c.epoch == epoch)
                )
            ).one_or_none()
            if row is None:
                return None
            seals = (
                await conn.execute(
                    select(_SEALS.c.account_id, _SEALS.c.sealed).where(
                        _SEALS.c.case_id == case_id, _SEALS.c.epoch == epoch
                    )
                )
            ).all()
        return _key(row, {a: bytes(s) for a, s in seals})

    # -- helpers --------------------------------------------------------------

    async def _get(self, conn: AsyncConnection, case_id: str) -> CaseRecord | None:
        row = (await conn.execute(select(_CASES).where(_CASES.c.id == case_id))).one_or_none()
        return None if row is None else self._case(row)

    def _case(self, row: AnyRow) -> CaseRecord:
        return CaseRecord(
            id=row.id,
            client_id=row.client_id,
            counselor_id=row.counselor_id,
            state=as_case_state(row.state),
            topic=self._tx.cipher.open(row.topic_enc, _topic_ctx(row.id)),
            language=row.language,
            epoch=row.epoch,
            last_seq=row.last_seq,
            chain_head=bytes(row.chain_head),
            created_at=row.created_at,
            assigned_at=row.assigned_at,
            closed_at=row.closed_at,
        )


def _key(row: AnyRow, seals: dict[str, bytes], sealed_for: tuple[str, ...] = ()) -> EpochKeyRecord:
    return EpochKeyRecord(
        case_id=row.case_id,
        epoch=row.epoch,
        creator_id=row.creator_id,
        commitment=bytes(row.commitment),
        commitment_sig=bytes(row.commitment_sig),
        seals=seals,
        created_at=row.created_at,
        escrow=row.escrow,
        sealed_for=sealed_for,
    )
