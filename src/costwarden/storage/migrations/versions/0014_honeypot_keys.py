"""Honeypot keys: ``honeypot`` (a key answered exactly as an unknown one, its use a critical
alert) and ``honeypot_action`` (``alert``, or ``switch_off_org``: the org's kill switch
turned on at the first use); every existing key is an ordinary one (false, 'alert').

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "virtual_keys",
        sa.Column("honeypot", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "virtual_keys",
        sa.Column("honeypot_action", sa.Text(), nullable=False, server_default="alert"),
    )


def downgrade() -> None:
    with op.batch_alter_table("virtual_keys") as batch:  # SQLite: the table remade
        batch.drop_column("honeypot_action")
        batch.drop_column("honeypot")
