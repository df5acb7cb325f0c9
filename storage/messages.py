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

Idempotency (flows.md, "Messages"): a message whose key is already stored (or
appears earlier in the same batch) with identical epoch, nonce and ciphertext is a
retry and answers with the original seq and chain hash (``duplicate=True``); the
same key with different content is refused with :class:`~protocol.errors.Duplicate`.
Either way nothing is stored twice.

What this module does not check: membership, case state, epoch existence, sizes and
rates. Those are the server's rules, checked before a message reaches the batch.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import Select, and_, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from protocol.chain import chain_hash
from protocol.errors import Duplicate, NotFound

from .models import Case, Message, table
from .records import Appended, AppendResult, NewMessage, StoredMessage
from .transactions import Transactions

__all__ = ["MessageRepository"]

_CASES = table(Case)
_MESSAGES = table(Message)

#: Idempotency keys per lookup statement. Each key is one OR term of 3 bound
#: parameters; SQLite parses an OR chain into a tree as deep as it is long and refuses
#: depths over 1000 (SQLITE_MAX_EXPR_DEPTH), so stay well below. Group-commit batches
#: are usually smaller, so this is one statement in practice.
_LOOKUP_CHUNK = 256

_Key = tuple[str, str, str]


class _Prior(NamedTuple):
    """What an idempotent retry is compared with, and what it answers."""

    epoch: int
    nonce: bytes
    ciphertext: bytes
    seq: int
    chain_hash: bytes


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


