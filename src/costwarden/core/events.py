"""The in-process event bus: typed events fanned out to live subscribers (SSE, later webhooks).

``publish`` is synchronous and never waits: it appends the event to a ring buffer of the last
``capacity`` events and offers it to every subscriber's bounded queue. A subscriber that does
not keep up loses its *oldest* undelivered events (with a warning), never the publisher's
time: publishers sit on the request path and on background loops that must not stall.

``subscribe(after)`` replays the buffered events with an id above ``after`` and then goes
live; the subscriber is registered before the replay is read, so nothing published in
between is lost or delivered twice. Ids grow by one per event and start at 1 in each
process: an ``after`` beyond the newest id comes from an earlier process (a client resuming
across a restart), so everything still buffered is replayed.

Everything here runs on the event loop's thread; ``close`` (shutdown) ends every
subscription, so long-lived streams do not hold the server open.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 1000
DEFAULT_QUEUE_SIZE = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    id: int  # grows by one per event, per process
    kind: str  # e.g. "breaker_changed"
    ts: float  # epoch seconds
    data: dict[str, Any]


class _Closed:
    """Put in a subscriber's queue when the bus closes."""


_CLOSED = _Closed()


class Subscription:
    """Events after a point, then live ones; an async iterator. ``close()`` unsubscribes.

    Dropped (never closed) subscriptions are unsubscribed when they are garbage collected.
    """

    def __init__(self, bus: EventBus, backlog: list[Event], queue_size: int) -> None:
        self._bus = bus
        self._backlog = collections.deque(backlog)
        self._queue: asyncio.Queue[Event | _Closed] = asyncio.Queue(queue_size)
        # Highest id handed out: the live queue may repeat what the backlog already gave.
        self._last = backlog[-1].id if backlog else 0
        self._dropping = False
        self.dropped = 0  # events this subscriber lost by falling behind
        self.closed = False

    def _offer(self, item: Event | _Closed) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                logger.warning(
                    "an event subscriber is falling behind: dropping its oldest events "
                    "(queue of %d full)",
                    self._queue.maxsize,
                )
        self._queue.put_nowait(item)

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None if ``timeout`` seconds pass first. StopAsyncIteration once
        the subscription or the bus is closed."""
        if self._backlog:
            return self._backlog.popleft()
        while True:
            if self.closed:
                raise StopAsyncIteration
            if self._queue.empty():
                self._dropping = False  # caught up: warn again if it falls behind again
                if timeout is None:
                    item = await self._queue.get()
                else:
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a
                    # cancellation arriving as the get completes (a stream that never ends).
                    try:
                        async with asyncio.timeout(timeout):
                            item = await self._queue.get()
                    except TimeoutError:
                        return None
            else:
                item = self._queue.get_nowait()
            if isinstance(item, _Closed):
                self.close()
                raise StopAsyncIteration
            if item.id > self._last:
                self._last = item.id
                return item

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        event = await self.get()
        assert event is not None  # no timeout: get waits for one
        return event

    def close(self) -> None:
        self.closed = True
        self._bus._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventBus:
    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1 or queue_size < 1:
            raise ValueError("capacity and queue_size must be at least 1")
        self._ring: collections.deque[Event] = collections.deque(maxlen=capacity)
        self._ids = itertools.count(1)
        self._queue_size = queue_size
        self._clock = clock
        self._subscribers: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self.last_id = 0
        self.closed = False

    def publish(self, kind: str, data: dict[str, Any]) -> Event:
        event = Event(id=next(self._ids), kind=kind, ts=self._clock(), data=data)
        self.last_id = event.id
        self._ring.append(event)
        for subscriber in list(self._subscribers):
            subscriber._offer(event)
        return event

    def subscribe(self, after: int | None = None) -> Subscription:
        """Events with an id above ``after`` still in the buffer, then live ones; only live
        ones when ``after`` is None."""
        if after is None:
            backlog: list[Event] = []
        elif after > self.last_id:  # an id of an earlier process: replay what we have
            backlog = list(self._ring)
        else:
            backlog = [e for e in self._ring if e.id > after]
        subscription = Subscription(self, backlog, self._queue_size)
        if self.closed:
            subscription.closed = True
        else:
            self._subscribers.add(subscription)
        return subscription

    def recent(self, after: int = 0) -> list[Event]:
        """The buffered events with an id above ``after``, oldest first."""
        return [e for e in self._ring if e.id > after]

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        """End every subscription (their iterators stop once they have read what they got)."""
        self.closed = True
        for subscriber in list(self._subscribers):
            subscriber._offer(_CLOSED)
        self._subscribers.clear()

    def _unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
