"""Stored messages: append-only ciphertext rows forming one hash chain per case.

This is the hot path of the hub. :meth:`MessageRepository.append_batch` is built for
*group commit*: the server collects the ``msg.send`` requests that arrive while the
previous commit is in flight and appends them all in one transaction, so durability
(an fsync on SQLite, a WAL flush on PostgreSQL) costs one round trip per batch, not
per message. The number of statements is constant per batch:

1. read (PostgreSQL: ``SELECT ... FOR UPDATE``) the ``cases`` rows involved, in id
   order so that two batches touching the same cases cannot deadlock; on SQLite the
   write transaction already began IMMEDIATE and holds the database write lock;
2. one SELECT for already-stored messages with the same idempotency keys
   (case_id, sender_id, client_msg_id), answered by one probe per key into the
   unique index on exactly those columns (per 256 keys);
3. one executemany INSERT of the new rows;
4. one executemany UPDATE of ``cases.last_seq`` / ``cases.chain_head``.

Because the case rows are locked before ``last_seq`` is read, seqs are gap-free and
unique per case even with several hub processes appending concurrently.

**Case state.** The same locked read gives each case's ``state`` and ``epoch``, and the
append refuses, per message, a closed case (``Forbidden``: "case is closed") or an
epoch with no deposited key (``InvalidFrame``). A waiting case takes messages (its
client writes before a counselor is there; only the client takes part in it yet). A
close or key deposit committed by any hub process is therefore seen
by every later batch: a message can never be stored, nor acked, after its case's close
committed (the close's UPDATE and this read take the same row lock). These checks come
before idempotency, so a retry after the close is refused too.

Idempotency (docs/PROTOCOL.md 8.7, "Idempotency"): a message whose key is already
stored (or appears earlier in the same batch) with identical epoch, nonce and
ciphertext is a retry and answers with the original record (:class:`AlreadyStored`);
the same key with different content is refused with :class:`~protocol.errors.Duplicate`.
Either way nothing is stored twice.

Replays (issue 13, item 9): a message whose nonce is already stored in its case under
another idempotency key (a participant resending the other side's exact ciphertext) is
refused with :class:`~protocol.errors.Replayed`. The unique index on (case_id, nonce)
decides; the hot path does not look nonces up. An insert that hits the index rolls back,
the batch's stored nonces are read once, and the batch is appended again with the
replays refused (the rare path pays the cost). Two messages of one batch with one nonce
are caught while planning.

What this module does not check: membership, sizes and rates. Those are the server's
rules, checked before a message reaches the batch.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any, NamedTuple

from msgspec.structs import asdict, astuple
from sqlalchemy import Select, and_, bindparam, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from protocol.chain import GENESIS, chain_hash
from protocol.errors import Duplicate, Forbidden, InvalidFrame, NotFound, RemoteError, Replayed
from protocol.frames import MessageRecord

from .models import Case, Message, table
from .records import AlreadyStored, AppendResult, NewMessage
from .transactions import Transactions

__all__ = ["MessageRepository", "message_from_row"]

_CASES = table(Case)
_MESSAGES = table(Message)

#: Idempotency keys per lookup statement. Each key is one OR term of 3 bound
#: parameters; SQLite parses an OR chain into a tree as deep as it is long and refuses
#: depths over 1000 (SQLITE_MAX_EXPR_DEPTH), so stay well below. Group-commit batches
#: are usually smaller, so this is one statement in practice.
_LOOKUP_CHUNK = 256

_Key = tuple[str, str, str]
#: (case_id, nonce): unique among a case's stored messages.
_NonceKey = tuple[str, bytes]


class _Prior(NamedTuple):
    """What an idempotent retry is compared with, and what it answers."""

    epoch: int
    nonce: bytes
    ciphertext: bytes
    seq: int
    chain_hash: bytes
    server_ts: int


class _Head(NamedTuple):
    """A case row as the append needs it: where its chain ends, and what it accepts."""

    last_seq: int
    chain_head: bytes
    state: str
    epoch: int


def _refusal(head: _Head, epoch: int) -> RemoteError | None:
    """Why a case in this state refuses a message of ``epoch``, or None."""
    if head.state == "closed":
        return Forbidden("case is closed")
    if epoch > head.epoch:
        return InvalidFrame("no key has been deposited for this epoch")
    return None


@functools.cache
def _lookup_statement(keys: int) -> Select[Any]:
    """The prior-message lookup for ``keys`` idempotency keys, built once per size.

    OR of equalities, not "(a, b, c) IN (...)": SQLite answers the row-value IN with a
    full scan of messages, while it answers the OR with one index probe per term
    (MULTI-INDEX OR), as does PostgreSQL (BitmapOr) for both forms. Building this
    expression with fresh values was a tenth of the hub's CPU under load (SQLAlchemy
    constructs and cache-keys every term), so the statement is built once per batch
    size with named bind parameters and only the values change.
    """
    return select(
        _MESSAGES.c.case_id,
        _MESSAGES.c.sender_id,
        _MESSAGES.c.client_msg_id,
        _MESSAGES.c.epoch,
        _MESSAGES.c.nonce,
        _MESSAGES.c.ciphertext,
        _MESSAGES.c.seq,
        _MESSAGES.c.chain_hash,
        _MESSAGES.c.server_ts,
    ).where(
        or_(
            *(
                and_(
                    _MESSAGES.c.case_id == bindparam(f"c{i}"),
                    _MESSAGES.c.sender_id == bindparam(f"s{i}"),
                    _MESSAGES.c.client_msg_id == bindparam(f"m{i}"),
                )
                for i in range(keys)
            )
        )
    )


def _padded(keys: int) -> int:
    """The lookup size used for ``keys`` keys: a power of two up to 32, then a multiple
    of 32 (at most 13 distinct statements for chunks of up to 256 keys)."""
    if keys <= 32:
        return 1 << (keys - 1).bit_length()
    return -(-keys // 32) * 32


def _key(m: NewMessage) -> _Key:
    return (m.case_id, m.sender_id, m.client_msg_id)


#: The INSERT's columns: the fields of MessageRecord, in their order, so a record's
#: ``astuple`` is its row.
_INSERT_COLUMNS = tuple(MessageRecord.__struct_fields__)
_SQLITE_INSERT = (  # column names are our own constants; the values are bound
    f"INSERT INTO messages ({', '.join(_INSERT_COLUMNS)})"  # noqa: S608
    f" VALUES ({', '.join('?' * len(_INSERT_COLUMNS))})"
)
_SQLITE_UPDATE = "UPDATE cases SET last_seq = ?, chain_head = ? WHERE id = ?"


@functools.cache
def _sqlite_heads_sql(cases: int) -> str:
    # Only "?" placeholders are interpolated; the values are bound.
    marks = ", ".join("?" * cases)
    return f"SELECT id, last_seq, chain_head, state, epoch FROM cases WHERE id IN ({marks})"  # noqa: S608


def _plan(
    batch: Sequence[NewMessage],
    heads: dict[str, _Head],
    prior: dict[_Key, _Prior],
    now_ms: int,
    used_nonces: set[_NonceKey] | None = None,
) -> tuple[list[AppendResult], list[MessageRecord], list[tuple[int, bytes, str]]]:
    """Seqs and chain hashes for ``batch`` given the case heads and stored keys, and the
    nonces known to be stored under other keys (``used_nonces``; updated in place).

    Returns the result slots, the new records to insert and the new heads as
    ``(last_seq, chain_head, case_id)``, sorted by case id. ``heads`` and ``prior`` are
    updated in place.
    """
    results: list[AppendResult] = []
    new: list[MessageRecord] = []
    touched: dict[str, tuple[int, bytes]] = {}
    nonces: set[_NonceKey] = set() if used_nonces is None else used_nonces
    for m in batch:
        head = heads.get(m.case_id)
        if head is None:
            results.append(NotFound("case not found"))
            continue
        refused = _refusal(head, m.epoch)
        if refused is not None:
            results.append(refused)
            continue
        key = _key(m)
        # `prior` also learns this batch's own new rows (below), so a key repeated
        # within the batch is judged exactly like a retry of a committed message.
        seen = prior.get(key)
        if seen is not None:
            if (seen.epoch, seen.nonce, seen.ciphertext) == (m.epoch, m.nonce, m.ciphertext):
                results.append(AlreadyStored(_record(m, seen.seq, seen.chain_hash, seen.server_ts)))
            else:
                results.append(Duplicate("client_msg_id already used"))
            continue
        if (m.case_id, m.nonce) in nonces:
            results.append(Replayed("this nonce is already used in the case: a replay"))
            continue
        nonces.add((m.case_id, m.nonce))
        seq = head.last_seq + 1
        digest = chain_hash(
            head.chain_head,
            case_id=m.case_id,
            seq=seq,
            epoch=m.epoch,
            sender_id=m.sender_id,
            client_msg_id=m.client_msg_id,
            nonce=m.nonce,
            ciphertext=m.ciphertext,
        )
        heads[m.case_id] = head._replace(last_seq=seq, chain_head=digest)
        touched[m.case_id] = (seq, digest)
        prior[key] = _Prior(m.epoch, m.nonce, m.ciphertext, seq, digest, now_ms)
        record = _record(m, seq, digest, now_ms)
        new.append(record)
        results.append(record)
    return results, new, [(seq, d, c) for c, (seq, d) in sorted(touched.items())]


def _record(m: NewMessage, seq: int, digest: bytes, server_ts: int) -> MessageRecord:
    return MessageRecord(
        case_id=m.case_id,
        seq=seq,
        epoch=m.epoch,
        sender_id=m.sender_id,
        client_msg_id=m.client_msg_id,
        nonce=m.nonce,
        ciphertext=m.ciphertext,
        chain_hash=digest,
        server_ts=server_ts,
    )


def message_from_row(row: Any, prefix: str = "") -> MessageRecord:
    """The record in a row of ``messages`` whose columns are named ``PREFIX + column``
    (a prefix tells them apart from another table's in a join)."""
    return MessageRecord(
        case_id=getattr(row, prefix + "case_id"),
        seq=getattr(row, prefix + "seq"),
        epoch=getattr(row, prefix + "epoch"),
        sender_id=getattr(row, prefix + "sender_id"),
        client_msg_id=getattr(row, prefix + "client_msg_id"),
        nonce=bytes(getattr(row, prefix + "nonce")),
        ciphertext=bytes(getattr(row, prefix + "ciphertext")),
        chain_hash=bytes(getattr(row, prefix + "chain_hash")),
        server_ts=getattr(row, prefix + "server_ts"),
    )


class MessageRepository:
    """Append and read the messages of cases."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    async def append_batch(self, batch: Sequence[NewMessage], now_ms: int) -> list[AppendResult]:
        """Append a batch of messages in ONE transaction; one result per input, in order.

        Each slot is the stored :class:`~protocol.frames.MessageRecord` (with its seq,
        chain hash and ``server_ts`` = ``now_ms``), :class:`AlreadyStored` (an identical
        retry: the original record, nothing written), or the refusal:
        :class:`~protocol.errors.Forbidden` (the case is closed),
        :class:`~protocol.errors.InvalidFrame` (no key for the epoch),
        :class:`~protocol.errors.Duplicate` (the idempotency key is used by different
        content) or :class:`~protocol.errors.NotFound` (no such case). Refused slots
        store nothing; the others are committed together, and when this returns they
        are durable, so the caller may ack them.

        If the database fails, the exception propagates and nothing is stored: the
        caller must fail (or retry) every message of the batch.
        """
        if not batch:
            return []
        try:
            return await self._append(batch, now_ms, None)
        except (IntegrityError, sqlite3.IntegrityError):
            # A nonce already stored in its case (the only constraint the plan cannot
            # see coming): find the replays, then append again refusing them.
            used = await self._stored_nonces(batch)
            return await self._append(batch, now_ms, used)

    async def _append(
        self, batch: Sequence[NewMessage], now_ms: int, used: set[_NonceKey] | None
    ) -> list[AppendResult]:
        if not self._tx.is_postgresql:
            return await self._append_batch_sqlite(batch, now_ms, used)
        case_ids = sorted({m.case_id for m in batch})
        async with self._tx.write() as conn:
            heads_q = (
                select(
                    _CASES.c.id,
                    _CASES.c.last_seq,
                    _CASES.c.chain_head,
                    _CASES.c.state,
                    _CASES.c.epoch,
                )
                .where(_CASES.c.id.in_(case_ids))
                .order_by(_CASES.c.id)
                .with_for_update()
            )
            heads: dict[str, _Head] = {
                r.id: _Head(r.last_seq, bytes(r.chain_head), r.state, r.epoch)
                for r in await conn.execute(heads_q)
            }
            prior = await self._lookup(conn, {_key(m) for m in batch if m.case_id in heads})
            results, new, touched = _plan(batch, heads, prior, now_ms, used)
            if new:
                # executemany: asyncpg pipelines the rows; one call from here, not one
                # await per message.
                await conn.execute(insert(_MESSAGES), [asdict(r) for r in new])
                await conn.execute(
                    update(_CASES)
                    .where(_CASES.c.id == bindparam("b_id"))
                    .values(last_seq=bindparam("b_seq"), chain_head=bindparam("b_head")),
                    [{"b_id": c, "b_seq": seq, "b_head": digest} for seq, digest, c in touched],
                )
        return results

    async def _append_batch_sqlite(
        self, batch: Sequence[NewMessage], now_ms: int, used: set[_NonceKey] | None
    ) -> list[AppendResult]:
        """SQLite: the same transaction in 4 thread round trips instead of 6.

        The write transaction began IMMEDIATE (the database write lock is held), so the
        case heads cannot change under us and may be read after the idempotency lookup.
        The lookup goes through SQLAlchemy (its statement is cached); reading the heads,
        chaining, the INSERT and the UPDATE then run in one call in aiosqlite's thread
        on the sqlite3 connection: no SQLAlchemy parameter processing per row and one
        hop for all three statements. BEGIN IMMEDIATE and COMMIT stay SQLAlchemy's.
        """
        async with self._tx.write() as conn:
            prior = await self._lookup(conn, {_key(m) for m in batch})

            def rest(db: sqlite3.Connection) -> list[AppendResult]:
                case_ids = sorted({m.case_id for m in batch})
                heads: dict[str, _Head] = {
                    r[0]: _Head(r[1], bytes(r[2]), r[3], r[4])
                    for r in db.execute(_sqlite_heads_sql(len(case_ids)), case_ids)
                }
                results, new, touched = _plan(batch, heads, prior, now_ms, used)
                if new:
                    db.executemany(_SQLITE_INSERT, [astuple(r) for r in new])
                    db.executemany(_SQLITE_UPDATE, touched)
                return results

            return await self._tx.in_sqlite_thread(conn, rest)

    async def _stored_nonces(self, batch: Sequence[NewMessage]) -> set[_NonceKey]:
        """The batch's (case_id, nonce) pairs already stored. The plan answers an
        identical retry (same key, same nonce) before it looks at nonces, so only
        messages under another key are refused as replays."""
        wanted = sorted({(m.case_id, m.nonce) for m in batch})
        found: set[_NonceKey] = set()
        async with self._tx.read() as conn:
            for start in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[start : start + _LOOKUP_CHUNK]
                rows = await conn.execute(
                    select(_MESSAGES.c.case_id, _MESSAGES.c.nonce).where(
                        tuple_(_MESSAGES.c.case_id, _MESSAGES.c.nonce).in_(chunk)
                    )
                )
                found.update((r.case_id, bytes(r.nonce)) for r in rows)
        return found

    async def _lookup(self, conn: AsyncConnection, key_set: set[_Key]) -> dict[_Key, _Prior]:
        """Already-stored messages with these idempotency keys."""
        keys = sorted(key_set)
        prior: dict[_Key, _Prior] = {}
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            # Pad to one of a few sizes with copies of the last key (a repeated OR term
            # matches the same row): a statement per exact size meant building and
            # compiling a new one for most batches until every size had been seen.
            chunk += chunk[-1:] * (_padded(len(chunk)) - len(chunk))
            params: dict[str, str] = {}
            for i, (case_id, sender_id, cmid) in enumerate(chunk):
                params[f"c{i}"], params[f"s{i}"], params[f"m{i}"] = case_id, sender_id, cmid
            rows = await conn.execute(_lookup_statement(len(chunk)), params)
            for r in rows:
                prior[(r.case_id, r.sender_id, r.client_msg_id)] = _Prior(
                    r.epoch,
                    bytes(r.nonce),
                    bytes(r.ciphertext),
                    r.seq,
                    bytes(r.chain_hash),
                    r.server_ts,
                )
        return prior

    async def range(self, case_id: str, after_seq: int, limit: int) -> list[MessageRecord]:
        """Up to ``limit`` messages of the case with ``seq > after_seq``, ascending.

        An unknown case gives an empty list. To learn whether more follow, ask for
        ``limit + 1`` and drop the extra one (that is how ``sync.result.has_more`` is
        computed without a second query).
        """
        if limit <= 0:
            return []
        async with self._tx.read() as conn:
            rows = await conn.execute(
                select(_MESSAGES)
                .where(_MESSAGES.c.case_id == case_id, _MESSAGES.c.seq > after_seq)
                .order_by(_MESSAGES.c.seq)
                .limit(limit)
            )
            return [message_from_row(r) for r in rows]

    async def chain_hash_at(self, case_id: str, seq: int) -> bytes | None:
        """The chain hash of the case's record at ``seq`` (GENESIS for seq 0), or None
        if there is no such record."""
        if seq == 0:
            return GENESIS
        async with self._tx.read() as conn:
            value = await conn.scalar(
                select(_MESSAGES.c.chain_hash).where(
                    _MESSAGES.c.case_id == case_id, _MESSAGES.c.seq == seq
                )
            )
        return None if value is None else bytes(value)

    async def last(self, case_id: str) -> tuple[int, bytes]:
        """``(last_seq, chain_head)`` of the case: ``(0, GENESIS)`` before its first message.

        Raises :class:`~protocol.errors.NotFound` for an unknown case.
        """
        async with self._tx.read() as conn:
            row = (
                await conn.execute(
                    select(_CASES.c.last_seq, _CASES.c.chain_head).where(_CASES.c.id == case_id)
                )
            ).one_or_none()
        if row is None:
            raise NotFound("case not found")
        return int(row.last_seq), bytes(row.chain_head)
