"""The event bus: ids and ring buffer, replay then live without gaps or repeats, slow
subscribers drop their oldest events (publishers never wait), close ends subscriptions."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from costwarden.core.events import Event, EventBus, Subscription
from tests.helpers import FakeClock


async def _drain(subscription: Subscription, count: int) -> list[Event]:
    got: list[Event] = []
    for _ in range(count):
        event = await subscription.get(timeout=1)
        assert event is not None
        got.append(event)
    return got


def test_publish_numbers_events_and_keeps_the_last_ones() -> None:
    clock = FakeClock(1000.0)
    bus = EventBus(capacity=3, clock=clock)
    events = []
    for i in range(5):
        clock.advance(1)
        events.append(bus.publish("tick", {"i": i}))
    assert [e.id for e in events] == [1, 2, 3, 4, 5]
    assert events[0] == Event(id=1, kind="tick", ts=1001.0, data={"i": 0})
    assert [e.id for e in bus.recent()] == [3, 4, 5]
    assert [e.id for e in bus.recent(after=4)] == [5]
    assert bus.last_id == 5


async def test_subscribe_replays_after_an_id_then_goes_live() -> None:
    bus = EventBus()
    for i in range(4):
        bus.publish("tick", {"i": i})
    subscription = bus.subscribe(after=2)
    bus.publish("tick", {"i": 4})
    got = await _drain(subscription, 3)
    assert [e.id for e in got] == [3, 4, 5]
    assert await subscription.get(timeout=0.05) is None
    live = bus.subscribe()  # live only
    bus.publish("tock", {})
    assert [e.kind for e in await _drain(live, 1)] == ["tock"]
    assert [e.id for e in await _drain(subscription, 1)] == [6]


async def test_replay_of_an_id_from_an_earlier_process_sends_everything_buffered() -> None:
    bus = EventBus()
    bus.publish("a", {})
    bus.publish("b", {})
    subscription = bus.subscribe(after=9_999)
    assert [e.kind for e in await _drain(subscription, 2)] == ["a", "b"]


async def test_replay_beyond_the_buffer_starts_at_the_oldest_kept() -> None:
    bus = EventBus(capacity=2)
    for i in range(5):
        bus.publish("tick", {"i": i})
    subscription = bus.subscribe(after=1)
    assert [e.id for e in await _drain(subscription, 2)] == [4, 5]


async def test_async_iteration() -> None:
    bus = EventBus()
    subscription = bus.subscribe(after=0)
    for i in range(3):
        bus.publish("tick", {"i": i})
    seen = []
    async for event in subscription:
        seen.append(event.data["i"])
        if len(seen) == 3:
            break
    assert seen == [0, 1, 2]


async def test_a_slow_subscriber_drops_its_oldest_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="costwarden.core.events")
    bus = EventBus(queue_size=3)
    slow = bus.subscribe()
    fast = bus.subscribe()
    for i in range(10):
        bus.publish("tick", {"i": i})
        assert (await fast.get(timeout=1)) is not None  # keeps up
    assert slow.dropped == 7
    assert [e.data["i"] for e in await _drain(slow, 3)] == [7, 8, 9]
    assert fast.dropped == 0
    warnings = [r for r in caplog.records if "falling behind" in r.getMessage()]
    assert len(warnings) == 1  # once per episode, not per dropped event
    assert await slow.get(timeout=0.01) is None  # caught up; a new episode warns again
    fast.close()
    for i in range(5):
        bus.publish("tick", {"i": i})
    assert len([r for r in caplog.records if "falling behind" in r.getMessage()]) == 2


async def test_close_ends_subscriptions_after_what_they_got() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    bus.publish("last", {})
    waiter = bus.subscribe()
    task = asyncio.create_task(waiter.get())
    await asyncio.sleep(0)
    bus.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(task, 1)
    assert [e.kind for e in await _drain(subscription, 1)] == ["last"]
    with pytest.raises(StopAsyncIteration):
        await subscription.get(timeout=1)
    late = bus.subscribe(after=0)  # a late subscriber gets the buffer, then the end
    assert [e.kind for e in await _drain(late, 1)] == ["last"]
    with pytest.raises(StopAsyncIteration):
        await late.get()
    assert bus.subscribers == 0


async def test_closed_or_dropped_subscriptions_unsubscribe() -> None:
    bus = EventBus()
    with bus.subscribe():
        assert bus.subscribers == 1
    assert bus.subscribers == 0
    bus.subscribe()  # never closed, not referenced
    gc.collect()
    assert bus.subscribers == 0


def test_bad_sizes() -> None:
    with pytest.raises(ValueError):
        EventBus(capacity=0)
    with pytest.raises(ValueError):
        EventBus(queue_size=0)
