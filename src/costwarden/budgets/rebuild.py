"""Counters from the ledger: the ledger is the truth, counters are its cache.

A *family* -- (org id or "" for the platform, scope type, metric, window) -- is the unit built
at once: one grouped ledger query gives every subject of that scope type in that org. Each
row counts with its cost rounded up to a whole nano-dollar, exactly as settling counts it, so
a counter rebuilt from the ledger equals the counter that was settled request by request.

Runs in a worker thread (synchronous SQL); never on the request path.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from costwarden.budgets.limits import ROLLING_WINDOWS, Limit
from costwarden.budgets.policy import Check, checks_for
from costwarden.budgets.ports import LedgerSums
from costwarden.budgets.store import Seed
from costwarden.budgets.windows import bucket_seconds, calendar_window, first_bucket

Family = tuple[str, str, str, str]  # (org id or "", scope, metric, window)

_METRIC_INDEX = {"usd": 0, "tokens": 1, "requests": 2}


@dataclasses.dataclass(slots=True)
class TenantSeeds:
    seeds: dict[str, Seed] = dataclasses.field(default_factory=dict)
    ttls: dict[str, int] = dataclasses.field(default_factory=dict)


def tenant_of(family: Family) -> str:
    return family[0] or "platform"


def compute_seeds(
    ledger: LedgerSums, families: set[Family], now: float, tz: ZoneInfo
) -> dict[str, TenantSeeds]:
    """Counter values for ``families`` at ``now`` from the ledger's sums, grouped by tenant."""
    out: dict[str, TenantSeeds] = {}
    for family in sorted(families):
        org, scope, metric, window = family
        tenant = out.setdefault(tenant_of(family), TenantSeeds())
        at = _METRIC_INDEX[metric]
        if window in ROLLING_WINDOWS:
            size = bucket_seconds(window)
            since = datetime.fromtimestamp(first_bucket(window, now) * size, UTC)
            per_bucket = ledger.buckets(
                scope=scope, since=since, bucket_seconds=size, org_id=org or None
            )
            for (row_org, subject), buckets in per_bucket.items():
                check = _check(scope, subject, row_org, metric, window, now, tz)
                kept = {b: v[at] for b, v in buckets.items() if b >= check.first and v[at]}
                tenant.seeds[check.key] = kept
                tenant.ttls[check.key] = check.ttl
        else:
            start = calendar_window(window, now, tz).start
            since_dt = None if window == "lifetime" else datetime.fromtimestamp(start, UTC)
            totals = ledger.totals(scope=scope, since=since_dt, org_id=org or None)
            for (row_org, subject), values in totals.items():
                check = _check(scope, subject, row_org, metric, window, now, tz)
                tenant.seeds[check.key] = values[at]
                tenant.ttls[check.key] = check.ttl
    return out


def _check(
    scope: str, subject: str, org: str, metric: str, window: str, now: float, tz: ZoneInfo
) -> Check:
    limit = Limit(scope, subject, "" if scope == "platform" else org, metric, window, 0)
    return checks_for([limit], now, tz)[0]
