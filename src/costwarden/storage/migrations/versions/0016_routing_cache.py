"""Routing and the response cache: why the route served a request where it did
(``ledger.route_reason``, text, NULL when the route said nothing), what a response-cache hit
saved (``ledger.saved_usd``: what the call it avoided would have cost; 0 on any other row),
and that saving summed per bucket in every rollup (``saved_usd``, beside ``cost_usd``; not
``cache_savings_usd``, the provider's prompt-caching savings).

``saved_usd`` is NOT NULL with a server default of 0: adding such a column rewrites no row
on SQLite, nor on PostgreSQL (a constant default is kept in the catalog since PostgreSQL
11; on the partitioned ledger the column reaches every partition at once), and every row
already there reads 0, which it is: nothing was cached before.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02

Constraint and index names follow costwarden.storage.schema.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLLUPS = (
    "rollup_hourly", "rollup_daily", "rollup_tags_hourly", "rollup_tags_daily",
    "rollup_slices_hourly", "rollup_slices_daily",
)  # fmt: skip


def _money() -> sa.types.TypeEngine[Any]:
    # NUMERIC(24, 12) on PostgreSQL, the exact decimal text on SQLite (storage.sqltypes.Money)
    if op.get_bind().dialect.name == "sqlite":
        return sa.String(40)
    return sa.Numeric(24, 12)


def _saved() -> sa.Column[Any]:
    return sa.Column("saved_usd", _money(), nullable=False, server_default="0")


def upgrade() -> None:
    op.add_column("ledger", sa.Column("route_reason", sa.Text(), nullable=True))
    op.add_column("ledger", _saved())
    for table in ROLLUPS:
        op.add_column(table, _saved())


def downgrade() -> None:
    for table in ROLLUPS:
        with op.batch_alter_table(table) as batch:  # SQLite: the table remade
            batch.drop_column("saved_usd")
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("saved_usd")
        batch.drop_column("route_reason")
