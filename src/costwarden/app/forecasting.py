"""Budget forecasts of one gateway: every org budget, its spend so far and its recent pace.

Run by the alerting service's forecast loop in the one process that holds the forecast lease
(``storage.leases``), every ``[alerts] forecast_interval_seconds``: for each org-scope budget
in a calendar window (daily and monthly limits on USD or tokens, set on the org or by its
plan tier) it reads what the counters hold (settled and in flight), the org's last two hours
of use from the ledger in 5-minute buckets, and asks ``alerts.forecast`` whether the limit
runs out before it resets. Each "yes" is an alert draft, keyed once per limit and window.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from costwarden.alerts.forecast import forecast
from costwarden.alerts.rules import AlertDraft, forecast_alert
from costwarden.budgets.enforcer import Enforcer
from costwarden.budgets.limits import Limit, format_amount
from costwarden.budgets.policy import checks_for
from costwarden.budgets.windows import iso
from costwarden.storage.spend import usage_buckets

BUCKET_SECONDS = 300
HISTORY = timedelta(hours=2, minutes=10)  # the forecast's 2-hour window, and the bucket in progress
_WINDOWS = ("day", "month")
_METRICS = ("usd", "tokens")


def org_budgets(enforcer: Enforcer) -> list[Limit]:
    """Every org-scope budget a forecast watches: explicit ones and plan-tier defaults."""
    book = enforcer.book
    orgs = {limit.org_id for limit in book.limits if limit.org_id} | set(book.org_tiers)
    return [
        limit
        for org in sorted(orgs)
        for limit in book.for_org(org)
        if limit.scope == "org"
        and limit.window in _WINDOWS
        and limit.metric in _METRICS
        and limit.amount > 0
    ]


async def forecast_drafts(enforcer: Enforcer, engine: Engine, now: float) -> list[AlertDraft]:
    """The alerts the forecasts of every org budget raise at ``now``."""
    limits = org_budgets(enforcer)
    if not limits:
        return []
    checks = checks_for(limits, now, enforcer.tz)
    views = await enforcer.store.views(checks, now)
    since = datetime.fromtimestamp(now, UTC) - HISTORY
    drafts: list[AlertDraft] = []
    for check, view in zip(checks, views, strict=True):
        limit = check.limit
        buckets = await asyncio.to_thread(
            usage_buckets, engine, limit.org_id, limit.metric, since, BUCKET_SECONDS
        )
        result = forecast(
            amount=limit.amount,
            settled=view.used,
            reserved=view.reserved,
            buckets=buckets,
            bucket_seconds=BUCKET_SECONDS,
            now=now,
            resets_at=check.resets_at,
        )
        if not result.alert:
            continue
        drafts.append(
            forecast_alert(
                org_id=limit.org_id,
                scope=limit.scope,
                scope_id=limit.subject,
                metric=limit.metric,
                window=limit.window,
                window_key=f"until:{int(check.resets_at or 0)}",
                resets_at=iso(check.resets_at),
                limit=format_amount(limit.metric, limit.amount),
                used=format_amount(limit.metric, result.used),
                exhausts_at=iso(result.exhausts_at),
                reason=result.reason,
            )
        )
    return drafts
