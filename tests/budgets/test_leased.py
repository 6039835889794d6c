"""Leased slices on a real Redis (budgets/leased.py, lua/slices.lua): what stays local, what a
call counts, and what a dead or a closing process leaves behind."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from costwarden.budgets.leased import LeasedStore
from costwarden.budgets.policy import Actual, Check, Grant, Refusal
from costwarden.budgets.redis_store import RedisStore
from costwarden.budgets.store import CountersLost
from costwarden.core.records import LedgerRecord
from costwarden.storage.counters import LedgerAggregates
from costwarden.storage.db import create_engine_for
from costwarden.storage.ledger import LedgerWriter
from costwarden.storage.migrate import migrate
from tests.budgets.test_stores import (
    CENT,
    NOW,
    REDIS_URL,
    Clock,
    ask,
    checks,
    clock,
    lim,
    prepare,
    redis_ready,
)
from tests.helpers import process_redis

__all__ = ["clock", "redis_ready"]  # fixtures

DOLLAR = 100 * CENT
LeasedFactory = Callable[..., Awaitable[LeasedStore]]


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    """The ledger the stores read a dead process's rows from (SQLite, migrated)."""
    engine = create_engine_for(f"sqlite:///{tmp_path}/ledger.db")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def env(
    redis_ready: None, clock: Clock, engine: Any
) -> AsyncIterator[tuple[redis.asyncio.Redis, LeasedFactory, str]]:
    """A client of the test database, a factory of started LeasedStores (one per gateway
    process, each with its own client) sharing a fresh key prefix, and that prefix."""
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    prefix = f"cwlease-{uuid.uuid4().hex[:10]}"
    stack = contextlib.AsyncExitStack()

    async def make(
        *, lease_seconds: float = 30.0, flush_seconds: float = 3600.0, timeout: float = 1.0
    ) -> LeasedStore:
        shared = await stack.enter_async_context(process_redis(REDIS_URL, timeout=timeout))
        inner = RedisStore(shared, lease_seconds=lease_seconds, prefix=prefix, clock=clock)
        store = LeasedStore(
            inner,
            ledger=LedgerAggregates(engine),
            ledger_wait=1.0,
            flush_seconds=flush_seconds,
            clock=clock,
        )
        await store.start()
        stack.push_async_callback(store.close)
        return store

    try:
        yield client, make, prefix
    finally:
        await stack.aclose()
        for key in await client.keys(f"{prefix}:*"):
            await client.delete(key)
        await client.aclose()


def _counting(store: LeasedStore) -> list[tuple[Any, ...]]:
    """Every command the store's client sends from now on."""
    sent: list[tuple[Any, ...]] = []
    client = store.inner.client
    original = client.execute_command

    async def execute(*args: Any, **kwargs: Any) -> Any:
        sent.append(args)
        return await original(*args, **kwargs)

    client.execute_command = execute  # type: ignore[method-assign]
    return sent


async def _counter(client: redis.asyncio.Redis, prefix: str, check: Check) -> tuple[int, int]:
    used, reserved = await client.hmget(f"{prefix}:{{o1}}:{check.key}", ["u", "r"])
    return int(used or 0), int(reserved or 0)


async def test_requests_are_admitted_and_settled_without_a_round_trip(
    env: tuple[redis.asyncio.Redis, LeasedFactory, str],
) -> None:
    client, make, prefix = env
    store = await make()
    await prepare(store)
    cs = checks(lim("usd", "day", DOLLAR), lim("requests", "minute", 10_000))
    first = await store.reserve("first", ask(), cs, NOW)  # takes the slices: one call
    assert isinstance(first, Grant) and store.calls == 1
    sent = _counting(store)
    for i in range(3):
        grant = await store.reserve(f"r{i}", ask(), cs, NOW)
        assert isinstance(grant, Grant) and grant.out_tokens == 4096
        await store.settle(f"r{i}", cs, grant.amounts, Actual(CENT, 100), NOW)
    assert sent == [] and store.admitted_locally == 4 and store.reserved_exactly == 0
    # What they spent reaches Redis with the next call, once.
    await store.settle("first", cs, first.amounts, Actual(CENT, 100), NOW)
    await store._call("o1", NOW)
    assert [args[0] for args in sent] == ["EVALSHA"]
    used, reserved = await _counter(client, prefix, cs[0])
    granted = store.book.tenants["o1"][cs[0].key].granted
    assert (used, reserved) == (4 * CENT, granted)
    # Closing gives every slice back: nothing reserved, no lease left.
    await store.close()
    assert await _counter(client, prefix, cs[0]) == (4 * CENT, 0)
    assert await client.zcard(f"{prefix}:{{o1}}:leases") == 0
    assert await client.hlen(f"{prefix}:{{o1}}:lease") == 0
    rolling = await client.hgetall(f"{prefix}:{{o1}}:{cs[1].key}")
    assert sum(int(v) for v in rolling.values()) == 4  # four requests, no slice left


