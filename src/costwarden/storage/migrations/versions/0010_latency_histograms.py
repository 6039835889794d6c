"""Latency histograms of the analytics rollups: requests per UTC hour (rollup_latency_hourly)
and per UTC day (rollup_latency_daily), org and latency bucket (costwarden.analytics.latency),
from which the overview estimates p50 / p95 / p99 latency.

The tables start empty: the rollup job fills an hour's histogram when it recomputes that
hour, and ``costwarden.storage.rollups.repair`` (or the daily reconciliation, which finds
a day whose histogram does not count its requests) fills older days.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05

Constraint and index names follow costwarden.storage.schema.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    ("rollup_latency_hourly", "hour", sa.DateTime(timezone=True)),
    ("rollup_latency_daily", "day", sa.Text()),
)


def upgrade() -> None:
    for table, bucket, kind in TABLES:
        op.create_table(
            table,
            sa.Column(bucket, kind, nullable=False),
            sa.Column("org_id", sa.Text(), nullable=False),
            sa.Column("bucket", sa.SmallInteger(), nullable=False),
            sa.Column("requests", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint(bucket, "org_id", "bucket", name=f"pk_{table}"),
        )


def downgrade() -> None:
    for table, _, _ in reversed(TABLES):
        op.drop_table(table)
