"""The daily slices' cost as a double (rollup_slices_daily.cost_rank) and an index that reads
a day's slice costliest first: the lists the top-N read (costwarden.analytics.ranking).

Existing rows get theirs from their exact cost here; the rollup job writes it with every
day it recomputes.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

Constraint and index names follow costwarden.storage.schema.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_rollup_slices_daily_day_slice_cost_rank"


def upgrade() -> None:
    op.add_column("rollup_slices_daily", sa.Column("cost_rank", sa.Float(), nullable=True))
    slices = sa.table("rollup_slices_daily", sa.column("cost_usd"), sa.column("cost_rank"))
    op.execute(slices.update().values(cost_rank=sa.cast(slices.c.cost_usd, sa.Float())))
    op.create_index(INDEX, "rollup_slices_daily", ["day", "slice", "cost_rank"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="rollup_slices_daily")
    with op.batch_alter_table("rollup_slices_daily") as batch:  # SQLite: the table remade
        batch.drop_column("cost_rank")
