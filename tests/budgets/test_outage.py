"""While Redis is unreachable: the local counters' policy (pure), and the Redis store's part
in leaving an outage (adds counted once, local reservations adopted as leases, the process
count). The end-to-end behaviour is in tests/e2e/test_redis_outage.py."""

from __future__ import annotations

import pytest
import redis.asyncio

from costwarden.budgets.memory import MemoryStore
from costwarden.budgets.outage import (
    COUNTER_MODES,
    FIGURE_MAX_AGE_SECONDS,
    Fallback,
    Figure,
    Figures,
    local_used,
    local_view,
    mode_when_unreachable,
)
from costwarden.budgets.policy import Actual, Grant, Refusal, View
from costwarden.budgets.redis_store import RedisStore
from costwarden.metrics.sources import COUNTER_MODES as metric_modes
from tests.budgets.test_stores import (
    ACTUAL,
    CENT,
    NOW,
    SETTLED,
    Clock,
    StoreFactory,
    _mixed,
    ask,
    checks,
    clock,
    lim,
    prepare,
    redis_client,
    redis_env_fixture,
    redis_ready,
    redis_stores,
)

__all__ = ["clock", "redis_client", "redis_env_fixture", "redis_ready", "redis_stores"]


# -- the policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "consumed", "processes", "used"),
    [
        (100, 40, 1, 40),  # one process: all of the room
        (100, 40, 2, 70),  # two: half of it each
        (100, 40, 3, 80),  # three: 60 // 3 = 20 each
        (100, 99, 2, 100),  # 1 // 2 = 0: nothing
        (100, 100, 1, 100),  # spent
        (100, 130, 1, 100),  # overspent (a soft budget): nothing, never more
        (100, 0, 4, 75),
        (7, 0, 0, 0),  # no count yet: as one process
    ],
)
def test_local_used_leaves_this_process_its_share(
    limit: int, consumed: int, processes: int, used: int
) -> None:
    assert local_used(limit, consumed, processes) == used
    # whatever the number of processes, their shares add up to no more than the room
    assert max(1, processes) * (limit - used) <= max(0, limit - consumed)


def test_the_policy_names_the_mode() -> None:
    assert mode_when_unreachable("fail_closed") == "refusing"
    assert mode_when_unreachable("fail_open") == "local"
    # The metrics package (which may not import budgets) exports each mode.
    assert metric_modes == COUNTER_MODES


def test_local_views() -> None:
    day, minute = checks(lim("usd", "day", 100), lim("requests", "minute", 10))
    assert local_view(day, Figure(40, 0), 2) == View(used=70)
    # A rolling counter's use sits in the figure's bucket (or the oldest one still counted).
    assert local_view(minute, Figure(4, minute.bucket - 2), 1) == View(
        buckets={minute.bucket - 2: 4}
    )
    assert local_view(minute, Figure(4, minute.first - 5), 1) == View(buckets={minute.first: 4})
    assert local_view(minute, Figure(0, minute.bucket), 1) == View()


def test_figures_keep_the_last_answer_per_counter() -> None:
    figures = Figures()
    day, minute = checks(lim("usd", "day", 100), lim("requests", "minute", 10))
    figures.saw([day, minute], [60, 9], NOW)
    figures.saw([day], [55], NOW + 1)
    assert figures.get(day.key) == Figure(45, 0, NOW + 1)
    assert figures.get(minute.key) == Figure(1, minute.bucket, NOW)
    assert figures.get("c:other") is None and len(figures) == 2


