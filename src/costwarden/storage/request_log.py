"""The request log: ledger rows found by filters, newest first, a page at a time.

Pages are keyset pages over ``(ts, request_id)``: the next page starts after the last row of
this one, so rows written meanwhile never shift it (no OFFSET). The cursor that carries the
position also carries a digest of the query it belongs to (``analytics.query`` makes and
checks it): a cursor from another query is refused, not silently applied.

Cost bounds compare exactly on PostgreSQL (NUMERIC). On SQLite the ledger keeps money as
decimal text, so the bounds compare its value as a double (15 significant digits).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from costwarden.core.records import LedgerRecord
from costwarden.storage.db import Bind, connect_read
from costwarden.storage.ledger_rows import row_to_record
from costwarden.storage.schema import ledger

_c = ledger.c
# What a filter compares: the ledger's own column for each name the API takes.
COLUMNS: dict[str, Any] = {
    "org_id": _c.org_id, "project_id": _c.project_id, "key_id": _c.key_id,
    "end_user": _c.end_user, "session_id": _c.session_id, "provider": _c.provider,
    "model": sa.func.coalesce(_c.served_model, _c.requested_model), "status": _c.status,
}  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class LogQuery:
    since: datetime
    until: datetime
    filters: Mapping[str, str] = dataclasses.field(default_factory=dict)
    min_cost: Decimal | None = None
    max_cost: Decimal | None = None
    tenant: str | None = None  # the one org the caller may see; None: every org


def _cost(conn: sa.Connection) -> Any:
    if conn.dialect.name == "sqlite":
        return sa.cast(_c.cost_usd, sa.Float)
    return _c.cost_usd


def search(
    bind: Bind, q: LogQuery, *, limit: int, after: tuple[datetime, str] | None = None
) -> list[LedgerRecord]:
    """Up to ``limit`` records matching ``q``, newest first, after the position ``after``
    (the last row of the previous page)."""
    with connect_read(bind) as conn:
        stmt = sa.select(ledger).where(_c.ts >= q.since, _c.ts < q.until)
        for name, value in q.filters.items():
            stmt = stmt.where(COLUMNS[name] == value)
        if q.tenant is not None:
            stmt = stmt.where(_c.org_id == q.tenant)
        cost = _cost(conn)
        if q.min_cost is not None:
            stmt = stmt.where(cost >= q.min_cost)
        if q.max_cost is not None:
            stmt = stmt.where(cost <= q.max_cost)
        if after is not None:
            ts, request_id = after
            stmt = stmt.where(
                sa.or_(_c.ts < ts, sa.and_(_c.ts == ts, _c.request_id < request_id))
            )
        stmt = stmt.order_by(_c.ts.desc(), _c.request_id.desc()).limit(limit)
        return [row_to_record(row) for row in conn.execute(stmt).mappings()]


def find(bind: Bind, request_id: str, *, tenant: str | None = None) -> LedgerRecord | None:
    """One request's record (None if there is none, or it is not the tenant's)."""
    stmt = sa.select(ledger).where(_c.request_id == request_id)
    if tenant is not None:
        stmt = stmt.where(_c.org_id == tenant)
    with connect_read(bind) as conn:
        row = conn.execute(stmt).mappings().first()
    return None if row is None else row_to_record(row)
