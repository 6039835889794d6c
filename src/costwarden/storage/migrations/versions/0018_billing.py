"""Billing webhooks (costwarden.billing): the provider's events received (``billing_events``,
one row per event id: idempotency), the customer -> org map (``billing_customers``), each
subscription's state and last applied order key (``billing_subscriptions``) and each org's
payment state (``billing_orgs``).

New tables: no row of any other table is touched.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03

Constraint and index names follow costwarden.storage.schema.NAMING_CONVENTION.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "billing_events",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_billing_events"),
    )
    op.create_table(
        "billing_customers",
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_billing_customers"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name="fk_billing_customers_org_id_orgs"
        ),
    )
    op.create_table(
        "billing_subscriptions",
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("tier", sa.Text(), nullable=True),
        sa.Column("last_order", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", name="pk_billing_subscriptions"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name="fk_billing_subscriptions_org_id_orgs"
        ),
    )
    op.create_index(
        "ix_billing_subscriptions_org_id", "billing_subscriptions", ["org_id"]
    )
    op.create_table(
        "billing_orgs",
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("last_order", sa.BigInteger(), nullable=False),
        sa.Column("grace_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("invoice_id", sa.Text(), nullable=True),
        sa.Column("suspended_by_billing", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", name="pk_billing_orgs"),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name="fk_billing_orgs_org_id_orgs"),
    )


def downgrade() -> None:
    op.drop_table("billing_orgs")
    op.drop_index("ix_billing_subscriptions_org_id", table_name="billing_subscriptions")
    op.drop_table("billing_subscriptions")
    op.drop_table("billing_customers")
    op.drop_table("billing_events")
