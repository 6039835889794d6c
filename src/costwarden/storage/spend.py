"""Recent use of an org from the ledger, in fixed buckets: what forecasts read.

The rows of the last couple of hours are read and summed in Python (a cost as the ledger
stores it, in nano-dollars, or input plus output tokens), so SQLite and PostgreSQL need no
dialect-specific time arithmetic. One org's rows over two hours, read every few minutes by one
process (the forecast's leader), not on the request path.
"""

from __future__ import annotations

import collections
from datetime import datetime

import sqlalchemy as sa

from costwarden.core.money import ledger_nanos
from costwarden.storage.db import Bind, connect_read
from costwarden.storage.schema import ledger


def usage_buckets(
    bind: Bind, org_id: str, metric: str, since: datetime, bucket_seconds: int
) -> list[tuple[float, int]]:
    """``(bucket start, use)`` of the org since ``since``, oldest first; ``metric`` is ``usd``
    (nano-dollars) or ``tokens``; buckets start at multiples of ``bucket_seconds``."""
    value: sa.ColumnElement[object]
    if metric == "usd":
        value = ledger.c.cost_usd
    elif metric == "tokens":
        value = ledger.c.input_tokens + ledger.c.output_tokens
    else:
        raise ValueError(f"no usage buckets for metric {metric!r}")
    sums: collections.Counter[float] = collections.Counter()
    with connect_read(bind) as conn:
        rows = conn.execute(
            sa.select(ledger.c.ts, value).where(ledger.c.org_id == org_id, ledger.c.ts >= since)
        )
        for ts, used in rows:
            start = float(int(ts.timestamp()) // bucket_seconds * bucket_seconds)
            sums[start] += ledger_nanos(used) if metric == "usd" else int(used)
    return sorted(sums.items())
