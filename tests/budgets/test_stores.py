"""Counter stores: the in-process store and the Redis store make the same decisions.

Most tests run against both (``store`` fixture). The Redis variant uses db 15 with a unique
key prefix per test and flushes db 15 afterwards; when Redis is unreachable it is skipped
(with the reason shown), or fails when ``CI`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
import redis.asyncio

from costwarden.budgets import policy
from costwarden.budgets.limits import MAX_AMOUNT, Limit
from costwarden.budgets.memory import MemoryStore
from costwarden.budgets.policy import Actual, Ask, Check, Grant, Refusal, View
from costwarden.budgets.redis_store import RedisStore
from costwarden.budgets.store import CountersLost, CounterStore, LeaseClosed
from costwarden.core.money import NANOS_PER_USD
from tests.helpers import FlakyLink, RedisClusterNodes, process_redis, require_redis

REDIS_URL = os.environ.get("COSTWARDEN_TEST_REDIS", "redis://127.0.0.1:6379/15")
TZ = ZoneInfo("UTC")
NOW = 1_773_144_000.25  # 2026-03-10 12:00:00.25 UTC
CENT = NANOS_PER_USD // 100

StoreFactory = Callable[..., Awaitable[RedisStore]]


class Clock:
    """The clock a RedisStore renews leases with; tests move it along with their ``now``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def redis_ready() -> None:
    require_redis(REDIS_URL)


@asynccontextmanager
async def redis_env(
    clock: Clock, url: str = REDIS_URL, *, cluster: bool = False
) -> AsyncIterator[tuple[Any, StoreFactory]]:
    """A client of db 15 (or of the test Redis Cluster) and a factory of started RedisStores
    sharing one fresh key prefix (several gateway processes, each with its own client as the
    app builds it); closes them and flushes db 15 (every primary) at the end."""
    client: Any = (
        redis.asyncio.RedisCluster.from_url(url) if cluster else redis.asyncio.Redis.from_url(url)
    )
    prefix = f"cwtest-{uuid.uuid4().hex[:10]}"
    stack = contextlib.AsyncExitStack()
    default_url = url

    async def make(*, lease_seconds: float = 30.0, url: str = default_url) -> RedisStore:
        shared = await stack.enter_async_context(process_redis(url, cluster=cluster))
        store = RedisStore(shared, lease_seconds=lease_seconds, prefix=prefix, clock=clock)
        await store.start()
        stack.push_async_callback(store.close)  # closed before its client
        return store

    try:
        yield client, make
    finally:
        await stack.aclose()
        await client.flushdb()
        await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@asynccontextmanager
async def env_for(
    request: pytest.FixtureRequest, kind: str, clock: Clock
) -> AsyncIterator[tuple[Any, StoreFactory]]:
    """``redis_env`` on the Redis of db 15 (``redis``) or the session's 3-shard cluster."""
    if kind == "cluster":
        nodes: RedisClusterNodes = request.getfixturevalue("cluster")
        async with redis_env(clock, nodes.url, cluster=True) as env:
            yield env
        return
    request.getfixturevalue("redis_ready")
    async with redis_env(clock) as env:
        yield env


@pytest.fixture(params=["redis", "cluster"])
async def redis_env_fixture(
    request: pytest.FixtureRequest, clock: Clock
) -> AsyncIterator[tuple[Any, StoreFactory]]:
    async with env_for(request, request.param, clock) as env:
        yield env


@pytest.fixture
def redis_client(
    redis_env_fixture: tuple[redis.asyncio.Redis, StoreFactory],
) -> redis.asyncio.Redis:
    return redis_env_fixture[0]


@pytest.fixture
def redis_stores(redis_env_fixture: tuple[redis.asyncio.Redis, StoreFactory]) -> StoreFactory:
    return redis_env_fixture[1]


