"""Analytics rollups: hourly and daily totals by org, project, key, end user, provider, model
and status (rollup_hourly, rollup_daily), by tag (rollup_tags_hourly, rollup_tags_daily), per
day by org or one dimension (rollup_slices_daily: what most queries read), the
job's watermark (analytics_state), and ledger.written_ms: when a row reached the ledger (the
rollup job's watermark runs over it, so a row written late is rolled up into its own hour).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

Constraint and index names follow costwarden.storage.schema.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
_DIMS = ("org_id", "project_id", "key_id", "end_user", "provider", "model", "status")


def _money() -> sa.types.TypeEngine[Any]:
    # NUMERIC(24, 12) on PostgreSQL, the exact decimal text on SQLite (storage.sqltypes.Money)
    if op.get_bind().dialect.name == "sqlite":
        return sa.String(40)
    return sa.Numeric(24, 12)


def _measures() -> list[sa.Column[Any]]:
    return [
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", _money(), nullable=False),
        sa.Column("cache_savings_usd", _money(), nullable=False),
        sa.Column("latency_us", sa.BigInteger(), nullable=False),
        sa.Column("ttft_us", sa.BigInteger(), nullable=False),
        sa.Column("ttft_count", sa.BigInteger(), nullable=False),
    ]


def upgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(sa.Column("written_ms", sa.BigInteger(), nullable=True))
    op.create_index("ix_ledger_written_ms", "ledger", ["written_ms"])
    for table, bucket in (("rollup_hourly", sa.Column("hour", TS, nullable=False)),
                          ("rollup_daily", sa.Column("day", sa.Text(), nullable=False))):
        op.create_table(
            table,
            bucket,
            *(sa.Column(d, sa.Text(), nullable=False) for d in _DIMS),
            *_measures(),
            sa.PrimaryKeyConstraint(bucket.name, *_DIMS, name=f"pk_{table}"),
        )
    for table, bucket in (("rollup_tags_hourly", sa.Column("hour", TS, nullable=False)),
                          ("rollup_tags_daily", sa.Column("day", sa.Text(), nullable=False))):
        op.create_table(
            table,
            bucket,
            sa.Column("org_id", sa.Text(), nullable=False),
            sa.Column("tag", sa.Text(), nullable=False),
            *_measures(),
            sa.PrimaryKeyConstraint(bucket.name, "org_id", "tag", name=f"pk_{table}"),
        )
    op.create_table(
        "rollup_slices_daily",
        sa.Column("day", sa.Text(), nullable=False),
        sa.Column("slice", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        *_measures(),
        sa.PrimaryKeyConstraint("day", "slice", "org_id", "value", name="pk_rollup_slices_daily"),
    )
    op.create_table(
        "analytics_state",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_analytics_state"),
    )


def downgrade() -> None:
    op.drop_table("analytics_state")
    op.drop_table("rollup_slices_daily")
    for table in ("rollup_tags_daily", "rollup_tags_hourly", "rollup_daily", "rollup_hourly"):
        op.drop_table(table)
    op.drop_index("ix_ledger_written_ms", table_name="ledger")
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("written_ms")
