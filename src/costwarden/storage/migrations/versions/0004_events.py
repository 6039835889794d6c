"""Events: event_log (the durable, ordered event stream, a row per batch) and event_sequence
(its id counter).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Constraint and index names follow costwarden.storage.schema.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_log",
        sa.Column("first_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("first_id", name="pk_event_log"),
    )
    op.create_index("ix_event_log_ts_ms", "event_log", ["ts_ms"])
    sequence = op.create_table(
        "event_sequence",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_event_sequence"),
    )
    op.bulk_insert(sequence, [{"name": "events", "last_id": 0}])


def downgrade() -> None:
    op.drop_table("event_sequence")
    op.drop_table("event_log")
