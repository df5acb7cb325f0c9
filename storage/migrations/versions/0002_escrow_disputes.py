"""Escrow and disputes: escrow policies, consents, capsules, dispute requests and
approvals, and the hash-chained audit log (docs/DISPUTES.md).

Hand-written like 0001, with the constraint names of storage/models.py (NAMING).

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "escrow_policies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("signed_policy", sa.LargeBinary(), nullable=False),
        sa.Column("terms_version", sa.Integer(), nullable=False),
        sa.Column("installed_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_escrow_policies"),
        sa.UniqueConstraint("fingerprint", name="uq_escrow_policies_fingerprint"),
    )
    op.create_table(
        "consents",
        sa.Column("account_id", ID, nullable=False),
        sa.Column("terms_version", sa.Integer(), nullable=False),
        sa.Column("policy_fingerprint", sa.String(64), nullable=False),
        sa.Column("sig", sa.LargeBinary(), nullable=False),
        sa.Column("accepted_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id", "terms_version", "policy_fingerprint", name="pk_consents"
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_consents_account_id_accounts"
        ),
    )
    op.create_table(
        "escrow_capsules",
        sa.Column("case_id", ID, nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("depositor_id", ID, nullable=False),
        sa.Column("policy_fingerprint", sa.String(64), nullable=False),
        sa.Column("capsule", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "case_id", "epoch", "depositor_id", "policy_fingerprint", name="pk_escrow_capsules"
        ),
        sa.ForeignKeyConstraint(
            ["case_id", "epoch"],
            ["case_keys.case_id", "case_keys.epoch"],
            name="fk_escrow_capsules_case_id_epoch_case_keys",
        ),
        sa.ForeignKeyConstraint(
            ["depositor_id"], ["accounts.id"], name="fk_escrow_capsules_depositor_id_accounts"
        ),
    )
    op.create_table(
        "disputes",
        sa.Column("id", ID, nullable=False),
        sa.Column("case_id", ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("requester_id", ID, nullable=True),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_disputes"),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name="fk_disputes_case_id_cases"),
        sa.ForeignKeyConstraint(
            ["requester_id"], ["accounts.id"], name="fk_disputes_requester_id_accounts"
        ),
        sa.CheckConstraint("kind IN ('client', 'legal')", name="ck_disputes_kind"),
        sa.CheckConstraint(
            "state IN ('pending', 'approved', 'exported')", name="ck_disputes_state"
        ),
    )
    op.create_index("ix_disputes_case_id", "disputes", ["case_id"])
    op.create_index("ix_disputes_requester_id", "disputes", ["requester_id"])
    op.create_table(
        "dispute_approvals",
        sa.Column("dispute_id", ID, nullable=False),
        sa.Column("officer_index", sa.Integer(), nullable=False),
        sa.Column("approval", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("dispute_id", "officer_index", name="pk_dispute_approvals"),
        sa.ForeignKeyConstraint(
            ["dispute_id"], ["disputes.id"], name="fk_dispute_approvals_dispute_id_disputes"
        ),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
    )


def downgrade() -> None:
    for name in (
        "audit_log",
        "dispute_approvals",
        "disputes",
        "escrow_capsules",
        "consents",
        "escrow_policies",
    ):
        op.drop_table(name)
