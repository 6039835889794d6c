"""One subscriber of the event bus: a replay (from the log, then the ring), then live events.

The bus offers each delivered event to every subscription (:meth:`Subscription.offer`), which
keeps it only if it matches the subscriber's kinds and org, in a bounded queue. A subscriber
that lets ``queue_size`` events pile up is cut off at once: it is unsubscribed, its queue is
emptied, and its iterator ends with :attr:`Subscription.cut` set, so the stream can send a last
frame saying so. The bus never waits for a subscriber, and one slow subscriber costs the others
nothing; the cut-off one reconnects with the id it last got and catches up from the log.

Ids only grow, so anything at or below the last id handed out is skipped: the live queue may
repeat the end of the replay.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

from costwarden.core.event_kinds import Event

logger = logging.getLogger(__name__)

_LOG_PAGE = 500


class _End:
    """Put in a queue when the bus closes or the subscriber is cut off."""


_END = _End()


class Subscription:
    """An async iterator of events; ``close()`` (or leaving a ``with`` block) unsubscribes:
    whoever subscribes closes."""

    def __init__(
        self,
        unsubscribe: Callable[[Subscription, bool], None],
        read_log: Callable[[int, int], Awaitable[list[Event]]],
        backlog: list[Event],
        *,
        after: int,
        log_upto: int,
        queue_size: int,
        kinds: frozenset[str] | None,
        org_id: str | None,
    ) -> None:
        self._unsubscribe = unsubscribe
        self._read_log = read_log
        self._backlog = collections.deque(backlog)
        # Ids in (after, log_upto] are read from the log, a page at a time, before the backlog.
        self._log_after = after
        self._log_upto = log_upto
        self._from_log: collections.deque[Event] = collections.deque()
        self._queue: asyncio.Queue[Event | _End] = asyncio.Queue(queue_size)
        self.kinds = kinds
        self.org_id = org_id
        self.last_id = after  # the highest id handed out (or skipped by the filters)
        self.closed = False
        self.cut = False  # cut off for falling behind
        # The kinds a background subscription made urgent (the bus undoes that on unsubscribe).
        self.urgent: frozenset[str] = frozenset()

    def matches(self, event: Event) -> bool:
        if self.kinds is not None and event.payload.kind not in self.kinds:
            return False
        return self.org_id is None or event.payload.org_id == self.org_id

    def offer(self, event: Event) -> None:
        """Called by the bus for every delivered event; never blocks."""
        if not self.matches(event):
            return
        queue = self._queue
        if queue.full():
            logger.warning(
                "an event subscriber fell %d events behind: cut off (it can resume from "
                "event %d)",
                queue.maxsize,
                self.last_id,
            )
            self.cut = True
            self._unsubscribe(self, True)
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(_END)
            return
        queue.put_nowait(event)

    def end(self) -> None:
        """The bus is closing: end the iterator after what it already has."""
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(_END)

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None if ``timeout`` seconds pass first. StopAsyncIteration once
        the subscription is closed, cut off or the bus closes."""
        while True:
            if not self._from_log and self._log_upto > self._log_after:
                await self._read_more()
                continue
            if self._from_log:
                event = self._from_log.popleft()
            elif self._backlog:
                event = self._backlog.popleft()
            else:
                item = await self._next_live(timeout)
                if item is None:
                    return None
                event = item
            if event.id <= self.last_id:
                continue
            self.last_id = event.id
            if self.matches(event):
                return event

    async def _read_more(self) -> None:
        """The next page of the part of the replay that only the log has."""
        events = await self._read_log(self._log_after, _LOG_PAGE)
        fresh = [e for e in events if e.id <= self._log_upto]
        self._from_log.extend(fresh)
        if len(fresh) < _LOG_PAGE:  # up to log_upto, or all the log has: the ring follows
            self._log_upto = 0
        else:
            self._log_after = fresh[-1].id

    async def _next_live(self, timeout: float | None) -> Event | None:
        if self.closed:
            raise StopAsyncIteration
        queue = self._queue
        if queue.empty():
            if timeout is None:
                item = await queue.get()
            else:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                # arriving as the get completes (a stream that never ends).
                try:
                    async with asyncio.timeout(timeout):
                        item = await queue.get()
                except TimeoutError:
                    return None
        else:
            item = queue.get_nowait()
        if isinstance(item, _End):
            self.close()
            raise StopAsyncIteration
        return item

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        event = await self.get()
        assert event is not None  # no timeout: get waits for one
        return event

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._unsubscribe(self, False)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
