"""Protocol version 2 (issue 10): signed box keys, counselor certificates, signed
receipts, the encrypted preferences blob, and account secrets sealed at rest.

* ``accounts.salt`` and ``accounts.wrapped_keys`` become ``salt_enc`` and
  ``wrapped_keys_enc``: every existing value is sealed under the hub's data key
  (storage/atrest.py, bound to its column and account). The conversion needs that key,
  which only the hub has: ``chat-server`` passes it in ``config.attributes["data_key"]``
  (storage/engine.py). Run from the ``alembic`` CLI on a database with accounts, this
  migration refuses (nothing is changed) instead of leaving secrets in clear.
* ``accounts.box_sig`` and ``accounts.cert`` (NULL for existing accounts: a version-1
  account attests its box key at its next login; certificates come from the offline
  ceremony, docs/DISPUTES.md).
* ``receipts.chain_hash`` and ``receipts.sig`` (NULL for receipts stored before).
* ``prefs``: one encrypted blob per account with a compare-and-swap version.

Renames are plain ``ALTER TABLE ... RENAME COLUMN`` (SQLite >= 3.25 and PostgreSQL), not
a batch table copy, so the foreign keys that point at ``accounts`` are not disturbed.

Revision ID: 0003_v2
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.atrest import AtRestCipher, context

revision: str = "0003_v2"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(64)


def _cipher_for(rows: list[sa.Row[tuple[str, bytes, bytes]]]) -> AtRestCipher | None:
    """The data-key cipher, needed only if there are rows to convert."""
    if not rows:
        return None
    data_key = op.get_context().config.attributes.get("data_key")  # type: ignore[union-attr]
    if data_key is None:
        raise RuntimeError(
            "migration 0003 converts account secrets under the hub's data key: run it with "
            "chat-server (which has the key), not with the alembic command"
        )
    return AtRestCipher(data_key)


def _convert_secrets(*, seal: bool) -> None:
    """Seal (upgrade) or open (downgrade) every account's salt and wrapped keys."""
    conn = op.get_bind()
    rows = list(conn.execute(sa.text("SELECT id, salt_enc, wrapped_keys_enc FROM accounts")))
    cipher = _cipher_for(rows)
    for account_id, salt, wrapped in rows:
        assert cipher is not None
        convert = cipher.seal_bytes if seal else cipher.open_bytes
        conn.execute(
            sa.text(
                "UPDATE accounts SET salt_enc = :salt, wrapped_keys_enc = :wrapped WHERE id = :id"
            ),
            {
                "id": account_id,
                "salt": convert(bytes(salt), context("accounts.salt", account_id)),
                "wrapped": convert(bytes(wrapped), context("accounts.wrapped_keys", account_id)),
            },
        )


def upgrade() -> None:
    op.execute("ALTER TABLE accounts RENAME COLUMN salt TO salt_enc")
    op.execute("ALTER TABLE accounts RENAME COLUMN wrapped_keys TO wrapped_keys_enc")
    _convert_secrets(seal=True)
    op.add_column("accounts", sa.Column("box_sig", sa.LargeBinary(), nullable=True))
    op.add_column("accounts", sa.Column("cert", sa.LargeBinary(), nullable=True))
    op.add_column("receipts", sa.Column("chain_hash", sa.LargeBinary(), nullable=True))
    op.add_column("receipts", sa.Column("sig", sa.LargeBinary(), nullable=True))
    op.create_table(
        "prefs",
        sa.Column("account_id", ID, nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="pk_prefs"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_prefs_account_id_accounts"
        ),
    )


def downgrade() -> None:
    """Back to version 1: signatures, certificates and prefs are dropped (a version-1
    hub has no place for them) and the secrets are opened back into clear columns."""
    op.drop_table("prefs")
    for table, column in (
        ("receipts", "sig"),
        ("receipts", "chain_hash"),
        ("accounts", "cert"),
        ("accounts", "box_sig"),
    ):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    _convert_secrets(seal=False)
    op.execute("ALTER TABLE accounts RENAME COLUMN salt_enc TO salt")
    op.execute("ALTER TABLE accounts RENAME COLUMN wrapped_keys_enc TO wrapped_keys")
