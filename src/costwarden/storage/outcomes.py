"""Requests and upstream failures per provider and minute, from the ledger: what the error-rate
alert reads (``alerts.error_rate``).

One query per call, grouped in SQL by (provider, minute) with the portable slotting of
``storage.spend.slot_of``: a few rows per provider however busy the gateway is. Read every
``[alerts] watch_interval_seconds`` by one process (the watch's leader), over the last quarter
hour or so (the ``ts`` index bounds it), not on the request path. A response-cache hit
(status ``cached``) is no request to its provider: left out, or the hits would dilute an
upstream's failure rate.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from costwarden.alerts.error_rate import MINUTE, UPSTREAM_CLIENT_STATUSES, MinuteOutcomes
from costwarden.alerts.risks import FAILURE_STATUSES
from costwarden.storage.db import Bind, connect_read
from costwarden.storage.schema import ledger
from costwarden.storage.spend import NOT_CACHED, slot_of


def provider_minutes(bind: Bind, first: int, minutes: int) -> dict[str, list[MinuteOutcomes]]:
    """Each provider's requests and failures in each of ``minutes`` minutes from ``first``
    (epoch seconds, a multiple of 60), oldest first; minutes without requests are left out,
    and rows without a provider too (a degraded answer came from none).

    A failure is a row whose status is a failure (``alerts.risks.FAILURE_STATUSES``), less
    the client's own errors relayed from upstream (4xx but 429)."""
    if minutes < 1:
        return {}
    starts = [datetime.fromtimestamp(first + i * MINUTE, UTC) for i in range(minutes)]
    slot, in_any = slot_of(ledger.c.ts, starts, timedelta(seconds=MINUTE))
    client_error = sa.and_(
        ledger.c.http_status >= 400,
        ledger.c.http_status < 500,
        ledger.c.http_status.not_in(UPSTREAM_CLIENT_STATUSES),
    )
    failed = sa.case(
        (sa.and_(ledger.c.status.in_(FAILURE_STATUSES), sa.not_(client_error)), 1), else_=0
    )
    # Slotted in a subquery, grouped outside (see storage.spend.hourly_usage for why).
    rows_in = (
        sa.select(ledger.c.provider, slot.label("slot"), failed.label("failed"))
        .where(in_any, ledger.c.provider.is_not(None), NOT_CACHED)
        .subquery()
    )
    stmt = sa.select(
        rows_in.c.provider, rows_in.c.slot, sa.func.count(), sa.func.sum(rows_in.c.failed)
    ).group_by(rows_in.c.provider, rows_in.c.slot)
    with connect_read(bind) as conn:
        rows = conn.execute(stmt).all()
    out: dict[str, list[MinuteOutcomes]] = {}
    for provider, i, count, failures in sorted(rows, key=lambda r: (r[0], r[1])):
        out.setdefault(provider, []).append(
            MinuteOutcomes(first + int(i) * MINUTE, int(count), int(failures or 0))
        )
    return out
