"""Alert rules (the threshold lines of a scope or a plan tier's scope type) and where an alert
channel was defined (``source``: the admin API or the config file).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Constraint and index names follow costwarden.storage.schema.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("tier", sa.Text(), nullable=False),
        sa.Column("limit_name", sa.Text(), nullable=False),
        sa.Column("thresholds", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_rules"),
        sa.UniqueConstraint(
            "kind", "org_id", "scope", "subject", "tier", "limit_name",
            name="uq_alert_rules_kind_org_id_scope_subject_tier_limit_name",
        ),  # fmt: skip
    )
    with op.batch_alter_table("alert_channels") as batch:
        batch.add_column(
            sa.Column("source", sa.Text(), nullable=False, server_default="api")
        )


def downgrade() -> None:
    with op.batch_alter_table("alert_channels") as batch:
        batch.drop_column("source")
    op.drop_table("alert_rules")
