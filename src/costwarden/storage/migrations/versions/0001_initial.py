"""Initial schema: orgs, projects, virtual_keys, ledger.

Revision ID: 0001
Revises:
Create Date: 2024-11-21

Money is NUMERIC(24, 12) on PostgreSQL and the exact decimal string (VARCHAR) on SQLite,
where NUMERIC affinity would coerce it to a float; see costwarden.storage.sqltypes.
Constraint names follow costwarden.storage.schema.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(24, 12).with_variant(sa.String(40), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "orgs",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_orgs"),
        sa.UniqueConstraint("name", name="uq_orgs_name"),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name="fk_projects_org_id_orgs"),
        sa.UniqueConstraint("org_id", "name", name="uq_projects_org_id_name"),
    )
    op.create_table(
        "virtual_keys",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("project_id", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_virtual_keys"),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name="fk_virtual_keys_org_id_orgs"),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_virtual_keys_project_id_projects"
        ),
        sa.UniqueConstraint("key_hash", name="uq_virtual_keys_key_hash"),
    )
    op.create_index("ix_virtual_keys_updated_at", "virtual_keys", ["updated_at"])
    op.create_table(
        "ledger",
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
        sa.Column("cost_usd", MONEY, nullable=False),
        sa.Column("cost_estimated", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("overhead_ms", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("request_id", name="pk_ledger"),
    )
    op.create_index("ix_ledger_ts", "ledger", ["ts"])
    op.create_index("ix_ledger_day", "ledger", ["day"])
    op.create_index("ix_ledger_org_id", "ledger", ["org_id"])


def downgrade() -> None:
    op.drop_index("ix_ledger_org_id", table_name="ledger")
    op.drop_index("ix_ledger_day", table_name="ledger")
    op.drop_index("ix_ledger_ts", table_name="ledger")
    op.drop_table("ledger")
    op.drop_index("ix_virtual_keys_updated_at", table_name="virtual_keys")
    op.drop_table("virtual_keys")
    op.drop_table("projects")
    op.drop_table("orgs")
