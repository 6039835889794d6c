"""The security engine: what the prompt scan acted on, per ledger row (``ledger.security``, a
JSON array of findings -- detector, family, severity, confidence, action, location and a
keyed hash of the span, never the text; NULL for a request with nothing found), and the
orgs' and keys' policy layers (``security_policies``).

Adding a nullable column with no default rewrites no row, on SQLite as on PostgreSQL (where
it reaches every partition of the ledger at once).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02

Constraint and index names follow costwarden.storage.schema.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("ledger", sa.Column("security", sa.Text(), nullable=True))
    op.create_table(
        "security_policies",
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name="fk_security_policies_org_id_orgs"
        ),
        sa.PrimaryKeyConstraint("org_id", "key_id", name="pk_security_policies"),
    )


def downgrade() -> None:
    op.drop_table("security_policies")
    with op.batch_alter_table("ledger") as batch:  # SQLite: the table remade
        batch.drop_column("security")
