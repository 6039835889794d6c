"""Reading the ledger back: usage reports and raw rows.

Usage reports answer "what did we spend, on what, when" for the admin API and the CLI. Money
is summed in the database with :func:`costwarden.storage.db.money_sum` (``sum(numeric)`` on
PostgreSQL, the exact ``dsum`` aggregate on SQLite) and totalled in Python with Decimals, so
the report equals the exact sum of the recorded costs on both backends. Rows are sorted in
Python so that the order does not depend on the database's collation or NULL ordering.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from costwarden.core.money import MONEY_CONTEXT
from costwarden.core.records import LedgerRecord
from costwarden.storage.db import Bind, connect_read, money_sum
from costwarden.storage.ledger_rows import row_to_record
from costwarden.storage.repo import org_id_by_name
from costwarden.storage.schema import ledger, orgs
from costwarden.storage.sqltypes import ensure_utc, money_str

logger = logging.getLogger(__name__)

_IN_CHUNK = 500  # stay well under SQLite's bound-parameter limit


@dataclasses.dataclass(frozen=True, slots=True)
class UsageRow:
    """Usage of one model by one org on one UTC day."""

    org: str | None  # org name; the raw org_id if the org is unknown; None for no org
    model: str | None  # served_model, else requested_model
    day: str  # 'YYYY-MM-DD', UTC
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "org": self.org,
            "model": self.model,
            "day": self.day,
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": money_str(self.cost_usd),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class UsageReport:
    """Totals plus per org/model/day rows (ordered by day, org, model)."""

    requests: int
    cost_usd: Decimal
    input_tokens: int
    output_tokens: int
    rows: list[UsageRow]

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready dict; money as exact decimal strings, never floats."""
        return {
            "requests": self.requests,
            "cost_usd": money_str(self.cost_usd),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "rows": [row.to_json_dict() for row in self.rows],
        }


def usage_report(
    bind: Bind, *, org: str | None = None, since: datetime | None = None
) -> UsageReport:
    """Usage grouped by org, model and day; only org ``org`` (by name) and/or ``ts >= since``.

    Raises NotFound if ``org`` names no org.
    """
    model = sa.func.coalesce(ledger.c.served_model, ledger.c.requested_model).label("model")
    org_label = sa.func.coalesce(orgs.c.name, ledger.c.org_id).label("org")
    stmt = (
        sa.select(
            org_label,
            model,
            ledger.c.day,
            sa.func.count().label("requests"),
            sa.func.coalesce(sa.func.sum(ledger.c.input_tokens), 0).label("input_tokens"),
            sa.func.coalesce(sa.func.sum(ledger.c.output_tokens), 0).label("output_tokens"),
            money_sum(ledger.c.cost_usd).label("cost_usd"),
        )
        .select_from(ledger.outerjoin(orgs, orgs.c.id == ledger.c.org_id))
        .group_by(org_label, model, ledger.c.day)
    )
    if since is not None:
        stmt = stmt.where(ledger.c.ts >= ensure_utc(since, "since"))
    with connect_read(bind) as conn:
        if org is not None:
            stmt = stmt.where(ledger.c.org_id == org_id_by_name(conn, org))
        result = conn.execute(stmt).all()
    rows = [
        UsageRow(
            org=r.org,
            model=r.model,
            day=r.day,
            requests=int(r.requests),
            input_tokens=int(r.input_tokens),
            output_tokens=int(r.output_tokens),
            cost_usd=r.cost_usd if r.cost_usd is not None else Decimal(0),
        )
        for r in result
    ]
    rows.sort(key=lambda r: (r.day, r.org or "", r.model or ""))
    total = Decimal(0)
    for row in rows:
        total = MONEY_CONTEXT.add(total, row.cost_usd)
    return UsageReport(
        requests=sum(r.requests for r in rows),
        cost_usd=total,
        input_tokens=sum(r.input_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        rows=rows,
    )


def ledger_rows(
    bind: Bind, request_ids: list[str] | None = None, limit: int = 100
) -> list[LedgerRecord]:
    """Ledger rows, newest first: those with the given request ids (all of them, ``limit``
    does not apply), or else the ``limit`` most recent."""
    order = (ledger.c.ts.desc(), ledger.c.request_id.desc())
    records: list[LedgerRecord] = []
    with connect_read(bind) as conn:
        if request_ids is None:
            stmt = sa.select(ledger).order_by(*order).limit(max(limit, 0))
            records = [row_to_record(r._mapping) for r in conn.execute(stmt)]
            return records
        unique = list(dict.fromkeys(request_ids))
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            stmt = sa.select(ledger).where(ledger.c.request_id.in_(chunk))
            records.extend(row_to_record(r._mapping) for r in conn.execute(stmt))
    records.sort(key=lambda r: (r.ts, r.request_id), reverse=True)
    return records
