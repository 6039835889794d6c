"""The newest ledger rows the dashboard lists that no rollup counts: the agent sessions seen
lately and the requests whose scan recorded findings.

Both reads are bounded to the newest :data:`SCAN_ROWS` rows of their window (the ledger's
``ts`` index finds them), so a page stays fast on a ledger of millions of rows: the rollups
have no session dimension, and no index finds the rows with findings alone. On a busy
gateway what is older than that many requests drops off these lists (the analytics and the
request log still hold it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from costwarden.storage.db import Bind, connect_read
from costwarden.storage.schema import ledger

SCAN_ROWS = 10_000  # the newest ledger rows looked through
FINDING_ROWS = 100  # ledger rows with findings read at most (each holds up to 20)


def recent_sessions(
    bind: Bind, since: datetime, tenant: str | None, limit: int
) -> list[tuple[str, str, datetime]]:
    """(org id, session id, last request) of the sessions among the newest
    :data:`SCAN_ROWS` requests since ``since`` (of org ``tenant`` only, if given), latest
    first, at most ``limit``. The scan is bounded so the page stays fast on a big ledger
    (the rollups have no session dimension)."""
    c = ledger.c
    newest = sa.select(c.org_id, c.session_id, c.ts).where(c.ts >= since)
    if tenant is not None:
        newest = newest.where(c.org_id == tenant)
    scanned = newest.order_by(c.ts.desc()).limit(SCAN_ROWS).subquery()
    last = sa.func.max(scanned.c.ts).label("last")
    stmt = (
        sa.select(scanned.c.org_id, scanned.c.session_id, last)
        .where(scanned.c.session_id.is_not(None), scanned.c.org_id.is_not(None))
        .group_by(scanned.c.org_id, scanned.c.session_id)
        .order_by(last.desc())
        .limit(limit)
    )
    with connect_read(bind) as conn:
        rows = conn.execute(stmt).all()
    out = []
    for org_id, session_id, ts in rows:
        if isinstance(ts, str):  # SQLite's max() of a timestamp column is its text
            ts = datetime.fromisoformat(ts)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        out.append((org_id, session_id, ts))
    return out


def recent_findings(
    bind: Bind, since: datetime, tenant: str | None, limit: int = FINDING_ROWS
) -> list[dict[str, Any]]:
    """The ledger rows whose scan recorded findings among the newest :data:`SCAN_ROWS`
    rows since ``since`` (of org ``tenant`` only, if given), newest first, at most
    ``limit``: only the columns the page shows. The scan is bounded so the page stays fast
    on a big ledger: no index finds the rows with findings alone."""
    c = ledger.c
    newest = sa.select(c.request_id, c.ts, c.org_id, c.key_id, c.security).where(c.ts >= since)
    if tenant is not None:
        newest = newest.where(c.org_id == tenant)
    scanned = newest.order_by(c.ts.desc()).limit(SCAN_ROWS).subquery()
    stmt = (
        sa.select(scanned)
        .where(scanned.c.security.is_not(None))
        .order_by(scanned.c.ts.desc(), scanned.c.request_id.desc())
        .limit(limit)
    )
    with connect_read(bind) as conn:
        return [dict(row) for row in conn.execute(stmt).mappings()]
