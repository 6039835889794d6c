"""The event log behind the bus, on SQLite and PostgreSQL, with and without the Redis relay:
one global order across processes (here: buses with engines and Redis clients of their
own), resume from the log, a Redis that drops or stalls, retention."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import redis
import redis.asyncio
import sqlalchemy as sa

from costwarden.core.event_kinds import LimitThresholdCrossed, SwitchChanged
from costwarden.core.events import Event, EventBus, Subscription
from costwarden.storage.db import create_engine_for
from costwarden.storage.event_log import SqlEventLog
from costwarden.storage.event_relay import RedisEventRelay
from costwarden.storage.migrate import migrate
from costwarden.storage.redis import redis_client
from tests.helpers import FakeClock


def _ev(process: str, i: int, org: str | None = None) -> SwitchChanged:
    return SwitchChanged(org_id=org, feature="all", enabled=True, message=f"{process}{i}",
                         actor=process)


@asynccontextmanager
async def _buses(
    database_url: str,
    count: int = 2,
    *,
    redis_url: str | None = None,
    clock: Callable[[], float] = time.time,
    **options: float,
) -> AsyncIterator[list[EventBus]]:
    """``count`` buses, each with an engine (and a Redis client) of its own, like processes."""
    migrate(database_url)
    async with AsyncExitStack() as stack:
        buses = []
        for _ in range(count):
            engine = create_engine_for(database_url)
            stack.callback(engine.dispose)
            relay = None
            if redis_url is not None:
                client = redis_client(redis_url, timeout=0.5, max_connections=8)
                stack.push_async_callback(client.aclose)
                relay = RedisEventRelay(client)
            bus = EventBus(log=SqlEventLog(engine), relay=relay, clock=clock, **options)
            await bus.start()
            stack.push_async_callback(bus.close)
            buses.append(bus)
        if redis_url is not None:
            await _until(lambda: all(b.relay_up for b in buses))
        yield buses


async def _until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.01)


async def _take(subscription: Subscription, count: int, within: float = 10.0) -> list[Event]:
    got: list[Event] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            event = await subscription.get()
            assert event is not None
            got.append(event)
    return got


async def _interleave(a: EventBus, b: EventBus, count: int) -> None:
    for i in range(count):
        a.publish(_ev("a", i))
        b.publish(_ev("b", i))
        if i % 25 == 0:
            await asyncio.sleep(0.005)  # batches of both cross on the way


async def test_two_processes_see_one_order_through_the_log_alone(database_url: str) -> None:
    async with _buses(database_url, poll_interval=0.05) as (a, b):
        sa_, sb = a.subscribe(), b.subscribe()
        await _interleave(a, b, 150)
        got_a, got_b = await _take(sa_, 300), await _take(sb, 300)
        ids = [e.id for e in got_a]
        assert ids == list(range(ids[0], ids[0] + 300))  # consecutive: none lost, none twice
        assert [(e.id, e.payload) for e in got_a] == [(e.id, e.payload) for e in got_b]
        # each process's own events keep their order
        assert [e.payload.message for e in got_a if e.payload.actor == "a"] == [
            f"a{i}" for i in range(150)
        ]
        assert await sb.get(timeout=0.2) is None


async def test_a_late_process_replays_from_the_log(database_url: str) -> None:
    async with _buses(database_url, 1, capacity=10) as (a,):
        live = a.subscribe()
        for i in range(100):
            a.publish(_ev("a", i))
        got = await _take(live, 100)
        first = got[0].id
        async with _buses(database_url, 1, capacity=10) as (late,):
            assert late.last_id == got[-1].id  # starts at the log's end
            resumed = late.subscribe(after=first + 19)
            a.publish(_ev("a", 100))
            again = await _take(resumed, 81)
            assert [e.id for e in again] == list(range(first + 20, first + 101))
            assert again[-1].payload.message == "a100"
            # older than the ring of the process that raised them: from the log too
            old = a.subscribe(after=first - 1)
            assert [e.id for e in await _take(old, 101)] == list(range(first, first + 101))


async def test_through_redis_in_order_and_fast(database_url: str, private_redis: str) -> None:
    async with _buses(database_url, redis_url=private_redis, poll_interval=30) as (a, b):
        sb = b.subscribe()
        await _interleave(a, b, 200)
        got = await _take(sb, 400, within=5)
        ids = [e.id for e in got]
        assert ids == list(range(ids[0], ids[0] + 400))
        # one event, published in a, delivered in b: well under the poll interval (30 s)
        started = time.monotonic()
        a.publish(_ev("a", 999))
        (event,) = await _take(sb, 1, within=1)
        assert event.payload.message == "a999"
        assert time.monotonic() - started < 0.5


async def test_a_dropped_redis_connection_loses_nothing(
    database_url: str, private_redis: str
) -> None:
    admin = redis.Redis.from_url(private_redis)
    async with _buses(database_url, redis_url=private_redis, poll_interval=0.2) as (a, b):
        sa_, sb = a.subscribe(), b.subscribe()
        for i in range(20):
            a.publish(_ev("a", i))
        await _take(sb, 20)
        admin.client_kill_filter(_type="pubsub")
        await _until(lambda: not b.relay_up)
        for i in range(20, 60):
            a.publish(_ev("a", i))
            b.publish(_ev("b", i))
        await _until(lambda: b.relay_up and a.relay_up)
        for i in range(60, 80):
            a.publish(_ev("a", i))
        got_b = await _take(sb, 100)
        got_a = await _take(sa_, 120)
        ids = [e.id for e in got_b]
        assert ids == list(range(ids[0], ids[0] + 100))
        assert [e.id for e in got_a[20:]] == ids  # the same order in both processes
        assert await sb.get(timeout=0.3) is None
    admin.close()


async def test_a_stalled_redis_delays_no_one(database_url: str, private_redis: str) -> None:
    """SIGSTOP: Redis answers nothing. Each process's own events still stream at once; the
    other's arrive through the log; after SIGCONT, nothing twice."""
    admin = redis.Redis.from_url(private_redis)
    pid = int(admin.info("server")["process_id"])
    async with _buses(database_url, redis_url=private_redis, poll_interval=0.2) as (a, b):
        sa_, sb = a.subscribe(), b.subscribe()
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            a.publish(_ev("a", 0))
            (own,) = await _take(sa_, 1, within=1)
            assert time.monotonic() - started < 0.3
            (other,) = await _take(sb, 1, within=3)
            assert other.id == own.id
            for i in range(1, 30):
                a.publish(_ev("a", i))
            await _take(sb, 29, within=5)
        finally:
            os.kill(pid, signal.SIGCONT)
        a.publish(_ev("a", 30))
        (last,) = await _take(sb, 1)
        assert last.payload.message == "a30" and last.id == own.id + 30
        assert await sb.get(timeout=0.3) is None
    admin.close()


