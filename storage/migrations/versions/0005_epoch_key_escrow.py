"""Epoch keys record the escrow binding their creator signed (issue 11): the policy
fingerprint the key was made under, or "none". Keys stored before this revision were
made under the v1 commitment, which named no policy: they become "none", so they are
never escrowed afterwards (docs/DISPUTES.md).

Revision ID: 0005_escrow
Revises: 0004_abuse
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005_escrow"
down_revision: str | None = "0004_abuse"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column(
        "case_keys",
        sa.Column("escrow", sa.String(64), nullable=False, server_default="none"),
    )


def downgrade() -> None:
    with op.batch_alter_table("case_keys") as batch:
        batch.drop_column("escrow")
