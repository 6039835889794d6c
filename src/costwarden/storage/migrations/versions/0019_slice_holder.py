"""Leased budget slices (costwarden.budgets.leased): ``ledger.slice_holder``, the slice lease
of the gateway process whose slices admitted the row (NULL for every other row).

Should that process die, a survivor sums its rows to free what the purge of its slices had to
count as spent. A nullable column without a default: adding it rewrites no row. No index:
that sum is rare and runs off the request path over one org's window (``ix_ledger_org_id_ts``),
while an index would cost every insert.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("ledger", sa.Column("slice_holder", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("slice_holder")
