"""The ledger in monthly partitions on PostgreSQL; ix_ledger_org_id becomes (org_id, ts).

On PostgreSQL the ledger becomes ``PARTITION BY RANGE (request_id)``: a partition per UTC
month (``ledger_pYYYYMM``, the month's request-id range: see costwarden.storage.partitions)
and the DEFAULT partition ``ledger_default`` for every other id. Retention then drops a
month's partition instead of deleting its rows. The table is rebuilt: the old one renamed,
the partitioned one created with the same columns, partitions made for the months the
existing rows span and the current and next two, the rows copied, the old table dropped,
and only then the primary key and indexes made (under the old names, which are free again:
building them once over the copied rows is faster than keeping them up during the copy).

On both dialects the index on org_id alone becomes one on (org_id, ts): the request log
filters an org and a time range, newest first.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-09

Constraint and index names follow costwarden.storage.schema.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from costwarden.storage.partitions import DEFAULT_PARTITION, months_ahead, months_between

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
_OLD = "ledger_0007"  # the unpartitioned table while its rows are copied
_PARTITIONED = "ledger_0008"  # the partitioned one, on the way down


def _columns() -> list[sa.Column[object]]:
    """The ledger's columns as migrations 0001 and 0007 made them (PostgreSQL types)."""
    return [
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("day", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=True),
        sa.Column("project_id", sa.Text(), nullable=True),
        sa.Column("key_id", sa.Text(), nullable=True),
        sa.Column("end_user", sa.Text(), nullable=True),
        sa.Column("session_id", sa.Text(), nullable=True),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=True),
        sa.Column("requested_model", sa.Text(), nullable=True),
        sa.Column("served_model", sa.Text(), nullable=True),
        sa.Column("streamed", sa.Boolean(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Numeric(24, 12), nullable=False),
        sa.Column("cost_estimated", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("overhead_ms", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("written_ms", sa.BigInteger(), nullable=True),
    ]


def _copy(source: str) -> None:
    names = ", ".join(c.name for c in _columns())
    op.execute(f"INSERT INTO ledger ({names}) SELECT {names} FROM {source}")


def _keys(org_index: tuple[str, list[str]]) -> None:
    op.create_primary_key("pk_ledger", "ledger", ["request_id"])
    op.create_index("ix_ledger_ts", "ledger", ["ts"])
    op.create_index("ix_ledger_day", "ledger", ["day"])
    op.create_index(org_index[0], "ledger", org_index[1])
    op.create_index("ix_ledger_written_ms", "ledger", ["written_ms"])


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index("ix_ledger_org_id", table_name="ledger")
        op.create_index("ix_ledger_org_id_ts", "ledger", ["org_id", "ts"])
        return
    first, last = op.get_bind().execute(sa.text("SELECT min(ts), max(ts) FROM ledger")).one()
    op.rename_table("ledger", _OLD)
    op.create_table("ledger", *_columns(), postgresql_partition_by="RANGE (request_id)")
    op.execute(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF ledger DEFAULT")
    now = datetime.now(UTC)
    months = set(months_ahead(now))
    if first is not None:
        months.update(months_between(first, last))
    for month in sorted(months):
        op.execute(month.create_sql())
    _copy(_OLD)
    op.drop_table(_OLD)  # its primary key and indexes go with it: their names are free
    _keys(("ix_ledger_org_id_ts", ["org_id", "ts"]))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index("ix_ledger_org_id_ts", table_name="ledger")
        op.create_index("ix_ledger_org_id", "ledger", ["org_id"])
        return
    op.rename_table("ledger", _PARTITIONED)
    # The parent's key and indexes keep their names through the rename: free them first.
    op.execute(f"ALTER TABLE {_PARTITIONED} DROP CONSTRAINT pk_ledger")
    for name in ("ix_ledger_ts", "ix_ledger_day", "ix_ledger_org_id_ts", "ix_ledger_written_ms"):
        op.drop_index(name, table_name=_PARTITIONED)
    op.create_table("ledger", *_columns())
    _copy(_PARTITIONED)
    op.drop_table(_PARTITIONED)  # and every partition with it
    _keys(("ix_ledger_org_id", ["org_id"]))