async def test_a_fallback_admits_only_within_its_share_and_never_guesses() -> None:
    day = lim("usd", "day", CENT)
    cs = checks(day)
    figures = Figures()
    figures.saw(cs, [CENT // 2], NOW)  # half of the budget left at the last answer
    fallback = Fallback(figures, processes=2)  # this process may use a quarter
    # With another process about, a figure older than a few seconds is not used.
    assert fallback.seed(cs, NOW + FIGURE_MAX_AGE_SECONDS + 1) == cs[0].key
    assert Fallback(figures, processes=1).seed(cs, NOW + 86_400) is None  # alone: exact
    assert fallback.seed(cs, NOW + 1) is None
    room = CENT // 4
    grant = await fallback.store.reserve("a", ask(want_out=10), cs, NOW)
    assert isinstance(grant, Grant) and grant.remaining[0] < room
    # An ask bounded above what is left of the share is clamped, then refused.
    big = ask(in_bound_nanos=room, want_out=10)
    assert isinstance(await fallback.store.reserve("b", big, cs, NOW), Refusal)
    # A counter without a figure is not guessed: nothing seeded, its key told.
    other = checks(day, lim("requests", "day", 5))
    assert fallback.seed(other, NOW + 1) == other[1].key
    assert isinstance(fallback.store, MemoryStore)
    assert fallback.store.peek([other[1]]) == [View()]


# -- the Redis store -------------------------------------------------------------------------


async def test_an_add_counts_once_however_often_it_is_sent(redis_stores: StoreFactory) -> None:
    store: RedisStore = await redis_stores()
    other: RedisStore = await redis_stores()
    await prepare(store)
    cs = _mixed(store)
    for sender in (store, store, other):
        await sender.add("local-1", cs, ACTUAL, NOW + 1)
        assert await store.views(cs, NOW + 1) == SETTLED


async def test_an_add_is_left_to_the_ledger_when_the_tenant_is_or_will_be_rebuilt(
    redis_stores: StoreFactory, redis_client: redis.asyncio.Redis, clock: Clock
) -> None:
    store: RedisStore = await redis_stores()
    cs = _mixed(store)
    # Not loaded (Redis came back empty): the rebuild from the ledger counts the request.
    await store.add("early", cs, ACTUAL, NOW)
    assert await store.views(cs, NOW) == [View(), View(), View()]
    # Rebuilt after the request settled: the rebuild read its ledger row already.
    clock.now = NOW + 5
    await prepare(store)
    await store.add("before", cs, ACTUAL, NOW + 4)
    assert await store.views(cs, NOW + 5) == [View(), View(), View()]
    await store.add("after", cs, ACTUAL, NOW + 6)  # settled after the rebuild: counted
    assert await store.views(cs, NOW + 6) == SETTLED
    assert await redis_client.zcard(store._tenant_key("o1", "done")) == 3


async def test_adopted_reservations_are_held_and_settle_once(
    redis_stores: StoreFactory,
) -> None:
    store: RedisStore = await redis_stores()
    other: RedisStore = await redis_stores()
    await prepare(store)
    cs = _mixed(store)
    amounts = [CENT // 2, 1, 1000]
    held = [View(0, CENT // 2), View(buckets={int(NOW): 1}), View(0, 1000)]
    for _ in range(2):  # sent again (its answer lost): held once
        await store.adopt([("local-1", cs, amounts, NOW)], NOW + 1)
        assert await other.views(cs, NOW + 1) == held
    # Adopted leases are this process's: renewed, and settled as any other.
    await store.renew(NOW + 2)
    assert await other.views(cs, NOW + 2) == held
    await store.settle("local-1", cs, amounts, ACTUAL, NOW + 3)
    assert await other.views(cs, NOW + 3) == SETTLED
    # A lease given up (its adoption timed out, then it settled locally) is not re-created.
    await store.abandon("local-2", cs, NOW + 4)
    await store.adopt([("local-2", cs, amounts, NOW)], NOW + 4)
    assert await other.views(cs, NOW + 4) == SETTLED


async def test_the_processes_sharing_the_counters_are_counted(
    redis_stores: StoreFactory,
) -> None:
    first: RedisStore = await redis_stores()
    assert first.processes == 1
    second: RedisStore = await redis_stores()
    assert second.processes == 2
    await first.heartbeat(NOW)
    assert first.processes == 2
    await second.close()
    await first.heartbeat(NOW)
    assert first.processes == 1


async def test_the_memory_store_has_nothing_to_reconcile() -> None:
    store = MemoryStore()
    cs = checks(lim("usd", "day", CENT))
    await store.ping()
    await store.add("l", cs, Actual(5, 1), NOW)
    await store.adopt([("l", cs, [5], NOW)], NOW)
    assert store.peek(cs) == [View()] and store.processes == 1


async def test_a_process_admits_locally_only_once_the_others_count_it(
    redis_stores: StoreFactory, clock: Clock
) -> None:
    first: RedisStore = await redis_stores()
    assert first.counted(NOW)  # alone: nobody has to count it
    store: RedisStore = await redis_stores()  # its first heartbeat at NOW, with another
    assert not store.counted(NOW + 1.9) and store.counted(NOW + 2)
    cs = checks(lim("usd", "day", CENT))
    figures = Figures()
    figures.saw(cs, [CENT], NOW)
    assert Fallback(figures, 1, counted=False).seed(cs, NOW) == cs[0].key
    assert Fallback(figures, 1, counted=True).seed(cs, NOW) is None