async def test_a_call_resent_after_a_timeout_counts_once_and_a_late_one_nothing(
    env: tuple[redis.asyncio.Redis, LeasedFactory, str],
) -> None:
    client, make, prefix = env
    store = await make()
    await prepare(store)
    cs = checks(lim("usd", "day", DOLLAR))
    grant = await store.reserve("a", ask(), cs, NOW)
    assert isinstance(grant, Grant)
    await store.settle("a", cs, grant.amounts, Actual(CENT, 100), NOW)
    ops = store.book.ops("o1", NOW)
    rows = [[0, "r", DOLLAR, cs[0].ttl, 0, op.used, op.keep, op.want, op.need, 0, op.exposed]
            for op in ops]  # fmt: skip
    inner = store.inner
    first, resend = next(store._gen), next(store._gen)
    assert "slices" in await inner.slices("o1", first, cs, rows, NOW)
    # The same cumulative figures again, under a later generation (the resend): nothing new.
    assert "slices" in await inner.slices("o1", resend, cs, rows, NOW)
    # A copy of the first that ran late, after the resend: refused as stale.
    assert await inner.slices("o1", first, cs, rows, NOW) == {"stale": True}
    assert (await _counter(client, prefix, cs[0]))[0] == CENT


async def test_a_dead_process_strands_its_slices_until_its_lease_expires(
    env: tuple[redis.asyncio.Redis, LeasedFactory, str], clock: Clock, engine: Any
) -> None:
    """Its slices stay until the lease expires; the purge then counts what it may have
    admitted without telling (in flight at its last call, plus its allowance) as spent and
    gives the rest back; its ledger rows then replace that part by what it really spent."""
    client, make, prefix = env
    dead = await make(lease_seconds=2)
    dead.book.interval = 0.02  # as the default flush (its loop stays off: flush_seconds)
    other = await make(lease_seconds=2)
    await prepare(other)
    cs = checks(lim("usd", "day", 100 * DOLLAR))
    grants = [await dead.reserve(f"d{i}", ask(), cs, NOW) for i in range(10)]
    assert all(isinstance(g, Grant) for g in grants)
    await dead.settle("d0", cs, grants[0].amounts, Actual(CENT, 100), NOW)  # type: ignore[union-attr]
    # Its last call (what it consumed is counted by then: COUNT_INTERVALS flush intervals on):
    # nine in flight, the slice grown for its rate.
    await dead._call("o1", NOW + 0.5)
    s = dead.book.tenants["o1"][cs[0].key]
    exposed, granted = s.held + s.allowance, s.granted
    assert granted > exposed > 0
    assert await _counter(client, prefix, cs[0]) == (CENT, granted)
    # It dies (its tasks stop; nothing more reaches Redis).
    assert dead._task is not None
    dead._task.cancel()
    dead.inner.close = dead.close = _nothing  # type: ignore[method-assign]
    # Before the lease expires the slice is still held...
    await other._call("o1", NOW + 1)
    assert (await _counter(client, prefix, cs[0]))[0] == CENT
    # ...after it, the next call of anyone purges it.
    clock.now = NOW + 3
    await other._call("o1", NOW + 3)
    used, reserved = await _counter(client, prefix, cs[0])
    assert used == CENT + exposed
    assert reserved == sum(sl.granted for sl in other.book.tenants.get("o1", {}).values())
    # Its ledger says what it really spent: d0 (counted by its last call), and three of the
    # nine in flight that finished before it died (the rest never did).
    holder = dead.inner.slice_lease
    rows = [_row("d0", CENT, holder)] + [_row(f"d{i}", 2 * CENT, holder) for i in (1, 2, 3)]
    rows.append(_row("exact", 5 * CENT, None))  # not its slices': never read
    async with LedgerWriter(engine, flush_interval=0.01) as writer:
        for row in rows:
            writer.submit(row)
    # Not before its rows can all be in (ledger_wait, 1 s here: the call's own background
    # unstrand, at NOW + 3, found it too early).
    assert await other.unstrand("o1", NOW + 3.5) == 0
    assert await other.unstrand("o1", NOW + 4) == 1
    assert await other.unstrand("o1", NOW + 4) == 0  # once
    used, _ = await _counter(client, prefix, cs[0])
    assert used == CENT + 3 * 2 * CENT  # the exposed part freed but for what it spent
    assert await client.hlen(f"{prefix}:{{o1}}:stranded") == 0


