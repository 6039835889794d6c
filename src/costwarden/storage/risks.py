"""What the risk signals read from the ledger: failures per org and project, models used."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from costwarden.alerts.risks import FAILURE_STATUSES, FailureCount
from costwarden.storage.db import Bind, connect_read
from costwarden.storage.schema import ledger, virtual_keys


def recent_activity(
    bind: Bind, org_id: str, since: datetime, window_seconds: int
) -> tuple[list[FailureCount], set[str]]:
    """The org's and each of its projects' requests and failures since ``since`` (ledger
    rows: ``upstream_error`` and ``degraded`` count as failures), and the models it asked
    for in that time."""
    failed = sa.func.sum(sa.case((ledger.c.status.in_(FAILURE_STATUSES), 1), else_=0))
    recent = (ledger.c.org_id == org_id, ledger.c.ts >= since)
    with connect_read(bind) as conn:
        by_project = conn.execute(
            sa.select(ledger.c.project_id, sa.func.count(), failed)
            .where(*recent)
            .group_by(ledger.c.project_id)
            .order_by(ledger.c.project_id)
        ).all()
        models = conn.execute(
            sa.select(ledger.c.requested_model).where(*recent).distinct()
        ).scalars()
        used = {m for m in models if m}
    total = sum(int(r[1]) for r in by_project)
    total_failed = sum(int(r[2] or 0) for r in by_project)
    counts = [FailureCount("org", org_id, total, total_failed, window_seconds)]
    counts.extend(
        FailureCount("project", r[0], int(r[1]), int(r[2] or 0), window_seconds)
        for r in by_project
        if r[0] is not None
    )
    return counts, used


def key_project(bind: Bind, org_id: str, key_id: str) -> str | None | bool:
    """The project of the org's key ``key_id`` (None: no project); False: no such key."""
    with connect_read(bind) as conn:
        row = conn.execute(
            sa.select(virtual_keys.c.project_id).where(
                virtual_keys.c.id == key_id, virtual_keys.c.org_id == org_id
            )
        ).first()
    if row is None:
        return False
    project: str | None = row[0]
    return project