async def test_retention_prunes_old_events(database_url: str) -> None:
    clock = FakeClock(1_000_000.0)
    async with _buses(database_url, 1, clock=clock, retention_seconds=3600) as (bus,):
        sub = bus.subscribe()
        bus.publish(_ev("a", 0))
        clock.advance(7200)
        bus.publish(_ev("a", 1))
        await _take(sub, 2)
        await bus._prune()
        engine = create_engine_for(database_url)
        with engine.connect() as conn:
            left = conn.execute(sa.text("SELECT events FROM event_log")).scalars().all()
        engine.dispose()
        assert len(left) == 1 and '"a1"' in left[0]


async def test_the_log_survives_a_restart(database_url: str) -> None:
    async with _buses(database_url, 1) as (bus,):
        sub = bus.subscribe()
        for i in range(5):
            bus.publish(_ev("a", i))
        first = (await _take(sub, 5))[0].id
    async with _buses(database_url, 1) as (bus,):  # a new process: ids go on
        assert bus.last_id == first + 4
        sub = bus.subscribe(after=first + 1)
        bus.publish(_ev("a", 5))
        assert [e.payload.message for e in await _take(sub, 4)] == ["a2", "a3", "a4", "a5"]


async def test_a_background_consumer_hurries_only_its_own_kinds(database_url: str) -> None:
    # No Redis, no live stream: events gather for the idle interval (here 3 s), except the
    # kinds a background consumer waits for, which go out within the flush interval.
    async with _buses(database_url, 1, idle_flush_interval=3.0) as (bus,):
        start = bus.last_id
        consumer = bus.subscribe(kinds=frozenset({"limit_threshold_crossed"}), background=True)
        assert bus.subscribers == 0  # not a live stream
        await asyncio.sleep(0.1)  # the writer is idle now
        bus.publish(_ev("a", 1))
        await asyncio.sleep(1.0)
        assert bus.last_id == start  # gathering
        bus.publish(LimitThresholdCrossed(
            scope="org", scope_id="o", window="day", metric="usd", threshold_pct=50,
            used="1", limit="2",
        ))  # fmt: skip
        started = time.monotonic()
        got = await consumer.get(timeout=2.0)
        assert got is not None and time.monotonic() - started < 0.5
        assert bus.last_id == start + 2  # the batch went out whole
        consumer.close()
        bus.publish(_ev("a", 2))  # no urgent kind left: gathering again
        await asyncio.sleep(1.0)
        assert bus.last_id == start + 2


