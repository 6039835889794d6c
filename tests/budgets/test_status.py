"""budgets.status for /metrics: which limits are exported, in what order, capped, and their
in-process counters read without I/O (none read from a store that is not in memory)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from costwarden.budgets.limits import UNLIMITED, Limit, LimitBook, Tier, TierEntry
from costwarden.budgets.memory import MemoryStore
from costwarden.budgets.policy import Actual, Ask, Grant, checks_for
from costwarden.budgets.status import exportable_limits, memory_snapshot

TZ = ZoneInfo("UTC")
NOW = 1_773_144_000.25  # 2026-03-10 12:00:00.25 UTC


def _book() -> LimitBook:
    limits = [
        Limit("key", "k1", "o1", "requests", "minute", 60),
        Limit("org", "o1", "o1", "usd", "day", 5_000_000_000),
        Limit("org", "o2", "o2", "usd", "day", UNLIMITED),  # lifts o2's tier default
        Limit("platform", "", "", "usd", "month", 10**12),
        Limit("project", "p1", "o1", "tokens", "day", 1_000_000),
    ]
    pro = Tier(
        "pro",
        (
            TierEntry("org", "usd", "day", 1_000_000_000),  # o1 overrides it, o2 lifts it
            TierEntry("org", "requests", "month", 10_000),
            TierEntry("key", "requests", "minute", 10),  # every key: not enumerable
        ),
    )
    return LimitBook(limits, [pro], {"o1": "pro", "o2": "pro", "o3": "missing-tier"}, 1)


def _names(limits: list[Limit]) -> list[tuple[str, str, str]]:
    return [(lim.scope, lim.subject, lim.name) for lim in limits]


def test_exportable_limits_are_explicit_ones_and_org_tier_defaults_in_scope_order() -> None:
    limits = exportable_limits(_book())
    assert _names(limits) == [
        ("platform", "", "monthly_usd"),
        ("org", "o1", "daily_usd"),  # explicit: the tier's daily_usd is overridden
        ("org", "o1", "monthly_requests"),
        ("org", "o2", "monthly_requests"),
        ("project", "p1", "daily_tokens"),
        ("key", "k1", "requests_per_minute"),
    ]
    tiered = [lim for lim in limits if lim.tier]
    assert {lim.tier for lim in tiered} == {"pro"} and len(tiered) == 2


async def test_memory_snapshot_reads_the_in_process_counters() -> None:
    book = _book()
    store = MemoryStore()
    daily = next(lim for lim in exportable_limits(book) if lim.name == "daily_usd")
    rpm = next(lim for lim in exportable_limits(book) if lim.name == "requests_per_minute")
    ask = Ask(10, 3, 100, 30, 1000, 5, 5, 1, 5)
    checks = checks_for([daily, rpm], NOW, TZ)
    grant = await store.reserve("a", ask, checks, NOW)
    assert isinstance(grant, Grant)
    await store.settle("a", checks, grant.amounts, Actual(700, 9), NOW)
    held = await store.reserve("b", ask, checks_for([daily, rpm], NOW, TZ), NOW)
    assert isinstance(held, Grant)

    snap = memory_snapshot(book, store, NOW + 1, TZ, max_limits=100)
    assert snap.omitted == 0 and snap.statuses is not None
    by_name = {s.limit.name: s for s in snap.statuses}
    assert (by_name["daily_usd"].spent, by_name["daily_usd"].reserved) == (700, held.amounts[0])
    assert by_name["daily_usd"].remaining == 5_000_000_000 - 700 - held.amounts[0]
    # A rate limit counts everything in its window, in flight too; nothing "reserved".
    assert (by_name["requests_per_minute"].spent, by_name["requests_per_minute"].reserved) == (
        2,
        0,
    )
    assert by_name["monthly_usd"].spent == 0  # never used: zero, not missing


def test_memory_snapshot_caps_and_counts_the_rest() -> None:
    snap = memory_snapshot(_book(), MemoryStore(), NOW, TZ, max_limits=2)
    assert _names(snap.limits) == [("platform", "", "monthly_usd"), ("org", "o1", "daily_usd")]
    assert snap.omitted == 4 and snap.statuses is not None and len(snap.statuses) == 2
    assert memory_snapshot(_book(), MemoryStore(), NOW, TZ, max_limits=0).limits == []


def test_counters_outside_memory_are_not_read() -> None:
    class Remote:
        name = "redis"

    snap = memory_snapshot(_book(), Remote(), NOW, TZ, max_limits=100)  # type: ignore[arg-type]
    assert snap.statuses is None and len(snap.limits) == 6
