"""Hourly slices (rollup_slices_hourly): the narrow slices of each hour, so a range that
starts or ends inside a day reads its partial days' hours from slices, not from the full
hourly cube (about a row per raw row). Daily slices are now summed from them.

The rollup's watermark is dropped, so the job's next run recomputes every hour the ledger
spans and fills the new table (a run is idempotent: it rewrites what it recomputes); until
then the analytics read the raw ledger.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

Constraint and index names follow costwarden.storage.schema.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WATERMARK = "rollup.written_ms"  # storage.rollups.WATERMARK at this revision


def _money() -> sa.types.TypeEngine[Any]:
    # NUMERIC(24, 12) on PostgreSQL, the exact decimal text on SQLite (storage.sqltypes.Money)
    if op.get_bind().dialect.name == "sqlite":
        return sa.String(40)
    return sa.Numeric(24, 12)


def upgrade() -> None:
    op.create_table(
        "rollup_slices_hourly",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("slice", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        *(
            sa.Column(name, sa.BigInteger(), nullable=False)
            for name in ("requests", "input_tokens", "cached_input_tokens",
                         "cache_write_tokens", "output_tokens", "reasoning_tokens")
        ),  # fmt: skip
        sa.Column("cost_usd", _money(), nullable=False),
        sa.Column("cache_savings_usd", _money(), nullable=False),
        sa.Column("latency_us", sa.BigInteger(), nullable=False),
        sa.Column("ttft_us", sa.BigInteger(), nullable=False),
        sa.Column("ttft_count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "hour", "slice", "org_id", "value", name="pk_rollup_slices_hourly"
        ),
    )
    op.execute(sa.text("DELETE FROM analytics_state WHERE name = :n").bindparams(n=_WATERMARK))


def downgrade() -> None:
    op.drop_table("rollup_slices_hourly")