def _row(request_id: str, nanos: int, holder: str | None) -> LedgerRecord:
    return LedgerRecord(
        request_id=request_id,
        ts=datetime.fromtimestamp(NOW, UTC),
        endpoint="chat.completions",
        status="success",
        http_status=200,
        org_id="o1",
        cost_usd=Decimal(nanos) / 10**9,
        slice_holder=holder,
    )


async def _nothing() -> None:
    return None


async def test_lost_counters_are_rebuilt_first(
    env: tuple[redis.asyncio.Redis, LeasedFactory, str],
) -> None:
    client, make, prefix = env
    store = await make()
    cs = checks(lim("usd", "day", DOLLAR))
    with pytest.raises(CountersLost):  # never loaded
        await store.reserve("a", ask(), cs, NOW)
    await prepare(store)
    assert isinstance(await store.reserve("b", ask(), cs, NOW), Grant)
    await client.delete(f"{prefix}:{{o1}}:ready")  # as a flush would
    await store.settle("b", cs, [0], Actual(0, 0), NOW)
    with pytest.raises(CountersLost):
        await store._call("o1", NOW)
    assert store.book.holding() == []  # its slices are dropped


async def test_four_processes_never_overspend_a_hard_budget(
    env: tuple[redis.asyncio.Redis, LeasedFactory, str],
) -> None:
    """Many concurrent requests over four leasing processes against $1: admitted locally
    while there is room, exactly near the end; the settled spend never passes the limit and
    the budget is used up."""
    client, make, prefix = env
    # 150 concurrent requests a process, most of them on the exact path at the end: on a
    # loaded CI machine, waiting for one of the 64 pooled connections can take over a second.
    stores = [await make(flush_seconds=0.005, timeout=5.0) for _ in range(4)]
    await prepare(stores[0])
    cs = checks(lim("usd", "day", DOLLAR))
    rng = random.Random(21)
    spent = 0
    refused = 0

    async def one(i: int) -> None:
        nonlocal spent, refused
        store = stores[i % 4]
        a = ask(in_bound_nanos=rng.randint(100_000, 2_000_000), want_out=rng.choice([None, 500]))
        for _ in range(50):  # as a client retrying a 429
            result = await store.reserve(f"q{i}", a, cs, NOW)
            if isinstance(result, Refusal):
                if result.kind == "budget":
                    refused += 1
                    return
                await asyncio.sleep(0.01)
                continue
            await asyncio.sleep(rng.random() / 100)
            out = rng.randint(0, result.out_tokens or 500)
            cost = a.in_bound_nanos // 2 + out * a.out_pico // 1000
            assert cost <= result.amounts[0]
            await store.settle(f"q{i}", cs, result.amounts, Actual(cost, out), NOW)
            spent += cost
            return

    # A TaskGroup, not gather: if one request fails, the others are cancelled and awaited
    # before the stores close, so none is left using a closed client after the test.
    async with asyncio.TaskGroup() as group:
        for i in range(600):
            group.create_task(one(i))
    locally = sum(s.admitted_locally for s in stores)
    exactly = sum(s.reserved_exactly for s in stores)
    for store in stores:
        await store.close()
    used, reserved = await _counter(client, prefix, cs[0])
    print(f"\nspent ${spent / 10**9:.6f}: {locally} local, {exactly} exact, {refused} refused")
    assert used == spent <= DOLLAR
    assert reserved == 0
    assert spent > DOLLAR * 0.99  # used up
    assert locally > 0 and exactly > 0 and refused > 0
    assert await client.zcard(f"{prefix}:{{o1}}:leases") == 0


async def test_a_tight_rate_admits_its_whole_limit_even_near_a_bucket_s_end(
    env: tuple[redis.asyncio.Redis, LeasedFactory, str], clock: Clock
) -> None:
    """Near a bucket's end a process also leases the next bucket's slice. Its slices of one
    counter share one fair share, the current bucket's first: the next one's slice never
    holds room that a request of this bucket then finds missing on the exact path."""
    _, make, _ = env
    store = await make()
    await prepare(store)
    now = clock.now = math.floor(NOW) + 0.9  # the next one-second bucket is 0.1 s away
    cs = checks(lim("requests", "minute", 3), now=now)
    outcomes = []
    for i in range(4):
        result = await store.reserve(f"r{i}", ask(), cs, now)
        outcomes.append(type(result).__name__)
        if isinstance(result, Grant):
            await store.settle(f"r{i}", cs, result.amounts, Actual(CENT, 100, requests=1), now)
    assert outcomes == ["Grant", "Grant", "Grant", "Refusal"]
    # Tight: no bucket's slice holds anything the exact path could miss.
    assert [s.granted for s in store.book.tenants["o1"].values()] == [0] * len(
        store.book.tenants["o1"]
    )