@pytest.fixture(params=["memory", "redis", "cluster"])
async def store(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[CounterStore]:
    if request.param == "memory":
        memory = MemoryStore()
        await memory.start()
        yield memory
        await memory.close()
        return
    async with env_for(request, request.param, clock) as (_, make):
        yield await make()


def on_cluster(store: CounterStore) -> bool:
    return isinstance(store, RedisStore) and store.cluster


def every_node(client: Any) -> dict[str, Any]:
    """KEYS and DBSIZE ask one node of a cluster unless told to ask every primary."""
    if isinstance(client, redis.asyncio.RedisCluster):
        return {"target_nodes": redis.asyncio.RedisCluster.PRIMARIES}
    return {}


def platform_or_own(store: CounterStore, limit: Limit) -> Limit:
    """``limit`` (platform scope), or on a cluster the same limit of project p1 of org o1: a
    cluster refuses checks of two tenants in one request (test_cluster.py),
    so its variant of a scenario keeps every counter in the org's slot."""
    if not on_cluster(store):
        return limit
    return Limit("project", "p1", "o1", limit.metric, limit.window, limit.amount, limit.mode)


async def prepare(store: CounterStore, *tenants: str) -> None:
    """Mark tenants as loaded (an empty, complete seed), as the enforcer's rebuild would."""
    for tenant in tenants or ("o1", "platform"):
        await store.seed(tenant, {}, {}, complete=True)


def lim(
    metric: str,
    window: str,
    amount: int,
    *,
    mode: str = "hard",
    scope: str = "org",
    subject: str = "o1",
    org: str = "o1",
) -> Limit:
    if scope == "platform":
        subject, org = "", ""
    return Limit(scope, subject, org, metric, window, amount, mode)


def checks(*limits: Limit, now: float = NOW) -> list[Check]:
    return policy.checks_for(list(limits), now, TZ)


def ask(**over: Any) -> Ask:
    values: dict[str, Any] = dict(
        in_bound_tokens=1000,
        in_est_tokens=250,
        in_bound_nanos=1_000_000,  # $0.001
        in_est_nanos=250_000,
        out_pico=15_000_000,  # $15 per million output tokens
        want_out=None,
        max_out=4096,
        min_out=16,
        est_out=256,
    )
    values.update(over)
    return Ask(**values)


def lease() -> str:
    return uuid.uuid4().hex


# -- both stores -----------------------------------------------------------------------------


async def test_hard_usd_budget_clamps_output(store: CounterStore) -> None:
    await prepare(store)
    cs = checks(lim("usd", "day", CENT))  # $0.01
    # $0.001 of prompt leaves $0.009: 600 tokens at $15/M.
    grant = await store.reserve(lease(), ask(), cs, NOW)
    assert grant == Grant(600, [CENT], [0])

    # A client cap below what fits is left alone.
    await prepare(store, "o2")
    cs2 = checks(lim("usd", "day", CENT, subject="o2", org="o2"))
    grant = await store.reserve(lease(), ask(want_out=100), cs2, NOW)
    assert grant == Grant(None, [1_000_000 + 1_500_000], [CENT - 2_500_000])
    # A client cap above what fits is clamped; an inexact price rounds the bound up.
    grant = await store.reserve(lease(), ask(want_out=5000, out_pico=7_000_001), cs2, NOW)
    room = CENT - 2_500_000 - 1_000_000
    fits = room * 1000 // 7_000_001
    amount = 1_000_000 + -(-fits * 7_000_001 // 1000)
    assert grant == Grant(fits, [amount], [room + 1_000_000 - amount])
    assert amount <= room + 1_000_000
    assert (await store.views(cs2, NOW))[0] == View(0, 2_500_000 + amount)


async def test_choices_multiply_the_output_bound(store: CounterStore) -> None:
    """OpenAI's ``n``: every choice is billed, so the cap that fits is per choice."""
    await prepare(store)
    cs = checks(lim("usd", "day", CENT))  # $0.01, $0.001 of it prompt
    # $0.009 buys 600 output tokens at $15/M: 75 for each of 8 choices.
    grant = await store.reserve(lease(), ask(want_out=100, choices=8), cs, NOW)
    assert grant == Grant(75, [CENT], [0])
    await prepare(store, "o2")
    cs2 = checks(lim("usd", "day", CENT, subject="o2", org="o2"))
    # A cap that fits for every choice is left alone, and reserved for every choice.
    grant = await store.reserve(lease(), ask(want_out=50, choices=8), cs2, NOW)
    assert grant == Grant(None, [1_000_000 + 8 * 50 * 15_000], [CENT - 7_000_000])
    # Even an empty budget cannot give 128 choices min_out (16) tokens each: 402.
    refused = await store.reserve(lease(), ask(want_out=100, choices=128), cs2, NOW)
    assert refused == Refusal("budget", 0, 0, 7_000_000, None)
    # Tokens budgets and estimates count every choice too.
    await prepare(store, "o3")
    tokens = checks(lim("tokens", "day", 5000, subject="o3", org="o3"))
    assert await store.reserve(lease(), ask(choices=4), tokens, NOW) == Grant(1000, [5000], [0])
    soft = checks(lim("tokens", "month", 10**6, mode="soft", subject="o3", org="o3"))
    grant = await store.reserve(lease(), ask(choices=4), soft, NOW)
    assert grant == Grant(None, [250 + 4 * 256], [10**6 - 250 - 4 * 256])


async def test_budget_versus_inflight_refusals(store: CounterStore) -> None:
    await prepare(store)
    cs = checks(lim("usd", "day", CENT))
    first = await store.reserve("a", ask(), cs, NOW)
    assert isinstance(first, Grant)
    # Reservations in flight hold the room: 429 inflight, worth retrying.
    refused = await store.reserve("b", ask(), cs, NOW + 1)
    assert refused == Refusal("inflight", 0, 0, CENT, None)
    # Settled spend leaves no room for even min_out tokens: 402 budget.
    rooms = await store.settle("a", cs, first.amounts, Actual(CENT - 100, 900), NOW + 2)
    assert rooms == [100]
    refused = await store.reserve("c", ask(), cs, NOW + 3)
    assert refused == Refusal("budget", 0, CENT - 100, 0, None)


async def test_spent_budget_outranks_inflight(store: CounterStore) -> None:
    await prepare(store)
    tokens = lim("tokens", "day", 10_000)
    usd = lim("usd", "day", CENT, scope="key", subject="k1")
    cs = checks(tokens, usd)
    first = await store.reserve("a", ask(in_bound_tokens=100), cs, NOW)
    assert isinstance(first, Grant)
    await store.settle("a", cs, first.amounts, Actual(CENT, 100), NOW)
    held = await store.reserve("b", ask(in_bound_tokens=100, want_out=9800), cs[:1], NOW)
    assert held == Grant(None, [9900], [0])
    refused = await store.reserve("c", ask(in_bound_tokens=100), cs, NOW)
    # The tokens budget is held by "b" (inflight), the usd one is spent: 402 wins.
    assert isinstance(refused, Refusal)
    assert (refused.kind, refused.index) == ("budget", 1)


async def test_soft_budget(store: CounterStore) -> None:
    await prepare(store)
    cs = checks(lim("usd", "day", 5_000_000, mode="soft"))
    # A soft budget reserves the estimate and never clamps: 250k + 256 tokens * 15k nanos.
    estimate = 250_000 + 256 * 15_000
    grant = await store.reserve("a", ask(), cs, NOW)
    assert grant == Grant(None, [estimate], [5_000_000 - estimate])
    grant = await store.reserve("b", ask(), cs, NOW)  # 4.1M of 5M taken: not yet full
    assert grant == Grant(None, [estimate], [5_000_000 - 2 * estimate])
    refused = await store.reserve("c", ask(), cs, NOW)
    assert refused == Refusal("inflight", 0, 0, 2 * estimate, None)
    await store.settle("a", cs, [estimate], Actual(6_000_000, 500), NOW)
    refused = await store.reserve("c", ask(), cs, NOW)
    assert refused == Refusal("budget", 0, 6_000_000, estimate, None)


async def test_requests_budget(store: CounterStore) -> None:
    await prepare(store)
    cs = checks(lim("requests", "day", 2))
    assert await store.reserve("a", ask(), cs, NOW) == Grant(None, [1], [1])
    assert await store.reserve("b", ask(), cs, NOW) == Grant(None, [1], [0])
    assert await store.reserve("c", ask(), cs, NOW) == Refusal("inflight", 0, 0, 2, None)
    assert await store.settle("a", cs, [1], Actual(5, 5), NOW) == [0]
    assert await store.views(cs, NOW) == [View(1, 1)]
    assert await store.settle("b", cs, [1], Actual(5, 5), NOW) == [0]
    assert await store.reserve("c", ask(), cs, NOW) == Refusal("budget", 0, 2, 0, None)


async def test_tokens_budget(store: CounterStore) -> None:
    await prepare(store)
    cs = checks(lim("tokens", "month", 5000))
    # 1000 prompt tokens (bound) leave 4000 output tokens.
    assert await store.reserve("a", ask(), cs, NOW) == Grant(4000, [5000], [0])
    assert await store.settle("a", cs, [5000], Actual(10, 1200), NOW) == [3800]
    assert await store.reserve("b", ask(want_out=100), cs, NOW) == Grant(None, [1100], [2700])
    # Embeddings: no output, only the prompt bound counts.
    grant = await store.reserve("c", ask(has_output=False), cs, NOW)
    assert grant == Grant(None, [1000], [1700])


async def test_rate_limit_refusal_and_retry_after(store: CounterStore) -> None:
    await prepare(store)
    limit = lim("requests", "minute", 3, scope="key", subject="k1")
    assert isinstance(await store.reserve("a", ask(), checks(limit), NOW), Grant)
    assert isinstance(await store.reserve("b", ask(), checks(limit), NOW), Grant)
    grant = await store.reserve("c", ask(), checks(limit, now=NOW + 10), NOW + 10)
    assert grant == Grant(None, [1], [0])
    later = NOW + 20
    refused = await store.reserve("d", ask(), checks(limit, now=later), later)
    # The two requests of second NOW leave the window at floor(NOW) + 61.
    assert refused == Refusal("rate", 0, 3, 0, 40.75)
    assert refused.retry_after == policy.rate_retry_after(
        View(buckets={int(NOW): 2, int(NOW) + 10: 1}), checks(limit, now=later)[0], 1, later
    )
    # One request each, as reserved, in the buckets they were reserved in.
    for lease_id, at in (("a", NOW), ("b", NOW), ("c", NOW + 10)):
        await store.settle(lease_id, checks(limit, now=at), [1], Actual(0, 0, 1), later)
    after = NOW + 61
    grant = await store.reserve("d", ask(), checks(limit, now=after), after)
    assert grant == Grant(None, [1], [1])


async def test_tokens_rate_limit_amount_larger_than_limit(store: CounterStore) -> None:
    await prepare(store)
    limit = lim("tokens", "minute", 100)
    refused = await store.reserve("a", ask(), checks(limit), NOW)
    # 250 + 256 estimated tokens can never fit: retry after a whole window.
    assert refused == Refusal("rate", 0, 0, 0, 60.0)


async def test_settle_moves_reserved_into_used(store: CounterStore) -> None:
    await prepare(store, "o1", "platform")
    day = lim("usd", "day", CENT)
    platform = platform_or_own(store, lim("usd", "month", 100 * CENT, scope="platform"))
    rate = lim("tokens", "minute", 100_000)
    cs = checks(day, platform, rate)
    grant = await store.reserve("a", ask(), cs, NOW)
    assert isinstance(grant, Grant)
    assert grant.amounts == [CENT, CENT, 250 + 256]
    views = await store.views(cs, NOW)
    assert views == [
        View(0, CENT),
        View(0, CENT),
        View(buckets={int(NOW): 506}),
    ]
    rooms = await store.settle("a", cs, grant.amounts, Actual(3_000_000, 700), NOW + 5)
    assert rooms == [CENT - 3_000_000, 100 * CENT - 3_000_000, 100_000 - 700]
    views = await store.views(cs, NOW + 5)
    assert views == [
        View(3_000_000, 0),
        View(3_000_000, 0),
        View(buckets={int(NOW): 700}),
    ]


async def test_no_checks(store: CounterStore) -> None:
    assert await store.reserve("a", ask(), [], NOW) == Grant(None, [], [])
    assert await store.settle("a", [], [], Actual(1, 1), NOW) == []
    assert await store.views([], NOW) == []


async def test_concurrent_reserves_never_exceed_a_hard_budget(store: CounterStore) -> None:
    await prepare(store)
    cs = checks(lim("usd", "day", CENT))
    small = ask(in_bound_nanos=100_000, out_pico=1_000_000, max_out=1000, min_out=16)
    results = await asyncio.gather(*(store.reserve(f"l{i}", small, cs, NOW) for i in range(300)))
    grants = [r for r in results if isinstance(r, Grant)]
    refusals = [r for r in results if isinstance(r, Refusal)]
    total = sum(g.amounts[0] for g in grants)
    assert total <= CENT
    assert grants and refusals
    assert all(r.kind == "inflight" for r in refusals)
    assert (await store.views(cs, NOW))[0] == View(0, total)


# -- memory and Redis side by side -------------------------------------------------------------

ORGS = ("o1", "o2")


def _limits_for(org: str, key: str, *, platform: bool = True) -> list[Limit]:
    """An org's limits, and the platform's (``platform``; a cluster cannot take both)."""
    shared = [
        lim("usd", "day", 3 * CENT, scope="platform"),
        lim("requests", "minute", 40, scope="platform"),
    ]
    return (shared if platform else []) + [
        lim("usd", "day", CENT, subject=org, org=org),
        lim("tokens", "month", 60_000, mode="soft", subject=org, org=org),
        lim("tokens", "minute", 20_000, subject=org, org=org),
        lim("usd", "hour", CENT // 2, subject=org, org=org),
        lim("requests", "day", 25, scope="key", subject=key, org=org),
        lim("tokens", "lifetime", 30_000, scope="key", subject=key, org=org),
        lim("usd", "month", CENT // 3, mode="soft", scope="key", subject=key, org=org),
        lim("requests", "minute", 6, scope="key", subject=key, org=org),
    ]


def _random_ask(rng: random.Random, *, big: bool = False) -> Ask:
    top = MAX_AMOUNT // 4 if big else 3000
    in_bound = rng.randint(0, top)
    in_pico = rng.choice([0, 1, 150_000, 2_500_000, rng.randint(1, 30_000_000)])
    out_pico = rng.choice([0, 1000, 999, 10_000_000, rng.randint(1, 60_000_000)])
    if big:
        in_pico = rng.choice([0, 1, 1000, 3])
        out_pico = rng.choice(
            [1, 7, 999, 1001, 10**13 + 7, 2**52 + 1, MAX_AMOUNT, rng.randint(1, 2**52)]
        )
    want_out = rng.choice([None, None, rng.randint(0, 5000), rng.randint(1, 64)])
    return Ask(
        in_bound_tokens=in_bound,
        in_est_tokens=in_bound // 4,
        in_bound_nanos=-(-in_bound * in_pico // 1000),
        in_est_nanos=-(-(in_bound // 4) * in_pico // 1000),
        out_pico=out_pico,
        want_out=want_out,
        max_out=rng.choice([4096, 1000, 8192]),
        min_out=rng.choice([1, 16, 64]),
        est_out=rng.randint(0, 999 if big else 1500),  # estimates stay below 2**53
        has_output=rng.random() < 0.9,
        # Prices near 2**53 stay exact in Lua only per token; n multiplies them.
        choices=1 if big else rng.choice([1, 1, 1, 2, 8, 128]),
    )


def _random_actual(rng: random.Random, cs: list[Check], amounts: list[int]) -> Actual:
    def most(metric: str, default: int) -> int:
        found = [a for c, a in zip(cs, amounts, strict=True) if c.limit.metric == metric]
        return min(found, default=default)

    return Actual(
        nanos=rng.randint(0, max(0, most("usd", 5_000_000))),
        tokens=rng.randint(0, max(0, most("tokens", 5_000))),
        requests=rng.randint(0, min(1, most("requests", 1))),
    )


async def test_memory_and_redis_agree(redis_stores: StoreFactory, clock: Clock) -> None:
    rng = random.Random(20260310)
    memory = MemoryStore()
    red: RedisStore = await redis_stores(lease_seconds=3600)
    for s in (memory, red):
        await prepare(s, *ORGS, "platform")
    principals = [(org, f"{org}-k{i}") for org in ORGS for i in range(2)]
    platform = not red.cluster
    outstanding: list[tuple[str, list[Check], list[int]]] = []
    now = NOW
    counts = {"grant": 0, "rate": 0, "budget": 0, "inflight": 0, "settle": 0}
    for step in range(400):
        now += rng.choice([0.0, 0.0, 0.3, 1.0, 2.5, 7.0])
        clock.now = now
        if outstanding and rng.random() < 0.4:
            lease_id, cs, amounts = outstanding.pop(rng.randrange(len(outstanding)))
            actual = _random_actual(rng, cs, amounts)
            got = await red.settle(lease_id, cs, amounts, actual, now)
            want = await memory.settle(lease_id, cs, amounts, actual, now)
            assert got == want, f"step {step}: settle"
            counts["settle"] += 1
        else:
            org, key = rng.choice(principals)
            limits = rng.sample(_limits_for(org, key, platform=platform), rng.randint(1, 6))
            cs = checks(*limits, now=now)
            a = _random_ask(rng)
            lease_id = f"lease-{step}"
            got_r = await red.reserve(lease_id, a, cs, now)
            want_r = await memory.reserve(lease_id, a, cs, now)
            assert got_r == want_r, f"step {step}: reserve {a} {limits}"
            if isinstance(want_r, Grant):
                outstanding.append((lease_id, cs, want_r.amounts))
                counts["grant"] += 1
            else:
                counts[want_r.kind] += 1
        every = [
            c
            for org, key in principals
            for c in checks(*_limits_for(org, key, platform=platform), now=now)
        ]
        assert await red.views(every, now) == await memory.views(every, now), f"step {step}"
    # The walk must have gone through every kind of outcome.
    assert all(n > 5 for n in counts.values()), counts


async def test_memory_and_redis_agree_on_large_amounts(redis_stores: StoreFactory) -> None:
    """Amounts near 2**53 and prices above 2**53 / 1000: the Lua arithmetic stays exact."""
    rng = random.Random(53)
    memory = MemoryStore()
    red: RedisStore = await redis_stores()
    for s in (memory, red):
        await prepare(s, "o1", "platform")
    for step in range(300):
        # Fresh counters each step, so that no counter passes 2**53.
        amounts = [MAX_AMOUNT, rng.randint(0, MAX_AMOUNT), rng.randint(0, 10**12)]
        limits = [
            lim("usd", "lifetime", rng.choice(amounts), scope="user", subject=f"u{step}"),
            lim("tokens", "day", rng.choice(amounts), scope="key", subject=f"k{step}"),
            lim("usd", "month", rng.choice(amounts), scope="project", subject=f"p{step}"),
            lim("usd", "day", rng.choice(amounts), mode="soft", scope="tag", subject=f"t{step}"),
        ]
        cs = checks(*rng.sample(limits, rng.randint(1, 4)))
        a = _random_ask(rng, big=True)
        a = Ask(**{**_asdict(a), "max_out": rng.choice([4096, 2**40, MAX_AMOUNT])})
        got = await red.reserve(f"b{step}", a, cs, NOW)
        want = await memory.reserve(f"b{step}", a, cs, NOW)
        assert got == want, f"step {step}: {a} {cs}"
        if isinstance(want, Grant) and rng.random() < 0.5:
            actual = _random_actual(rng, cs, want.amounts)
            got_rooms = await red.settle(f"b{step}", cs, want.amounts, actual, NOW)
            assert got_rooms == await memory.settle(f"b{step}", cs, want.amounts, actual, NOW)
        assert await red.views(cs, NOW) == await memory.views(cs, NOW)


def _asdict(a: Ask) -> dict[str, Any]:
    return {f: getattr(a, f) for f in Ask.__dataclass_fields__}


# -- Redis only -------------------------------------------------------------------------------


async def test_expired_lease_is_given_back_once(redis_stores: StoreFactory, clock: Clock) -> None:
    stalled: RedisStore = await redis_stores(lease_seconds=1)
    other: RedisStore = await redis_stores(lease_seconds=1)
    await prepare(other)
    cs = checks(lim("usd", "day", CENT))
    first = await stalled.reserve("stalled", ask(), cs, NOW)
    assert first == Grant(600, [CENT], [0])
    assert await other.reserve("x", ask(), cs, NOW + 0.5) == Refusal("inflight", 0, 0, CENT, None)
    # Two seconds later the stalled process has not renewed: its reservation is given back.
    second = await other.reserve("y", ask(), cs, NOW + 2)
    assert second == Grant(600, [CENT], [0])
    # Its late settle counts the spend but does not take the reservation away a second time.
    rooms = await stalled.settle("stalled", cs, first.amounts, Actual(4_000_000, 300), NOW + 2.5)
    assert rooms == [CENT - 4_000_000 - CENT]
    assert await other.views(cs, NOW + 2.5) == [View(4_000_000, CENT)]
    await other.settle("y", cs, second.amounts, Actual(1_000_000, 10), NOW + 3)
    assert await other.views(cs, NOW + 3) == [View(5_000_000, 0)]


async def test_expired_rolling_reservation_is_given_back(redis_stores: StoreFactory) -> None:
    stalled: RedisStore = await redis_stores(lease_seconds=1)
    other: RedisStore = await redis_stores(lease_seconds=1)
    await prepare(other)
    limit = lim("requests", "minute", 1)
    assert isinstance(await stalled.reserve("s", ask(), checks(limit), NOW), Grant)
    refused = await other.reserve("x", ask(), checks(limit, now=NOW + 0.5), NOW + 0.5)
    assert isinstance(refused, Refusal) and refused.kind == "rate"
    later = NOW + 2
    assert await other.reserve("y", ask(), checks(limit, now=later), later) == Grant(None, [1], [0])
    # The late settle adds the actual request without removing the reservation again.
    assert await stalled.settle("s", checks(limit), [1], Actual(1, 1), later) == [-1]


async def test_flush_loses_counters_until_seeded(
    redis_stores: StoreFactory, redis_client: redis.asyncio.Redis
) -> None:
    store: RedisStore = await redis_stores()
    second = platform_or_own(store, lim("requests", "minute", 10, scope="platform"))
    tenants = sorted({"o1", second.tenant})
    cs = checks(lim("usd", "day", CENT), second)
    with pytest.raises(CountersLost) as lost:
        await store.reserve("a", ask(), cs, NOW)
    assert sorted(lost.value.tenants) == tenants
    await prepare(store)
    assert await store.ready("o1")
    grant = await store.reserve("a", ask(), cs, NOW)
    assert isinstance(grant, Grant)

    await redis_client.flushdb()
    assert not await store.ready("o1")
    with pytest.raises(CountersLost) as lost:
        await store.reserve("b", ask(), cs, NOW)
    assert sorted(lost.value.tenants) == tenants
    # Nothing was written while the counters were lost.
    assert await redis_client.dbsize(**every_node(redis_client)) == 0
    # A settle of a tenant that is not loaded is skipped (the ledger has it); it only leaves
    # a tombstone, so that a renewal sent before it cannot re-create the lease after a rebuild.
    await store.settle("a", cs, grant.amounts, Actual(10, 10), NOW)
    done = [store._tenant_key(t, "done").encode() for t in tenants]
    assert sorted(await redis_client.keys("*", **every_node(redis_client))) == sorted(done)

    if store.cluster:  # one tenant: seeding the rolling counter with the org's seed
        seeds: dict[str, Any] = {cs[0].key: 2_000_000, cs[1].key: {int(NOW) - 5: 3}}
        await store.seed("o1", seeds, {cs[0].key: cs[0].ttl}, complete=True)
    else:
        await store.seed("o1", {cs[0].key: 2_000_000}, {cs[0].key: cs[0].ttl}, complete=True)
        with pytest.raises(CountersLost) as lost:
            await store.reserve("b", ask(), cs, NOW)
        assert lost.value.tenants == ["platform"]
        await store.seed(
            "platform", {cs[1].key: {int(NOW) - 5: 3, int(NOW) - 100: 7}}, {}, complete=True
        )
    grant = await store.reserve("b", ask(), cs, NOW)
    assert isinstance(grant, Grant)
    assert grant.remaining == [CENT - 2_000_000 - grant.amounts[0], 10 - 3 - 1]
    assert await store.views(cs, NOW) == [
        View(2_000_000, grant.amounts[0]),
        View(buckets={int(NOW) - 5: 3, int(NOW): 1}),
    ]
    ttl = await redis_client.ttl(store.counter_key(cs[0]))
    assert 0 < ttl <= cs[0].ttl


async def test_seed_fills_only_absent_counters(redis_stores: StoreFactory) -> None:
    store: RedisStore = await redis_stores()
    cs = checks(lim("usd", "day", CENT), lim("tokens", "hour", 1000))
    await store.seed("o1", {cs[0].key: 5, cs[1].key: {int(NOW) // 60: 9}}, {}, complete=False)
    assert not await store.ready("o1")
    await store.seed("o1", {cs[0].key: 7, cs[1].key: {int(NOW) // 60: 1}}, {}, complete=True)
    assert await store.ready("o1")
    assert await store.views(cs, NOW) == [View(5, 0), View(buckets={int(NOW) // 60: 9})]


async def test_rebuild_lock(redis_stores: StoreFactory) -> None:
    a: RedisStore = await redis_stores()
    b: RedisStore = await redis_stores()
    assert await a.acquire_rebuild("o1", 10_000)
    assert not await b.acquire_rebuild("o1", 10_000)
    assert await b.acquire_rebuild("o2", 10_000)
    await a.release_rebuild("o1")
    assert await b.acquire_rebuild("o1", 10_000)


async def test_renewal_keeps_leases_and_restores_them_after_a_flush(
    redis_stores: StoreFactory, redis_client: redis.asyncio.Redis, clock: Clock
) -> None:
    holder: RedisStore = await redis_stores(lease_seconds=1)
    other: RedisStore = await redis_stores(lease_seconds=1)
    await prepare(holder)
    cs = checks(lim("usd", "day", CENT))
    grant = await holder.reserve("held", ask(), cs, NOW)
    assert isinstance(grant, Grant)
    clock.now = NOW + 0.9
    await holder.renew(NOW + 0.9)  # now expires at NOW + 1.9
    clock.now = NOW + 1.5
    refused = await other.reserve("x", ask(), cs, NOW + 1.5)
    assert refused == Refusal("inflight", 0, 0, CENT, None)

    # Redis loses everything; the enforcer rebuilds from the ledger (no spend yet).
    await redis_client.flushdb()
    await prepare(other)
    clock.now = NOW + 1.6
    await holder.renew(NOW + 1.6)
    assert await other.views(cs, NOW + 1.6) == [View(0, CENT)]
    leases = holder._tenant_key("o1", "leases")
    assert await redis_client.zscore(leases, "held") == math.floor((NOW + 1.6 + 1) * 1000)
    assert await other.reserve("x", ask(), cs, NOW + 1.7) == Refusal("inflight", 0, 0, CENT, None)
    rooms = await holder.settle("held", cs, grant.amounts, Actual(2_000_000, 100), NOW + 2)
    assert rooms == [CENT - 2_000_000]
    assert await other.views(cs, NOW + 2) == [View(2_000_000, 0)]
    # A settled lease is not renewed any more.
    await holder.renew(NOW + 2)
    assert await other.views(cs, NOW + 2) == [View(2_000_000, 0)]


async def test_renewal_loop_runs_in_background(redis_stores: StoreFactory, clock: Clock) -> None:
    holder: RedisStore = await redis_stores(lease_seconds=0.3)
    other: RedisStore = await redis_stores(lease_seconds=0.3)
    await prepare(holder)
    cs = checks(lim("requests", "day", 1))
    assert isinstance(await holder.reserve("held", ask(), cs, NOW), Grant)
    clock.now = NOW + 5
    await asyncio.sleep(0.35)  # at least one pass, run with the clock at NOW + 5
    assert await other.reserve("x", ask(), cs, NOW + 5.2) == Refusal("inflight", 0, 0, 1, None)


async def test_reserve_and_settle_are_one_round_trip_each(
    redis_stores: StoreFactory,
) -> None:
    store: RedisStore = await redis_stores()
    await prepare(store)
    commands: list[str] = []
    client = store.client
    original = client.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        commands.append(str(args[0]))
        return await original(*args, **options)  # type: ignore[no-untyped-call]

    client.execute_command = counting  # type: ignore[method-assign]
    cs = checks(
        lim("usd", "day", CENT),
        lim("tokens", "minute", 100_000, scope="key", subject="k1"),
        platform_or_own(store, lim("requests", "day", 100, scope="platform")),
    )
    grant = await store.reserve("a", ask(), cs, NOW)
    assert isinstance(grant, Grant)
    assert commands == ["EVALSHA"]
    commands.clear()
    await store.settle("a", cs, grant.amounts, Actual(5, 5), NOW)
    assert commands == ["EVALSHA"]


# -- Redis: a lease is settled once, however often its settle is sent --------------------------
#
# A command that timed out may still run when Redis answers again, after commands sent later;
# so a settle may run twice, and a reserve after the release of its lease.


def _mixed(store: RedisStore) -> list[Check]:
    """A calendar and a rolling counter of the org, and a calendar one of the platform (on a
    cluster: of a project of the org)."""
    return checks(
        lim("usd", "day", CENT),
        lim("requests", "minute", 10),
        platform_or_own(store, lim("tokens", "day", 100_000, scope="platform")),
    )


ACTUAL = Actual(2_000_000, 300)
SETTLED = [View(2_000_000, 0), View(buckets={int(NOW): 1}), View(300, 0)]


async def test_the_store_refuses_a_client_that_may_resend_a_command() -> None:
    # A client made with redis-py's defaults may resend a command that timed out (how often
    # depends on the version and the constructor): a duplicate script run.
    for client in (
        redis.asyncio.Redis(host="127.0.0.1", db=15),
        redis.asyncio.Redis.from_url(REDIS_URL),
        # A cluster client resends after a timeout (3 times by default): refused too.
        redis.asyncio.RedisCluster(host="127.0.0.1", port=7000),
    ):  # none opens a connection
        try:
            with pytest.raises(ValueError, match="without retries"):
                RedisStore(client)
        finally:
            await client.aclose()


async def test_a_settle_sent_twice_counts_once(redis_stores: StoreFactory) -> None:
    store: RedisStore = await redis_stores()
    other: RedisStore = await redis_stores()
    await prepare(store)
    cs = _mixed(store)
    grant = await store.reserve("l", ask(), cs, NOW)
    assert isinstance(grant, Grant)
    rooms = await store.settle("l", cs, grant.amounts, ACTUAL, NOW + 1)
    assert await store.views(cs, NOW + 1) == SETTLED
    # Sent again, by this process and by another: the same rooms, nothing counted twice.
    assert await store.settle("l", cs, grant.amounts, ACTUAL, NOW + 2) == rooms
    assert await other.settle("l", cs, grant.amounts, ACTUAL, NOW + 2) == rooms
    assert await store.views(cs, NOW + 2) == SETTLED


async def test_a_settle_whose_answer_was_lost_counts_once_when_sent_again(
    redis_stores: StoreFactory,
) -> None:
    other: RedisStore = await redis_stores()
    if other.cluster:
        # The cluster variant of this is the one-node one: a link in front of one node cannot
        # stand for a cluster (the slot map it answers names the nodes themselves).
        pytest.skip("a FlakyLink fronts one Redis, not a cluster")
    async with FlakyLink(REDIS_URL) as link:
        store: RedisStore = await redis_stores(url=link.url)
        await prepare(store)
        cs = _mixed(store)
        grant = await store.reserve("l", ask(), cs, NOW)
        assert isinstance(grant, Grant)
        link.drop_answers = True
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.settle("l", cs, grant.amounts, ACTUAL, NOW + 1), 0.3)
        assert await other.views(cs, NOW + 1) == SETTLED  # it ran; its caller cannot know
        link.drop_answers = False
        await store.settle("l", cs, grant.amounts, ACTUAL, NOW + 2)  # the retry
        assert await other.views(cs, NOW + 2) == SETTLED


async def test_a_release_before_its_delayed_reserve_leaves_nothing_reserved(
    redis_stores: StoreFactory,
) -> None:
    store: RedisStore = await redis_stores()
    await prepare(store)
    cs = _mixed(store)
    amounts = [CENT, 1, 1000]
    # The release (a settle of nothing) arrives first, then the reserve sent before it.
    await store.settle("l", cs, amounts, Actual(0, 0, requests=0), NOW)
    with pytest.raises(LeaseClosed):
        await store.reserve("l", ask(), cs, NOW)
    assert await store.views(cs, NOW) == [View(), View(), View()]
    # So too when the reserve is given up because it timed out (abandon).
    await store.abandon("m", cs, NOW)
    with pytest.raises(LeaseClosed):
        await store.reserve("m", ask(), cs, NOW)
    assert await store.views(cs, NOW) == [View(), View(), View()]
    assert isinstance(await store.reserve("n", ask(), cs, NOW), Grant)  # others still reserve


async def test_abandon_gives_a_reservation_back_once(
    redis_stores: StoreFactory, redis_client: redis.asyncio.Redis
) -> None:
    store: RedisStore = await redis_stores()
    await prepare(store)
    cs = _mixed(store)
    kept = await store.reserve("kept", ask(want_out=10), cs, NOW)
    gone = await store.reserve("gone", ask(want_out=10), cs, NOW)
    assert isinstance(kept, Grant) and isinstance(gone, Grant)
    held = [View(0, kept.amounts[0]), View(buckets={int(NOW): 1}), View(0, kept.amounts[2])]
    for _ in range(2):
        await store.abandon("gone", cs, NOW + 1)
        assert await store.views(cs, NOW + 1) == held
    assert await redis_client.zrange(store._tenant_key("o1", "leases"), 0, -1) == [b"kept"]


async def test_a_purged_lease_settled_twice_counts_its_actual_once(
    redis_stores: StoreFactory,
) -> None:
    stalled: RedisStore = await redis_stores(lease_seconds=1)
    other: RedisStore = await redis_stores(lease_seconds=1)
    await prepare(other)
    cs = _mixed(stalled)
    grant = await stalled.reserve("stalled", ask(want_out=10), cs, NOW)
    assert isinstance(grant, Grant)
    # Not renewed: two seconds later another reserve gives its reservation back.
    later = await other.reserve("x", ask(want_out=10), cs, NOW + 2)
    assert isinstance(later, Grant)
    for at in (NOW + 3, NOW + 4):  # its late settle counts what it spent, once
        await stalled.settle("stalled", cs, grant.amounts, ACTUAL, at)
        assert await other.views(cs, at) == [
            View(2_000_000, later.amounts[0]),
            View(buckets={int(NOW): 2}),
            View(300, later.amounts[2]),
        ]


async def test_a_late_renewal_does_not_bring_a_settled_lease_back(
    redis_stores: StoreFactory,
) -> None:
    store: RedisStore = await redis_stores()
    await prepare(store)
    cs = _mixed(store)
    grant = await store.reserve("l", ask(), cs, NOW)
    assert isinstance(grant, Grant)
    held = store._leases["l"]
    await store.settle("l", cs, grant.amounts, ACTUAL, NOW + 1)
    # A renewal pass sent before the settle (it timed out) that Redis runs after it.
    store._leases["l"] = held
    await store.renew(NOW + 2)
    assert await store.views(cs, NOW + 2) == SETTLED


async def test_a_lease_lost_in_a_flush_is_settled_once(
    redis_stores: StoreFactory, redis_client: redis.asyncio.Redis, clock: Clock
) -> None:
    store: RedisStore = await redis_stores()
    other: RedisStore = await redis_stores()
    await prepare(store)
    cs = _mixed(store)
    grant = await store.reserve("l", ask(), cs, NOW)
    assert isinstance(grant, Grant)
    # Redis loses everything; the counters are rebuilt from the ledger (no spend yet).
    await redis_client.flushdb()
    clock.now = NOW + 1
    await prepare(other)
    # Settled before a renewal re-created the lease: the rebuild could not include it.
    await store.settle("l", cs, grant.amounts, ACTUAL, NOW + 2)
    assert await other.views(cs, NOW + 2) == SETTLED
    await other.settle("l", cs, grant.amounts, ACTUAL, NOW + 3)  # sent again
    assert await other.views(cs, NOW + 3) == SETTLED
