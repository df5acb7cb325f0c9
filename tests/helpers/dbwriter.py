"""The hostile database writer of issue 10: opens the hub's SQLite file with ``sqlite3``
and rewrites rows the way an operator with database access could, with everything
public at hand (the chain hash is unkeyed, so re-chaining is easy).

Use it between two runs of the hub (stop, write, start again on the same directory)
so no hub cache hides the change. Every function commits and returns what it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from protocol.chain import GENESIS, chain_hash

__all__ = [
    "TURNS",
    "assign_case",
    "delete_message",
    "live_hub_db",
    "replay_message",
    "set_account_keys",
    "swap_messages",
]


#: The six-turn conversation the hostile-writer tests rewrite: the client's refusal at
#: seq 3 is what a hostile operator would most want gone.
TURNS: list[tuple[str, str]] = [
    ("client", "I need to talk about my brother."),
    ("counselor", "I am listening."),
    ("client", "NO. Do not call anyone."),
    ("counselor", "Understood, I will not call anyone."),
    ("client", "Thank you."),
    ("counselor", "Take care."),
]


@contextlib.contextmanager
def _db(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path)
    try:
        with conn:  # one transaction, committed on success
            yield conn
    finally:
        conn.close()


def set_account_keys(
    path: Path,
    handle: str,
    *,
    box_pk: bytes,
    sign_pk: bytes | None = None,
    box_sig: bytes | None = None,
) -> None:
    """Substitute an account's public keys in the directory (``accounts`` row); the
    stored box_sig stays unless a new one is given."""
    with _db(path) as conn:
        row = conn.execute("SELECT sign_pk, box_sig FROM accounts WHERE handle = ?", (handle,))
        old_sign, old_sig = row.fetchone()
        sig = box_sig if box_sig is not None else old_sig
        conn.execute(
            "UPDATE accounts SET sign_pk = ?, box_pk = ?, box_sig = ? WHERE handle = ?",
            (sign_pk or old_sign, box_pk, sig, handle),
        )


def assign_case(path: Path, case_id: str, handle: str) -> None:
    """Assign a case to the account ``handle`` (any account: the hub's word is all a
    ``case.assigned`` or ``welcome`` carries)."""
    with _db(path) as conn:
        (account_id,) = conn.execute(
            "SELECT id FROM accounts WHERE handle = ?", (handle,)
        ).fetchone()
        conn.execute(
            "UPDATE cases SET counselor_id = ?, state = 'assigned', assigned_at = created_at "
            "WHERE id = ?",
            (account_id, case_id),
        )


def _renumber(conn: sqlite3.Connection, case_id: str, rows: list[tuple[object, ...]]) -> None:
    """Store ``rows`` (epoch, sender, cmid, nonce, ct, server_ts) as seq 1..n, re-chained."""
    conn.execute("DELETE FROM messages WHERE case_id = ?", (case_id,))
    prev = GENESIS
    for seq, (epoch, sender, cmid, nonce, ct, ts) in enumerate(rows, start=1):
        prev = chain_hash(
            prev,
            case_id=case_id,
            seq=seq,
            epoch=int(epoch),  # type: ignore[call-overload]
            sender_id=str(sender),
            client_msg_id=str(cmid),
            nonce=bytes(nonce),  # type: ignore[arg-type]
            ciphertext=bytes(ct),  # type: ignore[arg-type]
        )
        conn.execute(
            "INSERT INTO messages (case_id, seq, epoch, sender_id, client_msg_id, nonce, "
            "ciphertext, chain_hash, server_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (case_id, seq, epoch, sender, cmid, nonce, ct, prev, ts),
        )
    conn.execute(
        "UPDATE cases SET last_seq = ?, chain_head = ? WHERE id = ?", (len(rows), prev, case_id)
    )


def _rows(conn: sqlite3.Connection, case_id: str) -> list[tuple[object, ...]]:
    return list(
        conn.execute(
            "SELECT epoch, sender_id, client_msg_id, nonce, ciphertext, server_ts "
            "FROM messages WHERE case_id = ? ORDER BY seq",
            (case_id,),
        )
    )


def delete_message(path: Path, case_id: str, seq: int) -> None:
    """Drop the message at ``seq``; the later ones move up and the chain is rebuilt."""
    with _db(path) as conn:
        rows = _rows(conn, case_id)
        del rows[seq - 1]
        _renumber(conn, case_id, rows)


def swap_messages(path: Path, case_id: str, a: int, b: int) -> None:
    """Exchange the messages at seqs ``a`` and ``b``, re-chained."""
    with _db(path) as conn:
        rows = _rows(conn, case_id)
        rows[a - 1], rows[b - 1] = rows[b - 1], rows[a - 1]
        _renumber(conn, case_id, rows)


def replay_message(path: Path, case_id: str, seq: int) -> None:
    """Append a copy of the message at ``seq`` at the end. The idempotency constraint
    would refuse it, so the table is rebuilt without it: the writer owns the schema too."""
    with _db(path) as conn:
        rows = _rows(conn, case_id)
        rows.append(rows[seq - 1])
        conn.execute("ALTER TABLE messages RENAME TO messages_old")
        conn.execute(
            "CREATE TABLE messages (case_id VARCHAR(64) NOT NULL, seq BIGINT NOT NULL, "
            "epoch INTEGER NOT NULL, sender_id VARCHAR(64) NOT NULL, client_msg_id "
            "VARCHAR(64) NOT NULL, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL, chain_hash "
            "BLOB NOT NULL, server_ts BIGINT NOT NULL, PRIMARY KEY (case_id, seq))"
        )
        cols = (
            "case_id, seq, epoch, sender_id, client_msg_id, nonce, ciphertext, chain_hash, "
            "server_ts"
        )
        conn.execute(f"INSERT INTO messages ({cols}) SELECT {cols} FROM messages_old")
        conn.execute("DROP TABLE messages_old")
        _renumber(conn, case_id, rows)


@contextlib.asynccontextmanager
async def live_hub_db(path: Path) -> AsyncIterator[sqlite3.Connection]:
    """The hostile writer's connection to the SQLite file of a hub running in this
    process, holding the database's write lock for the ``async with`` block (one
    transaction, committed at its end).

    The lock is taken in a thread: a plain blocking ``sqlite3`` call on the event loop
    would wait for a lock the hub holds while the hub, on the same loop, could never
    finish the transaction that holds it (a deadlock until the busy timeout). Once the
    lock is ours, the block's statements run at once; the hub waits in its own thread.
    """
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(conn.execute, "BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()
