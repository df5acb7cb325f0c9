"""Small builders for storage tests (plain functions, so hypothesis tests can use them)."""

from __future__ import annotations

import secrets

from storage import AccountRecord, Database, MessageRecord, NewMessage
from storage.records import CaseRecord, EpochKeyRecord, Role

__all__ = [
    "DATA_KEY",
    "account_record",
    "add_account",
    "all_messages",
    "assigned_case",
    "epoch_key",
    "message",
]

#: The at-rest data key used by the tests (any 32 bytes).
DATA_KEY = bytes(range(32))


def account_record(
    account_id: str,
    *,
    handle: str | None = None,
    role: Role = "client",
    display_name: str | None = None,
    languages: tuple[str, ...] = (),
    specialties: tuple[str, ...] = (),
    created_at: int = 1_000,
) -> AccountRecord:
    return AccountRecord(
        id=account_id,
        handle=handle or f"h-{account_id}",
        role=role,
        salt=secrets.token_bytes(16),
        opslimit=2,
        memlimit=65536,
        auth_hash="$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA",
        sign_pk=secrets.token_bytes(32),
        box_pk=secrets.token_bytes(32),
        wrapped_keys=secrets.token_bytes(104),
        languages=languages,
        specialties=specialties,
        display_name=display_name,
        created_at=created_at,
    )


async def add_account(db: Database, account_id: str, role: Role = "client") -> AccountRecord:
    return await db.accounts.create(account_record(account_id, role=role))


async def assigned_case(
    db: Database, case_id: str = "case-1", client: str = "cl-1", counselor: str = "co-1"
) -> CaseRecord:
    """A case between two fresh accounts, assigned, with an epoch-1 key."""
    await add_account(db, client)
    await add_account(db, counselor, "counselor")
    await db.cases.create(client, "anxiety", "en", case_id, 2_000)
    assigned = await db.cases.assign(case_id, counselor, 2_001)
    assert assigned is not None
    await db.cases.add_epoch_key(epoch_key(case_id, 1, client, [client, counselor]))
    case = await db.cases.get(case_id)
    assert case is not None
    return case


def epoch_key(case_id: str, epoch: int, creator: str, holders: list[str]) -> EpochKeyRecord:
    return EpochKeyRecord(
        case_id=case_id,
        epoch=epoch,
        creator_id=creator,
        commitment=secrets.token_bytes(32),
        commitment_sig=secrets.token_bytes(64),
        seals={h: secrets.token_bytes(80) for h in holders},
        created_at=3_000 + epoch,
    )


def message(
    case_id: str, sender: str, cmid: str | None = None, *, body: bytes | None = None
) -> NewMessage:
    return NewMessage(
        case_id=case_id,
        epoch=1,
        sender_id=sender,
        client_msg_id=cmid or secrets.token_urlsafe(12),
        nonce=secrets.token_bytes(24),
        ciphertext=body if body is not None else secrets.token_bytes(40),
    )


async def all_messages(db: Database, case_id: str) -> list[MessageRecord]:
    return await db.messages.range(case_id, 0, 1_000_000)
