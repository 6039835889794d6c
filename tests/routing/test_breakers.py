"""The breaker board: transitions recorded in ``breaker_transitions`` and published on the event
bus, probe expiry, audited resets, a database that fails; and with Redis, several boards
(gateway processes) sharing state: a breaker one opens is open in all within a second, one
probe across all of them, resets everywhere, lost messages caught by polling, Redis down.

Redis tests use db 15 with a fresh key prefix each and flush db 15 afterwards; they are
skipped with the reason shown when Redis is unreachable (a failure when ``CI`` is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from sqlalchemy.engine import Engine

from costwarden.core.errors import InvalidInput, NotFound
from costwarden.core.events import EventBus
from costwarden.routing.breaker import CLOSED, HALF_OPEN, OPEN, BreakerPolicy
from costwarden.routing.breakers import EVENT_KIND, BreakerBoard
from costwarden.storage.audit import audit_entries
from costwarden.storage.breakers import SqlBreakerRecorder, list_transitions
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from tests.helpers import FakeClock, free_port, process_redis, require_redis

REDIS_URL = os.environ.get("COSTWARDEN_TEST_REDIS", "redis://127.0.0.1:6379/15")
T0 = 1_800_000_000.0
A = "openai:gpt-4o-mini"
B = "anthropic:claude-haiku-4-5"
POLICY = BreakerPolicy(failure_threshold=3, cooldown_seconds=60, probe_timeout_seconds=30)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine_for(f"sqlite:///{tmp_path}/cw.db")
    migrate(engine)
    yield engine
    engine.dispose()


@asynccontextmanager
async def _board(
    engine: Engine, clock: FakeClock, redis_url: str | None = None, **kwargs: Any
) -> AsyncIterator[tuple[BreakerBoard, EventBus]]:
    """A started board; with ``redis_url``, on a client of its own as the app builds it."""
    async with contextlib.AsyncExitStack() as stack:
        if redis_url is not None:
            kwargs["redis"] = await stack.enter_async_context(process_redis(redis_url))
        events = EventBus(clock=clock)
        board = BreakerBoard(
            [A, B],
            POLICY,
            recorder=SqlBreakerRecorder(engine),
            events=events,
            clock=clock,
            **kwargs,
        )
        await board.start()
        try:
            yield board, events
        finally:
            await board.close()


def _trip(board: BreakerBoard, deployment: str = A) -> None:
    for _ in range(POLICY.failure_threshold):
        board.failure(deployment, "status 503")
    assert board.state(deployment) == OPEN


def _run_without_suspending(coro: Coroutine[Any, Any, bool]) -> bool:
    """The coroutine's result, asserting it finished without awaiting anything."""
    with pytest.raises(StopIteration) as finished:
        coro.send(None)
    result: bool = finished.value.value
    return result


# --------------------------------------------------------------------------- one process


async def test_transitions_are_recorded_and_published(engine: Engine, clock: FakeClock) -> None:
    async with _board(engine, clock) as (board, events):
        subscription = events.subscribe()
        _trip(board)
        assert board.state(B) == CLOSED
        clock.advance(60)
        assert await board.admit(A) is True
        assert board.state(A) == HALF_OPEN
        clock.advance(1)
        board.success(A)
        assert board.state(A) == CLOSED
        await board.flush()
        rows = list_transitions(engine, deployment=A)
        got = [(r.from_state, r.to_state, r.reason) for r in reversed(rows)]
        assert got == [
            (CLOSED, OPEN, "3 consecutive failures; last: status 503"),
            (OPEN, HALF_OPEN, "cooldown of 60s over; probing"),
            (HALF_OPEN, CLOSED, "probe succeeded"),
        ]
        assert rows[0].ts.timestamp() == T0 + 61
        published = [await subscription.get(timeout=1) for _ in range(3)]
        assert [e.kind for e in published if e] == [EVENT_KIND] * 3
        assert published[0] is not None and published[0].data == {
            "deployment": A,
            "from": CLOSED,
            "to": OPEN,
            "reason": "3 consecutive failures; last: status 503",
            "at": "2027-01-15T08:00:00+00:00",
            "org_id": None,
        }
        assert await subscription.get(timeout=0.05) is None  # nothing else happened
    assert list_transitions(engine, deployment=B) == []


async def test_open_is_logged_as_a_warning(
    engine: Engine, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="costwarden.routing.breakers")
    async with _board(engine, clock) as (board, _):
        _trip(board)
        clock.advance(60)
        await board.admit(A)
    levels = {r.getMessage().split("(")[0]: r.levelno for r in caplog.records}
    assert levels[f"circuit breaker {A}: closed -> open "] == logging.WARNING
    assert levels[f"circuit breaker {A}: open -> half_open "] == logging.INFO