#: Column order of the rows that :func:`_plan` returns for the INSERT.
_INSERT_COLUMNS = (
    "case_id",
    "seq",
    "epoch",
    "sender_id",
    "client_msg_id",
    "nonce",
    "ciphertext",
    "chain_hash",
    "server_ts",
)
_SQLITE_INSERT = (
    "INSERT INTO messages (case_id, seq, epoch, sender_id, client_msg_id, nonce, ciphertext,"
    " chain_hash, server_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_UPDATE = "UPDATE cases SET last_seq = ?, chain_head = ? WHERE id = ?"

_Row = tuple[str, int, int, str, str, bytes, bytes, bytes, int]


@functools.cache
def _sqlite_heads_sql(cases: int) -> str:
    # Only "?" placeholders are interpolated; the values are bound.
    return f"SELECT id, last_seq, chain_head FROM cases WHERE id IN ({', '.join('?' * cases)})"  # noqa: S608


def _plan(
    batch: Sequence[NewMessage],
    heads: dict[str, tuple[int, bytes]],
    prior: dict[_Key, _Prior],
    now_ms: int,
) -> tuple[list[AppendResult], list[_Row], list[tuple[int, bytes, str]]]:
    """Seqs and chain hashes for ``batch`` given the case heads and stored keys.

    Returns the result slots, the rows to insert (in ``_INSERT_COLUMNS`` order) and the
    new heads as ``(last_seq, chain_head, case_id)``, sorted by case id. ``heads`` and
    ``prior`` are updated in place.
    """
    results: list[AppendResult] = []
    new_rows: list[_Row] = []
    touched: dict[str, tuple[int, bytes]] = {}
    for m in batch:
        head = heads.get(m.case_id)
        if head is None:
            results.append(NotFound("case not found"))
            continue
        key = _key(m)
        # `prior` also learns this batch's own new rows (below), so a key repeated
        # within the batch is judged exactly like a retry of a committed message.
        seen = prior.get(key)
        if seen is not None:
            if (seen.epoch, seen.nonce, seen.ciphertext) == (m.epoch, m.nonce, m.ciphertext):
                results.append(Appended(seen.seq, seen.chain_hash, duplicate=True))
            else:
                results.append(Duplicate("client_msg_id already used"))
            continue
        seq = head[0] + 1
        digest = chain_hash(
            head[1],
            case_id=m.case_id,
            seq=seq,
            epoch=m.epoch,
            sender_id=m.sender_id,
            client_msg_id=m.client_msg_id,
            nonce=m.nonce,
            ciphertext=m.ciphertext,
        )
        heads[m.case_id] = touched[m.case_id] = (seq, digest)
        prior[key] = _Prior(m.epoch, m.nonce, m.ciphertext, seq, digest)
        new_rows.append(
            (
                m.case_id,
                seq,
                m.epoch,
                m.sender_id,
                m.client_msg_id,
                m.nonce,
                m.ciphertext,
                digest,
                now_ms,
            )
        )
        results.append(Appended(seq, digest))
    return results, new_rows, [(seq, d, c) for c, (seq, d) in sorted(touched.items())]


class MessageRepository:
    """Append and read the messages of cases."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    async def append_batch(self, batch: Sequence[NewMessage], now_ms: int) -> list[AppendResult]:
        """Append a batch of messages in ONE transaction; one result per input, in order.

        Each slot is :class:`Appended` (new: the assigned seq and chain hash; or an
        identical retry: the original ones with ``duplicate=True``),
        :class:`~protocol.errors.Duplicate` (the idempotency key is used by different
        content) or :class:`~protocol.errors.NotFound` (no such case). Slots with errors
        store nothing; the others are committed together, and when this returns they
        are durable, so the caller may ack them. ``now_ms`` becomes ``server_ts``.

        If the database fails, the exception propagates and nothing is stored: the
        caller must fail (or retry) every message of the batch.
        """
        if not batch:
            return []
        if not self._tx.is_postgresql:
            return await self._append_batch_sqlite(batch, now_ms)
        case_ids = sorted({m.case_id for m in batch})
        async with self._tx.write() as conn:
            heads_q = (
                select(_CASES.c.id, _CASES.c.last_seq, _CASES.c.chain_head)
                .where(_CASES.c.id.in_(case_ids))
                .order_by(_CASES.c.id)
                .with_for_update()
            )
            heads: dict[str, tuple[int, bytes]] = {
                r.id: (r.last_seq, bytes(r.chain_head)) for r in await conn.execute(heads_q)
            }
            prior = await self._lookup(conn, {_key(m) for m in batch if m.case_id in heads})
            results, new_rows, touched = _plan(batch, heads, prior, now_ms)
            if new_rows:
                # executemany: asyncpg pipelines the rows; one call from here, not one
                # await per message.
                await conn.execute(
                    insert(_MESSAGES),
                    [dict(zip(_INSERT_COLUMNS, r, strict=True)) for r in new_rows],
                )
                await conn.execute(
                    update(_CASES)
                    .where(_CASES.c.id == bindparam("b_id"))
                    .values(last_seq=bindparam("b_seq"), chain_head=bindparam("b_head")),
                    [{"b_id": c, "b_seq": seq, "b_head": digest} for seq, digest, c in touched],
                )
        return results

    async def _append_batch_sqlite(
        self, batch: Sequence[NewMessage], now_ms: int
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
                heads: dict[str, tuple[int, bytes]] = {
                    r[0]: (r[1], bytes(r[2]))
                    for r in db.execute(_sqlite_heads_sql(len(case_ids)), case_ids)
                }
                results, new_rows, touched = _plan(batch, heads, prior, now_ms)
                if new_rows:
                    db.executemany(_SQLITE_INSERT, new_rows)
                    db.executemany(_SQLITE_UPDATE, touched)
                return results

            return await self._tx.in_sqlite_thread(conn, rest)

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
                    r.epoch, bytes(r.nonce), bytes(r.ciphertext), r.seq, bytes(r.chain_hash)
                )
        return prior

    async def range(self, case_id: str, after_seq: int, limit: int) -> list[StoredMessage]:
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
            return [
                StoredMessage(
                    case_id=r.case_id,
                    seq=r.seq,
                    epoch=r.epoch,
                    sender_id=r.sender_id,
                    client_msg_id=r.client_msg_id,
                    nonce=bytes(r.nonce),
                    ciphertext=bytes(r.ciphertext),
                    chain_hash=bytes(r.chain_hash),
                    server_ts=r.server_ts,
                )
                for r in rows
            ]

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
