"""Budget status per limit: spent, reserved, remaining, percent used and when it resets.

The admin API reads a running gateway's own counters (:func:`live_status`); the metrics
endpoint reads every exportable limit's in-process counters without I/O
(:func:`memory_snapshot`); the CLI, which
runs in its own process, reads the shared Redis counters when Redis is configured and
otherwise the ledger itself (:func:`offline_status`) -- in-process reservations of a running
gateway are invisible from outside it and reported as zero. Alerts and the dashboard will
read the same records.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from costwarden.budgets.limits import SCOPES, UNLIMITED, Limit, LimitBook, format_amount
from costwarden.budgets.memory import MemoryStore
from costwarden.budgets.policy import Check, View, checks_for, window_total
from costwarden.budgets.ports import BudgetConfig, LedgerSums, PolicySource
from costwarden.budgets.rebuild import compute_seeds, tenant_of
from costwarden.budgets.store import CounterStore
from costwarden.budgets.windows import iso, zone

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster


@dataclasses.dataclass(frozen=True, slots=True)
class LimitStatus:
    limit: Limit
    spent: int  # counter units; for rate limits, everything in the window (in flight too)
    reserved: int
    resets_at: float | None

    @property
    def remaining(self) -> int:
        return max(0, self.limit.amount - self.spent - self.reserved)

    @property
    def percent(self) -> Decimal:
        if self.limit.amount <= 0:
            return Decimal(100) if self.spent or self.limit.amount == 0 else Decimal(0)
        return (Decimal(self.spent) * 100 / self.limit.amount).quantize(Decimal("0.01"))

    def to_json(self) -> dict[str, Any]:
        metric = self.limit.metric
        return {
            "scope": self.limit.scope,
            "scope_id": self.limit.subject or None,
            "limit_name": self.limit.name,
            "metric": metric,
            "window": self.limit.window,
            "kind": "rate_limit" if self.limit.rolling else "budget",
            "mode": self.limit.mode,
            "source": f"tier {self.limit.tier}" if self.limit.tier else "override",
            "limit": format_amount(metric, self.limit.amount),
            "spent": format_amount(metric, self.spent),
            "reserved": format_amount(metric, self.reserved),
            "remaining": format_amount(metric, self.remaining),
            "percent_used": str(self.percent),
            "resets_at": iso(self.resets_at),
        }


def statuses_of(checks: list[Check], views: list[View]) -> list[LimitStatus]:
    """Each check's status from its counter's view (in the same order)."""
    out: list[LimitStatus] = []
    for check, view in zip(checks, views, strict=True):
        if check.rolling:
            out.append(LimitStatus(check.limit, window_total(view, check), 0, None))
        else:
            out.append(LimitStatus(check.limit, view.used, view.reserved, check.resets_at))
    return out


async def live_status(
    book: LimitBook, store: CounterStore, org_id: str, now: float, tz_name: str
) -> list[LimitStatus]:
    """From the counters a gateway enforces with (in-process or Redis)."""
    checks = checks_for(book.for_org(org_id), now, zone(tz_name))
    return statuses_of(checks, await store.views(checks, now))


@dataclasses.dataclass(frozen=True, slots=True)
class LimitsSnapshot:
    """The limits a metrics scrape exports, and their counters when this process holds them."""

    limits: list[Limit]  # at most the cap asked for, platform / org / project limits first
    statuses: list[LimitStatus] | None  # one per limit; None: the counters are in Redis
    omitted: int  # limits in force left out by the cap


def exportable_limits(book: LimitBook) -> list[Limit]:
    """Every limit in force on a scope instance the book names: explicit limits (those that
    lift a default, ``-1``, enforce nothing and are left out) and, for each org on a tier,
    the tier's org-scope defaults it does not override. Tier defaults of other scopes apply
    to every project, key, user or session of the org, which the book does not enumerate.
    Ordered platform, org, project, key, user, session, tag; then org, subject, name."""
    found = [lim for lim in book.limits if lim.amount != UNLIMITED]
    # An explicit org limit overrides the tier's default even when it lifts it (-1).
    explicit = {(lim.org_id, lim.metric, lim.window) for lim in book.limits if lim.scope == "org"}
    for org, name in book.org_tiers.items():
        tier = book.tiers.get(name)
        if tier is None:
            continue
        for e in tier.entries:
            if e.scope == "org" and e.amount != UNLIMITED:
                if (org, e.metric, e.window) not in explicit:
                    found.append(Limit("org", org, org, e.metric, e.window, e.amount, e.mode, name))
    rank = {scope: i for i, scope in enumerate(SCOPES)}
    found.sort(key=lambda lim: (rank[lim.scope], lim.org_id, lim.subject, lim.name))
    return found


def memory_snapshot(
    book: LimitBook, store: CounterStore, now: float, tz: ZoneInfo, *, max_limits: int
) -> LimitsSnapshot:
    """The first ``max_limits`` exportable limits and, when ``store`` is the in-process one,
    their status; no I/O and no await (counters in Redis are not read: statuses None)."""
    every = exportable_limits(book)
    limits = every[:max_limits]
    statuses: list[LimitStatus] | None = None
    if isinstance(store, MemoryStore):
        checks = checks_for(limits, now, tz)
        statuses = statuses_of(checks, store.peek(checks))
    return LimitsSnapshot(limits, statuses, len(every) - len(limits))


def book_from(policy: PolicySource, config: BudgetConfig) -> LimitBook:
    """The limits in force as the policy tables and the config file give them now."""
    snap = policy.load()
    tiers = [*config.tiers, *snap.api_tiers]
    return LimitBook(snap.limits, tiers, snap.org_tiers, snap.version, snap.alert_rules)


async def offline_status(
    config: BudgetConfig,
    policy: PolicySource,
    ledger: LedgerSums,
    org_id: str,
    now: float | None = None,
    *,
    redis: Redis | RedisCluster | None = None,
) -> list[LimitStatus]:
    """For a process that does not enforce: the Redis counters through ``redis`` (the caller's
    client, left open) when given and loaded, else the ledger."""
    now = time.time() if now is None else now
    book = await asyncio.to_thread(book_from, policy, config)
    limits = book.for_org(org_id)
    tz = zone(config.timezone)
    checks = checks_for(limits, now, tz)
    if redis is not None:
        from costwarden.budgets.redis_store import RedisStore

        shared = RedisStore(redis)
        await shared.start()
        try:
            tenants = {c.limit.tenant for c in checks}
            if all([await shared.ready(t) for t in tenants]):
                return statuses_of(checks, await shared.views(checks, now))
        finally:
            await shared.close()
    families = {(lim.org_id, lim.scope, lim.metric, lim.window) for lim in limits}
    seeds = await asyncio.to_thread(compute_seeds, ledger, families, now, tz)
    store = MemoryStore()
    for tenant in {tenant_of(f) for f in families}:
        found = seeds.get(tenant)
        if found is not None:
            await store.seed(tenant, found.seeds, found.ttls, complete=True)
    return statuses_of(checks, await store.views(checks, now))
