"""Limits and plan tiers: limits, tiers, org_tiers, policy_state.

Revision ID: 0002
Revises: 0001
Create Date: 2024-11-28

``policy_state`` holds one row (id 1) whose ``version`` every write to limits or tiers bumps
in the same transaction, so gateway processes poll a single row to learn that the policy
changed; it is created here at version 0. Constraint names follow
costwarden.storage.schema.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "limits",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_limits"),
        sa.UniqueConstraint(
            "org_id",
            "scope",
            "subject",
            "metric",
            "period",
            name="uq_limits_org_id_scope_subject_metric_period",
        ),
    )
    op.create_table(
        "tiers",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("limits", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_tiers"),
    )
    op.create_table(
        "org_tiers",
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("tier", sa.Text(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("org_id", name="pk_org_tiers"),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name="fk_org_tiers_org_id_orgs"),
    )
    policy_state = op.create_table(
        "policy_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policy_state"),
    )
    now = datetime.now(UTC)
    if op.get_bind().dialect.name == "sqlite":
        # Stored as naive UTC text on SQLite, as costwarden.storage.sqltypes.UTCDateTime does.
        now = now.replace(tzinfo=None)
    op.bulk_insert(policy_state, [{"id": 1, "version": 0, "updated_at": now}])


def downgrade() -> None:
    op.drop_table("policy_state")
    op.drop_table("org_tiers")
    op.drop_table("tiers")
    op.drop_table("limits")
