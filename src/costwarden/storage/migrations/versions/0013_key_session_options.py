"""Agent-session options of a virtual key: ``session_clean_stop`` (a budget reached answers
as a clean completion) and ``session_budget_note`` (winding down, the model is told its
remaining budget); both off for every existing key.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("session_clean_stop", "session_budget_note")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column(
            "virtual_keys",
            sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false()),
        )


def downgrade() -> None:
    with op.batch_alter_table("virtual_keys") as batch:  # SQLite: the table remade
        for name in reversed(COLUMNS):
            batch.drop_column(name)