async def test_admit_does_not_suspend_without_redis_io(engine: Engine, clock: FakeClock) -> None:
    async with _board(engine, clock) as (board, _):
        assert _run_without_suspending(board.admit(A)) is True
        _trip(board)
        assert _run_without_suspending(board.admit(A)) is False  # cooldown running
        clock.advance(60)
        assert _run_without_suspending(board.admit(A)) is True  # the probe
        assert _run_without_suspending(board.admit(A)) is False  # probe out


async def test_closed_admit_does_not_suspend_with_redis(
    redis_ready: None, engine: Engine, clock: FakeClock
) -> None:
    async with _board(engine, clock, redis_url=REDIS_URL, prefix=_prefix()) as (board, _):
        for _ in range(100):
            assert _run_without_suspending(board.admit(A)) is True
            board.success(A)


async def test_a_silent_probe_expires(
    engine: Engine, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="costwarden.routing.breakers")
    async with _board(engine, clock) as (board, _):
        _trip(board)
        clock.advance(60)
        assert await board.admit(A) is True  # this probe's caller crashes: never reports
        clock.advance(29.9)
        assert await board.admit(A) is False
        clock.advance(0.1)
        assert await board.admit(A) is True  # the slot expired: another probe goes
        assert await board.admit(A) is False
        assert board.state(A) == HALF_OPEN
        board.failure(A, "timeout")
        assert board.state(A) == OPEN
        await board.flush()
        tos = [r.to_state for r in reversed(list_transitions(engine, deployment=A))]
        assert tos == [OPEN, HALF_OPEN, OPEN]
    assert any("slot expired" in r.getMessage() for r in caplog.records)


async def test_reset_is_audited(engine: Engine, clock: FakeClock) -> None:
    async with _board(engine, clock) as (board, events):
        _trip(board)
        subscription = events.subscribe()
        clock.advance(5)
        await board.reset(A, actor="alice")
        assert board.state(A) == CLOSED
        health = board.health_of(A)
        assert health["consecutive_failures"] == 0 and health["opened_at"] is None
        (entry,) = audit_entries(engine, action="breaker.reset")
        assert (entry.actor, entry.target) == ("alice", A)
        assert entry.old_value == {
            "state": OPEN,
            "reason": "3 consecutive failures; last: status 503",
            "opened_at": "2027-01-15T08:00:00+00:00",
            "consecutive_failures": 3,
        }
        assert entry.new_value == {"state": CLOSED}
        event = await subscription.get(timeout=1)
        assert event is not None and event.data["reason"] == "reset by alice"
        await board.flush()
        assert list_transitions(engine, deployment=A)[0].reason == "reset by alice"


async def test_reset_refuses_unknown_deployments_and_bad_actors(
    engine: Engine, clock: FakeClock
) -> None:
    async with _board(engine, clock) as (board, _):
        _trip(board)
        with pytest.raises(NotFound, match="unknown deployment 'openai:nope'") as info:
            await board.reset("openai:nope", actor="alice")
        assert A in str(info.value)  # names the known ones
        for actor in ("", "   ", "a\x00b", "x" * 201):
            with pytest.raises(InvalidInput):
                await board.reset(A, actor=actor)
        assert board.state(A) == OPEN
        assert audit_entries(engine, action="breaker.reset") == []
        with pytest.raises(KeyError):
            await board.admit("openai:nope")
        with pytest.raises(KeyError):
            board.success("openai:nope")


async def test_health_lists_every_deployment(engine: Engine, clock: FakeClock) -> None:
    async with _board(engine, clock) as (board, _):
        board.success(B)
        board.failure(B, "timeout")
        _trip(board)
        health = board.health()
        assert [h["deployment"] for h in health] == sorted([A, B])
        by_id = {h["deployment"]: h for h in health}
        assert by_id[B]["state"] == CLOSED
        assert by_id[B]["error_rate"] == 0.5 and by_id[B]["requests_in_window"] == 2
        assert by_id[A]["retry_at"] == "2027-01-15T08:01:00+00:00"
        assert by_id[A]["error_rate"] == 1.0