async def test_with_redis_events_gather_until_another_process_waits(
    database_url: str, private_redis: str
) -> None:
    """Two processes on the relay, no one waiting: events gather (idle interval 3 s). A live
    stream in the other process is announced: they go out at once, and arrive there fast;
    its background consumer hurries only its kinds; with both closed they gather again."""
    async with _buses(database_url, redis_url=private_redis, idle_flush_interval=3.0) as (a, b):
        start = a.last_id
        await asyncio.sleep(0.1)  # both writers idle
        a.publish(_ev("a", 1))
        await asyncio.sleep(1.0)
        assert a.last_id == start  # gathering: no one waits
        started = time.monotonic()
        stream = b.subscribe()  # b announces it; a writes what it holds at once
        (event,) = await _take(stream, 1, within=2)
        assert event.payload.message == "a1" and time.monotonic() - started < 0.5
        a.publish(_ev("a", 2))
        (event,) = await _take(stream, 1, within=1)
        assert event.payload.message == "a2" and time.monotonic() - started < 0.7
        stream.close()
        consumer = b.subscribe(kinds=frozenset({"limit_threshold_crossed"}), background=True)
        await _until(lambda: not a._remote.every and bool(a._remote.kinds))
        before = a.last_id
        a.publish(_ev("a", 3))
        await asyncio.sleep(1.0)
        assert a.last_id == before  # not a kind anyone waits for: gathering
        a.publish(LimitThresholdCrossed(
            scope="org", scope_id="o", window="day", metric="usd", threshold_pct=50,
            used="1", limit="2",
        ))  # fmt: skip
        started = time.monotonic()
        got = await consumer.get(timeout=2.0)
        assert got is not None and got.kind == "limit_threshold_crossed"
        assert time.monotonic() - started < 0.5
        consumer.close()
        await _until(lambda: not a._remote.kinds)
        before = a.last_id
        a.publish(_ev("a", 4))
        await asyncio.sleep(1.0)
        assert a.last_id == before


async def test_two_deployments_on_two_databases_of_one_redis_do_not_hear_each_other(
    private_redis: str,
) -> None:
    """Pub/sub channels are server-wide: each database gets its own (storage.redis.db_tag)."""
    clients = [
        redis_client(f"{private_redis}/{db}", timeout=0.5, max_connections=8) for db in (0, 3, 3)
    ]
    relays = [RedisEventRelay(c) for c in clients]
    heard: list[list[bytes]] = [[], [], []]
    ready = [asyncio.Event() for _ in relays]

    async def listen(i: int) -> None:
        async for message in relays[i].listen(ready[i].set):
            heard[i].append(message)

    tasks = [asyncio.create_task(listen(i)) for i in range(3)]
    try:
        for event in ready:
            await asyncio.wait_for(event.wait(), 5)
        await relays[1].publish(b"from db 3")
        await relays[0].publish(b"from db 0")
        await _until(lambda: heard[0] == [b"from db 0"] and heard[2] == [b"from db 3"])
        await asyncio.sleep(0.2)
        assert heard == [[b"from db 0"], [b"from db 3"], [b"from db 3"]]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.aclose()
