"""Declarative models: the database schema, as SQLAlchemy 2 typed mappings.

These classes describe tables; they never leave the storage package (repositories
return :mod:`storage.records`). Repositories query through Core constructs against
the tables below, which keeps the hot path free of ORM unit-of-work overhead.

The schema is created by the Alembic migrations in ``storage/migrations``, not by
``metadata.create_all``; ``tests/storage`` checks that the two agree. Any change here
needs a new migration.

Conventions:

* identifiers (account, case, client_msg_id) are protocol ids, at most 64 characters;
* timestamps are integer milliseconds (BIGINT), ``seq`` is BIGINT;
* keys, hashes, nonces and ciphertexts are ``LargeBinary`` (BLOB / BYTEA);
* ``*_enc`` columns hold values encrypted at rest (:mod:`storage.atrest`); nothing in
  the database holds a display name or a topic in clear;
* lists of languages / specialties are comma-joined strings (:func:`records.join_list`);
* constraint names follow :data:`NAMING` so migrations can name them on every backend.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "NAMING",
    "Account",
    "AuditEntry",
    "Base",
    "Case",
    "CaseKey",
    "CaseKeySeal",
    "Consent",
    "Dispute",
    "DisputeApproval",
    "EscrowCapsule",
    "EscrowPolicy",
    "Invite",
    "Message",
    "Prefs",
    "Receipt",
    "Token",
    "table",
]

#: Deterministic constraint names, identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(64)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint("role IN ('client', 'counselor')", name="role"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    # Handles are pseudonyms chosen by the user; stored in clear for the unique lookup.
    handle: Mapped[str] = mapped_column(String(32), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    # The login salt and the wrapped identity, sealed at rest (migration 0003).
    salt_enc: Mapped[bytes] = mapped_column(LargeBinary)
    opslimit: Mapped[int] = mapped_column(Integer)
    memlimit: Mapped[int] = mapped_column(BigInteger)
    auth_hash: Mapped[str] = mapped_column(String(255))
    sign_pk: Mapped[bytes] = mapped_column(LargeBinary)
    box_pk: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_keys_enc: Mapped[bytes] = mapped_column(LargeBinary)
    # The identity key's signature over box_pk (NULL: a version-1 account not upgraded)
    # and the org-signed counselor certificate as JSON (protocol.frames.CounselorCert).
    box_sig: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    cert: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    languages: Mapped[str] = mapped_column(Text)
    specialties: Mapped[str] = mapped_column(Text)
    name_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)


class Invite(Base):
    __tablename__ = "invites"
    __table_args__ = (CheckConstraint("role IN ('client', 'counselor')", name="role"),)

    # Only a hash of the invite code: a database copy does not yield usable invites.
    code_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    name_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    languages: Mapped[str] = mapped_column(Text)
    specialties: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    used_by: Mapped[str | None] = mapped_column(ID, ForeignKey("accounts.id"), nullable=True)
    used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Token(Base):
    __tablename__ = "tokens"

    # A hash of the bearer token, so a database copy cannot be replayed as a login.
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    account_id: Mapped[str] = mapped_column(ID, ForeignKey("accounts.id"), index=True)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        CheckConstraint("state IN ('waiting', 'assigned', 'closed')", name="state"),
        Index(None, "state"),
        Index(None, "client_id"),
        Index(None, "counselor_id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    client_id: Mapped[str] = mapped_column(ID, ForeignKey("accounts.id"))
    counselor_id: Mapped[str | None] = mapped_column(ID, ForeignKey("accounts.id"), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    topic_enc: Mapped[bytes] = mapped_column(LargeBinary)
    language: Mapped[str] = mapped_column(String(16))
    # Newest epoch with a key (0 = none); only ever advanced by exactly one.
    epoch: Mapped[int] = mapped_column(Integer)
    # Denormalised head of the message chain: the append path reads and advances these
    # under the case row lock instead of scanning messages.
    last_seq: Mapped[int] = mapped_column(BigInteger)
    chain_head: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[int] = mapped_column(BigInteger)
    assigned_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    closed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class CaseKey(Base):
    __tablename__ = "case_keys"

    case_id: Mapped[str] = mapped_column(ID, ForeignKey("cases.id"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    creator_id: Mapped[str] = mapped_column(ID, ForeignKey("accounts.id"))
    commitment: Mapped[bytes] = mapped_column(LargeBinary)
    commitment_sig: Mapped[bytes] = mapped_column(LargeBinary)
    # The escrow policy fingerprint the creator bound the key to, or "none" (0003).
    escrow: Mapped[str] = mapped_column(String(64), server_default="none")
    created_at: Mapped[int] = mapped_column(BigInteger)


class CaseKeySeal(Base):
    __tablename__ = "case_key_seals"
    __table_args__ = (
        ForeignKeyConstraint(["case_id", "epoch"], ["case_keys.case_id", "case_keys.epoch"]),
    )

    case_id: Mapped[str] = mapped_column(ID, primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str] = mapped_column(ID, ForeignKey("accounts.id"), primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # Idempotency key of msg.send; also the index the append path's lookup uses.
        UniqueConstraint("case_id", "sender_id", "client_msg_id"),
        # A nonce is used once per case: a replayed ciphertext is refused (migration 0003;
        # a unique index, which SQLite can add without rebuilding the table).
        Index("ix_messages_case_id_nonce", "case_id", "nonce", unique=True),
    )

    case_id: Mapped[str] = mapped_column(ID, ForeignKey("cases.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    sender_id: Mapped[str] = mapped_column(ID, ForeignKey("accounts.id"))
    client_msg_id: Mapped[str] = mapped_column(ID)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    chain_hash: Mapped[bytes] = mapped_column(LargeBinary)
    server_ts: Mapped[int] = mapped_column(BigInteger)


class Receipt(Base):
    __tablename__ = "receipts"
    __table_args__ = (CheckConstraint("kind IN ('delivered', 'read')", name="kind"),)

    case_id: Mapped[str] = mapped_column(ID, ForeignKey("cases.id"), primary_key=True)
    account_id: Mapped[str] = mapped_column(ID, ForeignKey("accounts.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    up_to_seq: Mapped[int] = mapped_column(BigInteger)
    # The participant's signature over (case, kind, up_to_seq, chain_hash); NULL only
    # for receipts stored by a version-1 hub (migration 0003).
    chain_hash: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    sig: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class Prefs(Base):
    __tablename__ = "prefs"

    # One encrypted blob per account (pins, settings): the hub cannot open it.
    account_id: Mapped[str] = mapped_column(ID, ForeignKey("accounts.id"), primary_key=True)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    version: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


# -- escrow and disputes (migration 0002; docs/DISPUTES.md) -------------------------------


class EscrowPolicy(Base):
    __tablename__ = "escrow_policies"

    # The newest row is the installed policy; older rows stay for old capsules and consents.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    # The org-signed policy as JSON (public keys and a signature only).
    signed_policy: Mapped[bytes] = mapped_column(LargeBinary)
    terms_version: Mapped[int] = mapped_column(Integer)
    installed_at: Mapped[int] = mapped_column(BigInteger)


class Consent(Base):
    __tablename__ = "consents"

    account_id: Mapped[str] = mapped_column(ID, ForeignKey("accounts.id"), primary_key=True)
    terms_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy_fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    sig: Mapped[bytes] = mapped_column(LargeBinary)
    accepted_at: Mapped[int] = mapped_column(BigInteger)


class EscrowCapsule(Base):
    __tablename__ = "escrow_capsules"
    __table_args__ = (
        ForeignKeyConstraint(["case_id", "epoch"], ["case_keys.case_id", "case_keys.epoch"]),
    )

    case_id: Mapped[str] = mapped_column(ID, primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    depositor_id: Mapped[str] = mapped_column(ID, ForeignKey("accounts.id"), primary_key=True)
    policy_fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The capsule as JSON: sealed boxes only officers can open.
    capsule: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[int] = mapped_column(BigInteger)


class Dispute(Base):
    __tablename__ = "disputes"
    __table_args__ = (
        CheckConstraint("kind IN ('client', 'legal')", name="kind"),
        CheckConstraint("state IN ('pending', 'approved', 'exported')", name="state"),
        Index(None, "case_id"),
        Index(None, "requester_id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    case_id: Mapped[str] = mapped_column(ID, ForeignKey("cases.id"))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    requester_id: Mapped[str | None] = mapped_column(ID, ForeignKey("accounts.id"), nullable=True)
    # The request document as JSON (the reason is sealed to the officers).
    document: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class DisputeApproval(Base):
    __tablename__ = "dispute_approvals"

    dispute_id: Mapped[str] = mapped_column(ID, ForeignKey("disputes.id"), primary_key=True)
    officer_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    approval: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[int] = mapped_column(BigInteger)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    # Hash-chained and append-only (storage/audit.py); ids and fingerprints, no content.
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(128))
    detail: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


def table(model: type[Base]) -> Table:
    """The Core :class:`Table` of a mapped class (typed; ``__table__`` is a FromClause)."""
    return cast(Table, model.__table__)