async def test_a_database_failure_is_logged_and_harmless(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    bare = create_engine_for(f"sqlite:///{tmp_path}/unmigrated.db")  # no tables
    try:
        async with _board(bare, clock) as (board, _):
            _trip(board)
            await board.flush()
            assert board.state(A) == OPEN
            clock.advance(60)
            assert await board.admit(A) is True
    finally:
        bare.dispose()
    assert any("could not record 1 breaker transition" in r.getMessage() for r in caplog.records)


async def test_close_writes_pending_transitions(engine: Engine, clock: FakeClock) -> None:
    recorder = SqlBreakerRecorder(engine)
    board = BreakerBoard([A], POLICY, recorder=recorder, events=EventBus(), clock=clock)
    await board.start()
    _trip(board)
    await board.close()
    assert [r.to_state for r in list_transitions(engine)] == [OPEN]
    # made without start(): written at close too
    unstarted = BreakerBoard([B], POLICY, recorder=recorder, events=EventBus(), clock=clock)
    _trip(unstarted, B)
    await unstarted.close()
    assert len(list_transitions(engine, deployment=B)) == 1


async def test_sync_seconds_is_validated(engine: Engine) -> None:
    recorder = SqlBreakerRecorder(engine)
    for bad in (0, -1, 61, True):
        with pytest.raises(InvalidInput):
            BreakerBoard([A], POLICY, recorder=recorder, events=EventBus(), sync_seconds=bad)


async def test_records_on_postgresql_too(
    database_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    engine = create_engine_for(database_url)
    try:
        await asyncio.to_thread(migrate, engine)
        async with _board(engine, clock) as (board, _):
            _trip(board)
            await board.reset(A, actor="ops")
            await board.flush()
            rows = await asyncio.to_thread(list_transitions, engine, deployment=A)
            assert [r.to_state for r in reversed(rows)] == [OPEN, CLOSED]
            assert len(audit_entries(engine, action="breaker.reset")) == 1
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_ready() -> None:
    require_redis(REDIS_URL)


def _prefix() -> str:
    return f"cwtest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(redis_ready: None) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.flushdb()
    await client.aclose()


@asynccontextmanager
async def _shared_boards(
    engine: Engine,
    clock: FakeClock,
    count: int = 2,
    prefix: str | None = None,
    sync_seconds: float = 0.2,
) -> AsyncIterator[list[BreakerBoard]]:
    """``count`` boards sharing one Redis prefix: gateway processes of one deployment."""
    shared = prefix or _prefix()
    async with contextlib.AsyncExitStack() as stack:
        boards = [
            BreakerBoard(
                [A, B],
                POLICY,
                recorder=SqlBreakerRecorder(engine),
                events=EventBus(),
                clock=clock,
                redis=await stack.enter_async_context(process_redis(REDIS_URL)),
                sync_seconds=sync_seconds,
                prefix=shared,
            )
            for _ in range(count)
        ]
        for board in boards:
            await board.start()
        try:
            yield boards
        finally:
            for board in boards:
                await board.close()


async def _eventually(check: Callable[[], bool], within: float = 1.0) -> float:
    """Seconds until ``check()`` held; fails after ``within``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not check():
        if loop.time() - start > within:
            raise AssertionError(f"not within {within}s")
        await asyncio.sleep(0.01)
    return loop.time() - start


async def test_a_breaker_opened_in_one_process_is_open_in_the_other(
    redis_client: redis.asyncio.Redis, engine: Engine, clock: FakeClock
) -> None:
    async with _shared_boards(engine, clock) as (one, two):
        subscription = two._events.subscribe()
        _trip(one)
        await _eventually(lambda: two.state(A) == OPEN)
        assert two.state(B) == CLOSED
        assert two.health_of(A)["retry_at"] == one.health_of(A)["retry_at"]
        assert two.health_of(A)["reason"] == "3 consecutive failures; last: status 503"
        assert await two.admit(A) is False
        # Raised once, by the process that made the transition: the event log carries it
        # to the others (each board here has a bus of its own, without a log).
        assert await subscription.get(timeout=0.2) is None
        await one.flush()
        await two.flush()
        # recorded once, by the process that made the transition
        assert [r.to_state for r in list_transitions(engine, deployment=A)] == [OPEN]


async def test_changes_travel_by_pubsub_without_waiting_for_the_poll(
    redis_client: redis.asyncio.Redis, engine: Engine, clock: FakeClock
) -> None:
    async with _shared_boards(engine, clock, sync_seconds=30) as (one, two):
        await asyncio.sleep(0.3)  # both subscribed; the next poll is 30 s away
        _trip(one)
        assert await _eventually(lambda: two.state(A) == OPEN, within=0.5) < 0.5
        await two.reset(A, actor="ops")
        await _eventually(lambda: one.state(A) == CLOSED, within=0.5)


async def test_only_one_process_gets_the_probe(
    redis_client: redis.asyncio.Redis, engine: Engine, clock: FakeClock
) -> None:
    async with _shared_boards(engine, clock, count=3) as boards:
        _trip(boards[0])
        await _eventually(lambda: all(b.state(A) == OPEN for b in boards))
        clock.advance(60)
        results = await asyncio.gather(*(b.admit(A) for b in boards for _ in range(5)))
        assert results.count(True) == 1
        winner = boards[results.index(True) // 5]
        assert winner.state(A) == HALF_OPEN
        assert not any(await asyncio.gather(*(b.admit(A) for b in boards)))
        others = [b for b in boards if b is not winner]
        await _eventually(lambda: all(b.state(A) == HALF_OPEN for b in others))
        winner.success(A)
        await _eventually(lambda: all(b.state(A) == CLOSED for b in boards))
        assert all(await asyncio.gather(*(b.admit(A) for b in boards)))


async def test_a_silent_probe_expires_across_processes(
    redis_client: redis.asyncio.Redis, engine: Engine, clock: FakeClock
) -> None:
    async with _shared_boards(engine, clock) as (one, two):
        _trip(one)
        await _eventually(lambda: two.state(A) == OPEN)
        clock.advance(60)
        assert await one.admit(A) is True  # one's probe never reports (its caller died)
        clock.advance(29)
        assert await two.admit(A) is False
        clock.advance(1)
        assert await two.admit(A) is True  # the slot expired: two probes now
        assert await one.admit(A) is False
        two.failure(A, "status 500")
        await _eventually(lambda: one.state(A) == OPEN)
        assert one.health_of(A)["opened_at"] == two.health_of(A)["opened_at"]
        clock.advance(60)
        # a new cooldown, a new slot: nobody holds it from the last round
        assert await one.admit(A) is True


async def test_a_reset_closes_the_breaker_everywhere(
    redis_client: redis.asyncio.Redis, engine: Engine, clock: FakeClock
) -> None:
    async with _shared_boards(engine, clock) as (one, two):
        _trip(one)
        await _eventually(lambda: two.state(A) == OPEN)
        await two.reset(A, actor="ops")
        await _eventually(lambda: one.state(A) == CLOSED)
        (entry,) = audit_entries(engine, action="breaker.reset")
        assert entry.old_value["state"] == OPEN


async def test_polling_catches_what_pubsub_missed(
    redis_client: redis.asyncio.Redis, engine: Engine, clock: FakeClock
) -> None:
    prefix = _prefix()
    async with _shared_boards(engine, clock, count=1, prefix=prefix) as (board,):
        # another process's write whose message got lost: only the hash changes
        key = f"{prefix}:breaker:state:{B}"
        await redis_client.hset(
            key,
            mapping={
                "state": OPEN,
                "opened_at": repr(T0),
                "reason": "written elsewhere",
                "at": repr(T0),
                "origin": "someone-else",
                "version": 7,
            },
        )
        await _eventually(lambda: board.state(B) == OPEN)
        assert board.health_of(B)["reason"] == "written elsewhere"


async def test_state_lost_in_redis_is_shared_again(
    redis_client: redis.asyncio.Redis, engine: Engine, clock: FakeClock
) -> None:
    prefix = _prefix()
    async with _shared_boards(engine, clock, prefix=prefix) as (one, two):
        _trip(one)
        key = f"{prefix}:breaker:state:{A}"
        await _eventually(lambda: two.state(A) == OPEN)
        await redis_client.delete(key)  # a flush, a Redis restart

        async def _back() -> str | None:
            value: str | None = await redis_client.hget(key, "state")
            return value

        for _ in range(100):
            if await _back() == OPEN:
                break
            await asyncio.sleep(0.02)
        assert await _back() == OPEN


async def test_redis_down_means_local_state_and_one_warning(
    engine: Engine, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="costwarden.routing.breakers")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with _board(engine, clock, redis_url=dead, sync_seconds=0.05) as (board, _):
        _trip(board)
        _trip(board, B)
        clock.advance(60)
        assert await board.admit(A) is True
        assert await board.admit(A) is False
        assert await board.admit(B) is True
        board.success(A)
        assert board.state(A) == CLOSED
        await asyncio.sleep(0.3)  # several sync rounds fail meanwhile
        await board.reset(B, actor="ops")
        assert board.state(B) == CLOSED
        await board.flush()
        assert len(list_transitions(engine)) == 6
    warnings = [r for r in caplog.records if "redis unreachable" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert board.redis_down
