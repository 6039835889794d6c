"""The event bus without a log (one process): ids, ring, replay then live without gaps or
repeats, kind and org filters, slow subscribers cut off (publishers never wait), close."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from costwarden.core.event_kinds import (
    KINDS,
    BreakerChanged,
    EventPayload,
    RequestRefused,
    RequestSettled,
    SwitchChanged,
    request_event,
)
from costwarden.core.events import Event, EventBus, Subscription
from costwarden.core.records import LedgerRecord
from tests.helpers import FakeClock


def _tick(i: int, org: str | None = None) -> SwitchChanged:
    return SwitchChanged(org_id=org, feature="all", enabled=i % 2 == 0, message=str(i), actor="t")


async def _drain(subscription: Subscription, count: int) -> list[Event]:
    got: list[Event] = []
    for _ in range(count):
        event = await subscription.get(timeout=1)
        assert event is not None
        got.append(event)
    return got


async def test_publish_numbers_events_and_keeps_the_last_ones() -> None:
    clock = FakeClock(1000.0)
    bus = EventBus(capacity=3, clock=clock)
    for i in range(5):
        clock.advance(1)
        bus.publish(_tick(i))
    assert bus.last_id == 5
    # older than the ring: the last three are what it has
    assert await _drain(bus.subscribe(after=0), 3) == [
        Event(id=3, ts=1003.0, payload=_tick(2)),
        Event(id=4, ts=1004.0, payload=_tick(3)),
        Event(id=5, ts=1005.0, payload=_tick(4)),
    ]
    assert [e.id for e in await _drain(bus.subscribe(after=4), 1)] == [5]


def test_every_kind_round_trips_through_what_is_stored() -> None:
    record = LedgerRecord(
        request_id="req_1",
        ts=datetime(2027, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        endpoint="chat.completions",
        status="success",
        http_status=200,
        org_id="org_1",
        key_id="key_1",
        tags={"team": "search"},
        provider="openai",
        requested_model="gpt-4o-mini",
        input_tokens=10,
        output_tokens=5,
        cost_usd=Decimal("0.000001234500"),
        latency_ms=1.5,
    )
    settled = request_event(record)
    breaker = BreakerChanged(
        deployment="openai:gpt-4o-mini", from_state="closed", to_state="open", reason="r", at=None
    )
    hit = request_event(
        dataclasses.replace(
            record, status="cached", cost_usd=Decimal(0), saved_usd=Decimal("0.0000031"),
            route_reason="cache hit",
        )
    )  # fmt: skip
    payload: EventPayload
    for payload in (settled, breaker, _tick(1, "org_2"), hit):
        stored = orjson.loads(orjson.dumps(payload.stored(), default=str))
        assert KINDS[payload.kind].from_data(stored) == payload
    assert breaker.data()["from"] == "closed" and breaker.data()["to"] == "open"
    data = settled.data()
    assert data["cost_usd"] == "0.000001234500" and data["request_id"] == "req_1"
    assert "tags" not in data  # the stream shows ids, outcome, usage and cost
    assert hit.data()["saved_usd"] == "0.0000031" and hit.data()["route_reason"] == "cache hit"
    assert set(KINDS) >= {
        "request_settled",
        "request_refused",
        "limit_threshold_crossed",
        "breaker_changed",
        "switch_changed",
    }


def test_a_refused_request_is_its_own_kind() -> None:
    record = LedgerRecord(
        request_id="req_9",
        ts=datetime.now(UTC),
        endpoint="messages",
        status="blocked",
        http_status=402,
        org_id="org_1",
        key_id="key_1",
        requested_model="claude",
        error="daily budget",
    )
    event = request_event(record)
    assert isinstance(event, RequestRefused)
    data = event.data()
    assert (data["status"], data["http_status"], data["reason"]) == ("blocked", 402, "daily budget")
    record.status, record.http_status = "success", 200
    assert isinstance(request_event(record), RequestSettled)


async def test_subscribe_replays_after_an_id_then_goes_live() -> None:
    bus = EventBus()
    for i in range(4):
        bus.publish(_tick(i))
    subscription = bus.subscribe(after=2)
    bus.publish(_tick(4))
    got = await _drain(subscription, 3)
    assert [e.id for e in got] == [3, 4, 5]
    assert await subscription.get(timeout=0.05) is None
    live = bus.subscribe()  # live only
    bus.publish(_tick(5))
    assert [e.id for e in await _drain(live, 1)] == [6]
    assert [e.id for e in await _drain(subscription, 1)] == [6]


async def test_replay_beyond_the_ring_starts_at_the_oldest_kept() -> None:
    bus = EventBus(capacity=2)
    for i in range(5):
        bus.publish(_tick(i))
    subscription = bus.subscribe(after=1)
    assert [e.id for e in await _drain(subscription, 2)] == [4, 5]


async def test_filters_by_kind_and_org() -> None:
    bus = EventBus()
    by_org = bus.subscribe(after=0, org_id="org_a")
    by_kind = bus.subscribe(after=0, kinds=frozenset({"breaker_changed"}))
    bus.publish(_tick(0, "org_a"))
    bus.publish(_tick(1, "org_b"))
    bus.publish(_tick(2))  # platform-wide: not an org's
    bus.publish(BreakerChanged(deployment="d", from_state="closed", to_state="open", reason="r",
                               at=None))
    bus.publish(_tick(3, "org_a"))
    assert [e.id for e in await _drain(by_org, 2)] == [1, 5]
    assert [e.id for e in await _drain(by_kind, 1)] == [4]
    assert await by_org.get(timeout=0.05) is None
    assert await by_kind.get(timeout=0.05) is None


async def test_async_iteration() -> None:
    bus = EventBus()
    subscription = bus.subscribe(after=0)
    for i in range(3):
        bus.publish(_tick(i))
    seen = []
    async for event in subscription:
        seen.append(event.id)
        if len(seen) == 3:
            break
    assert seen == [1, 2, 3]


async def test_a_slow_subscriber_is_cut_off_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="costwarden.core.subscription")
    bus = EventBus(queue_size=3)
    slow = bus.subscribe()
    fast = bus.subscribe()
    for i in range(10):
        bus.publish(_tick(i))
        assert (await fast.get(timeout=1)) is not None  # keeps up
    assert slow.cut and not fast.cut
    assert bus.cut == 1 and bus.subscribers == 1
    with pytest.raises(StopAsyncIteration):  # nothing half-delivered: it ends
        await slow.get(timeout=1)
    assert slow.last_id == 0  # where it resumes from
    warnings = [r for r in caplog.records if "cut off" in r.getMessage()]
    assert len(warnings) == 1
    # what it missed is still there to resume from
    again = bus.subscribe(after=slow.last_id)
    assert [e.id for e in await _drain(again, 10)] == list(range(1, 11))


async def test_close_ends_subscriptions_after_what_they_got() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    bus.publish(_tick(0))
    waiter = bus.subscribe()
    task = asyncio.create_task(waiter.get())
    await asyncio.sleep(0)
    await bus.close()
    assert [e.id for e in await _drain(subscription, 1)] == [1]
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(task, 1)
    with pytest.raises(StopAsyncIteration):
        await subscription.get(timeout=1)
    late = bus.subscribe(after=0)  # a late subscriber gets the ring, then the end
    assert [e.id for e in await _drain(late, 1)] == [1]
    with pytest.raises(StopAsyncIteration):
        await late.get()
    assert bus.subscribers == 0
    bus.publish(_tick(1))  # after close: ignored, never raises
    assert bus.last_id == 1


async def test_end_streams_ends_subscribers_but_publishing_goes_on() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    bus.end_streams()
    with pytest.raises(StopAsyncIteration):
        await subscription.get(timeout=1)
    with pytest.raises(StopAsyncIteration):
        await bus.subscribe().get(timeout=1)
    bus.publish(_tick(0))
    assert bus.last_id == 1


async def test_closed_subscriptions_unsubscribe() -> None:
    bus = EventBus()
    with bus.subscribe():
        assert bus.subscribers == 1
    assert bus.subscribers == 0


def test_bad_sizes() -> None:
    with pytest.raises(ValueError):
        EventBus(capacity=0)
    with pytest.raises(ValueError):
        EventBus(queue_size=0)
