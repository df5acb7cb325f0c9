"""Abuse limits (issue 13): a message nonce is used once per case, so the hub refuses a
replayed ciphertext (``replayed``) instead of storing it as a new message.

A unique index rather than a constraint: SQLite adds it without rebuilding the table,
and it enforces the same thing on both backends. Creating it fails if a database
already holds a replay; such a case had a message its receiver could not verify, and the
duplicate row must be removed by hand first (docs/DECISIONS.md).

Revision ID: 0004_abuse
Revises: 0003_v2
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision: str = "0004_abuse"
down_revision: str | None = "0003_v2"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_messages_case_id_nonce", "messages", ["case_id", "nonce"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_messages_case_id_nonce", table_name="messages")
