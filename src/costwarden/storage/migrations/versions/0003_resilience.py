"""Resilience: switches, audit_log, breaker_transitions, route_fallbacks.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21

Constraint and index names follow costwarden.storage.schema.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "switches",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=True),
        sa.Column("feature", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_switches"),
    )
    op.create_index("ix_switches_version", "switches", ["version"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("old_value", sa.Text(), nullable=True),
        sa.Column("new_value", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_ts", "audit_log", ["ts"])
    op.create_table(
        "breaker_transitions",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("deployment", sa.Text(), nullable=False),
        sa.Column("from_state", sa.Text(), nullable=False),
        sa.Column("to_state", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_breaker_transitions"),
    )
    op.create_index("ix_breaker_transitions_ts", "breaker_transitions", ["ts"])
    op.create_index("ix_breaker_transitions_deployment", "breaker_transitions", ["deployment"])
    op.create_table(
        "route_fallbacks",
        sa.Column("route", sa.Text(), nullable=False),
        sa.Column("fallbacks", sa.Text(), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("route", name="pk_route_fallbacks"),
    )
    op.create_index("ix_route_fallbacks_version", "route_fallbacks", ["version"])


def downgrade() -> None:
    op.drop_table("route_fallbacks")
    op.drop_table("breaker_transitions")
    op.drop_table("audit_log")
    op.drop_table("switches")
