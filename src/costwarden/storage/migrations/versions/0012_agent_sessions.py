"""Agent sessions (costwarden.sessions): the state of every session that left ``active``
(agent_sessions), each of its transitions (session_transitions), the escalations a human
resolves (escalations), and an index to sum a session's ledger rows.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

Constraint and index names follow costwarden.storage.schema.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHEN = sa.DateTime(timezone=True)


def _money() -> sa.types.TypeEngine[Any]:
    # NUMERIC(24, 12) on PostgreSQL, the exact decimal text on SQLite (storage.sqltypes.Money)
    if op.get_bind().dialect.name == "sqlite":
        return sa.String(40)
    return sa.Numeric(24, 12)


def upgrade() -> None:
    op.create_table(
        "agent_sessions",
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("wake_at", _WHEN, nullable=True),
        sa.Column("escalation_id", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("org_id", "session_id", name="pk_agent_sessions"),
    )
    op.create_index("ix_agent_sessions_state_wake_at", "agent_sessions", ["state", "wake_at"])
    op.create_table(
        "session_transitions",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("before", sa.Text(), nullable=False),
        sa.Column("after", sa.Text(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("at", _WHEN, nullable=False),
        sa.Column("wake_at", _WHEN, nullable=True),
        sa.Column("escalation_id", sa.Text(), nullable=True),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_session_transitions"),
    )
    op.create_index(
        "ix_session_transitions_org_id_session_id_at",
        "session_transitions",
        ["org_id", "session_id", "at"],
    )
    op.create_table(
        "escalations",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("resolved_at", _WHEN, nullable=True),
        sa.Column("resolved_by", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("extra_budget_usd", _money(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_escalations"),
    )
    op.create_index("ix_escalations_org_id_status", "escalations", ["org_id", "status"])
    op.create_index("ix_ledger_org_id_session_id", "ledger", ["org_id", "session_id"])


def downgrade() -> None:
    op.drop_index("ix_ledger_org_id_session_id", table_name="ledger")
    for table in ("escalations", "session_transitions", "agent_sessions"):
        op.drop_table(table)
