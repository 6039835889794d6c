"""The event bus: typed events, one global order across gateway processes, fanned out live.

``publish(payload)`` is synchronous and never waits: it appends the event to an outbox and
returns (publishers sit on the request path and on background loops that must not stall).
Everything else happens in background tasks:

- **Ids.** With an :class:`EventLog` (the app always has one: the database), a writer task
  appends the outbox to the log every ``flush_interval`` seconds, one transaction per batch
  (every ``idle_flush_interval``, 5 s, while no one waits: no live stream and no background
  consumer of their kind, here or in another process -- ``core.event_wants``; a crash then
  loses at most those seconds of events, never a ledger row).
  The log hands out ids from one counter row that each append updates first, so appends from
  all processes are serialised and **ids are committed in order, without gaps**: whoever sees
  id *n* in the log can also see every id below it. That is the one global, ordered event id
  a client resumes from.
- **Delivery.** After its append commits, the writer offers the batch to this process and
  publishes it on the :class:`EventRelay` (Redis pub/sub), which offers it to every other
  process. Batches from several processes can cross on the way, so each process delivers
  strictly in id order: an event above the next expected id waits until the ids before it
  arrive, and if they have not arrived after ``gap_timeout`` seconds the process reads them
  from the log (which has them all, see above).
- **No relay, or the relay is down.** Every ``poll_interval`` seconds each process also reads
  the log after the last id it delivered (one indexed query that usually finds nothing), so
  a process without Redis, or whose Redis connection dropped or stalled, still receives
  every event, late but in order; a reconnect reads the log at once. Relaying is never
  waited for: this process's own events, and its log writes, do not depend on Redis.
- **Subscribers** (``GET /admin/events``, in-process consumers) each get a bounded queue,
  filtered by kind and org up front. One that falls ``queue_size`` events behind is **cut
  off** (its iterator ends with ``cut`` set, so the stream can say so): it resumes from the
  log with ``Last-Event-ID``; neither publishers nor other subscribers ever wait for it.
- **Resume.** ``subscribe(after)`` replays the events above ``after`` from a ring of the
  last ``capacity`` delivered events, older ones from the log, then goes live; it is
  registered before the replay is read, so nothing is lost or delivered twice.
- The log keeps ``retention_seconds`` of events (7 days by default); every process prunes
  it now and then (idempotent).

Without a log (unit tests of one component), ids count from 1 in the process and events are
delivered at once. Everything here runs on the event loop's thread; the log's blocking calls
run in worker threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, Protocol

import orjson

from costwarden.core.event_kinds import KINDS, Event, EventPayload
from costwarden.core.event_ring import EventRing, Item
from costwarden.core.event_wants import ANNOUNCE_SECONDS, Announcement, RemoteWants
from costwarden.core.polling import FailureRun
from costwarden.core.subscription import Subscription
from costwarden.core.tasks import cancel_and_wait

__all__ = ["Batch", "Event", "EventBus", "EventLog", "EventRelay", "Subscription"]

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 10_000
DEFAULT_QUEUE_SIZE = 1000
DEFAULT_RETENTION_SECONDS = 7 * 86_400
_MAX_OUTBOX = 100_000  # events held while the log cannot be written; the oldest go first
_MAX_BATCH = 1000
_READ_PAGE = 1000
_PRUNE_SECONDS = 3600.0
_MAX_BACKOFF = 5.0
_MAX_UNRELAYED = 100  # batches waiting for Redis
_STOPPABLE = ("costwarden-events-poll", "costwarden-events-relay", "costwarden-events-wants")

# The log keeps events in batches: one row per append, a JSON array of
# [ts_ms, kind, org_id, payload] whose ids run from the row's first id, one apart. A row per
# event cost the request path more than everything else an event costs.
Batch = tuple[int, bytes]  # (first id, the JSON array)


class EventLog(Protocol):
    """Where events are numbered and kept (storage implements it); blocking calls."""

    def append(self, count: int, ts_ms: int, data: bytes) -> int:
        """Store a batch of ``count`` events (``data``: the JSON array, ``ts_ms``: its last
        event's time) under the next consecutive ids; the id of its last event."""
        ...

    def read(self, after: int, limit: int) -> list[Batch]:
        """Batches holding events with an id above ``after``, in id order, at least
        ``limit`` events' worth when the log has them."""
        ...

    def last_id(self) -> int: ...

    def prune(self, before_ms: int) -> int:
        """Delete batches whose last event is older than ``before_ms``; how many went."""
        ...


class EventRelay(Protocol):
    """Carries committed batches to the other processes (Redis pub/sub implements it)."""

    async def publish(self, message: bytes) -> None: ...

    def listen(self, on_ready: Callable[[], None]) -> AsyncIterator[bytes]:
        """Messages published by any process (this one's included); ``on_ready`` is called
        each time the subscription is (re)established. Raises when the connection drops."""
        ...


def _decode(batches: Iterable[tuple[int, list[Any]]], after: int) -> list[Event]:
    """Events of parsed batches with an id above ``after``."""
    events: list[Event] = []
    for first, items in batches:
        for offset, (ts_ms, kind, _org, data) in enumerate(items):
            event_id = first + offset
            if event_id <= after:
                continue
            cls = KINDS.get(kind)
            if cls is None:  # raised by a newer version of costwarden: not ours to show
                logger.debug("skipping event %d of unknown kind %r", event_id, kind)
                continue
            events.append(Event(event_id, ts_ms / 1000, cls.from_data(data)))
    return events


def encode_batch(batch: Sequence[tuple[float, EventPayload]]) -> bytes:
    """Events (when, what) as one event-log row stores them: a JSON array, in order."""
    return orjson.dumps(
        [(int(ts * 1000), p.kind, p.org_id, p.stored()) for ts, p in batch],
        default=_json_default,
    )


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class EventBus:
    def __init__(
        self,
        *,
        log: EventLog | None = None,
        relay: EventRelay | None = None,
        capacity: int = DEFAULT_CAPACITY,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        flush_interval: float = 0.02,
        idle_flush_interval: float = 5.0,
        poll_interval: float = 0.5,
        gap_timeout: float = 0.2,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1 or queue_size < 1:
            raise ValueError("capacity and queue_size must be at least 1")
        self._log = log
        self._relay = relay
        self._ring = EventRing(capacity)
        self._queue_size = queue_size
        self.flush_interval = flush_interval
        self.idle_flush_interval = idle_flush_interval
        self.poll_interval = poll_interval
        self.gap_timeout = gap_timeout
        self.retention_seconds = retention_seconds
        self._clock = clock
        # Subscriptions are closed by whoever made them (the stream handler's finally, an
        # in-process consumer's ``with``); a plain set keeps the per-event check cheap.
        self._subscribers: set[Subscription] = set()
        self._outbox: collections.deque[Item] = collections.deque()
        self._pending: dict[int, Event] = {}  # arrived ahead of a gap
        self._gap_since: float | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._catching_up = asyncio.Lock()
        self._to_relay: collections.deque[bytes] = collections.deque(maxlen=_MAX_UNRELAYED)
        self._relay_wake = asyncio.Event()
        self._writing = asyncio.Lock()
        self._stop = asyncio.Event()
        self._poke = asyncio.Event()  # wakes the poll loop: a gap began, a reconnect, close
        self._listener = asyncio.Event()  # set when a live subscriber or an urgent event comes
        # Live subscribers (streams: someone waits for every event) and the kinds background
        # consumers wait for (see subscribe); everything else may gather in the outbox.
        self._live: set[Subscription] = set()
        self._urgent: dict[str, int] = {}
        self._hurry = False  # an urgent event is in the outbox
        # What the other processes wait for (heard over the relay), and when to tell them
        # what this one waits for.
        self._remote = RemoteWants(secrets.token_hex(8))
        self._announce = asyncio.Event()
        self.last_id = 0  # the last id delivered here
        self.closed = False
        self._streams_ended = False
        self.relay_up = False
        self._read_now = False
        #: events lost because the log was unwritable too long
        self.dropped = 0
        #: subscribers cut off for falling behind
        self.cut = 0

    # ------------------------------------------------------------------ publishing

    def publish(self, payload: EventPayload) -> None:
        """Raise an event; returns at once (see the module docstring)."""
        if self.closed:
            return
        if self._log is None:
            self._deliver(Event(self.last_id + 1, self._clock(), payload))
            return
        outbox = self._outbox
        outbox.append((self._clock(), payload))
        kind = payload.kind
        if (self._urgent and kind in self._urgent) or kind in self._remote.kinds:
            self._hurry = True  # a background consumer, here or elsewhere, waits for it
            self._listener.set()
        if len(outbox) > _MAX_OUTBOX:
            outbox.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                logger.error("event log unwritable: %d events dropped so far", self.dropped)
        if not self._wake.is_set():
            self._wake.set()

    # ------------------------------------------------------------------ subscribing

    def subscribe(
        self,
        after: int | None = None,
        *,
        kinds: frozenset[str] | None = None,
        org_id: str | None = None,
        background: bool = False,
    ) -> Subscription:
        """Events with an id above ``after`` (None: live only), then live ones; only those of
        ``kinds`` (None: all) and of ``org_id`` (None: every org's and platform events).

        A ``background`` subscriber (an in-process consumer such as alerting) is not a live
        stream: it is not counted in :attr:`subscribers`, and events gather for it as long as
        for no one, except those of its ``kinds`` (which must be given), which are written and
        delivered within ``flush_interval``. So a consumer of rare kinds does not make every
        request's event cost a transaction every 20 ms."""
        if background and not kinds:
            raise ValueError("a background subscription names its kinds")
        oldest = self._ring.first_id
        log_upto = 0
        if after is None or after >= self.last_id:
            backlog: list[Event] = []
        elif oldest is not None and after >= oldest - 1:
            backlog = self._ring.after(after)
        else:  # older than the ring holds: from the log first, when there is one
            backlog = self._ring.after(0)
            if self._log is not None:
                log_upto = self.last_id if oldest is None else oldest - 1
        subscription = Subscription(
            self._unsubscribe,
            self._read_log,
            backlog,
            after=after or 0,
            log_upto=log_upto,
            queue_size=self._queue_size,
            kinds=kinds,
            org_id=org_id,
        )
        if self.closed or self._streams_ended:
            subscription.end()
        elif background:
            assert kinds is not None
            self._subscribers.add(subscription)
            for kind in kinds:
                self._urgent[kind] = self._urgent.get(kind, 0) + 1
            subscription.urgent = kinds
            self._announce.set()
        else:
            self._subscribers.add(subscription)
            self._live.add(subscription)
            self._listener.set()
            self._announce.set()
        return subscription

    def end_streams(self) -> None:
        """End every subscription, and any made from now on (a shutdown has begun: live
        streams must not hold the server open); publishing goes on until :meth:`close`."""
        self._streams_ended = True
        for subscriber in list(self._subscribers):
            subscriber.end()
        self._subscribers.clear()
        self._live.clear()
        self._urgent.clear()

    @property
    def subscribers(self) -> int:
        """Live subscribers (streams), background consumers not counted."""
        return len(self._live)

    def _unsubscribe(self, subscription: Subscription, cut: bool) -> None:
        self._subscribers.discard(subscription)
        self._live.discard(subscription)
        for kind in subscription.urgent:
            left = self._urgent.get(kind, 0) - 1
            if left > 0:
                self._urgent[kind] = left
            else:
                self._urgent.pop(kind, None)
        if subscription.urgent or not self._live:
            self._announce.set()
        subscription.urgent = frozenset()
        if cut:
            self.cut += 1

    async def _read_log(self, after: int, limit: int) -> list[Event]:
        assert self._log is not None
        batches = await asyncio.to_thread(self._log.read, after, limit)
        return _decode([(first, orjson.loads(raw)) for first, raw in batches], after)

    # ------------------------------------------------------------------ delivering

    def _deliver(self, event: Event) -> None:
        self.last_id = event.id
        self._ring.add(event.id, ((event.ts, event.payload),))
        if not self._subscribers:
            return
        for subscriber in list(self._subscribers):
            subscriber.offer(event)

    def _deliver_batch(self, first: int, items: list[Item]) -> None:
        """A batch whose first id is the next in line (this process's own append): kept as
        it is, and made into events only when someone is subscribed."""
        self.last_id = first + len(items) - 1
        self._ring.add(first, items)
        if not self._subscribers:
            return
        events = [Event(first + i, ts, payload) for i, (ts, payload) in enumerate(items)]
        for subscriber in list(self._subscribers):
            for event in events:
                subscriber.offer(event)
                if subscriber.cut:
                    break

    def _accept(self, events: Iterable[Event]) -> None:
        """Events from this process's appends or the relay: delivered in id order."""
        pending = self._pending
        for event in events:
            if event.id == self.last_id + 1 and not pending:
                self._deliver(event)  # the usual case: next in line, nothing waiting
            elif event.id > self.last_id:
                pending[event.id] = event
        while pending and self.last_id + 1 in pending:
            self._deliver(pending.pop(self.last_id + 1))
        if not pending:
            self._gap_since = None
        elif self._gap_since is None:
            self._gap_since = time.monotonic()
            self._poke.set()  # the poll loop times the gap out

    def _accept_from_log(self, events: Iterable[Event]) -> None:
        """Events read from the log: it has every id, so a missing one is gone for good."""
        for event in events:
            if event.id > self.last_id:
                self._deliver(event)
        for event_id in [i for i in self._pending if i <= self.last_id]:
            del self._pending[event_id]
        self._accept(())

    async def catch_up(self) -> None:
        """Deliver what the log has after the last id delivered here."""
        if self._log is None:
            return
        async with self._catching_up:
            while True:
                events = await self._read_log(self.last_id, _READ_PAGE)
                self._accept_from_log(events)
                if len(events) < _READ_PAGE:
                    return

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        """Start from the log's newest id, and the writer, relay and poll tasks."""
        if self._log is None or self._tasks:
            return
        self.last_id = await asyncio.to_thread(self._log.last_id)
        self._tasks.append(asyncio.create_task(self._write_loop(), name="costwarden-events-log"))
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="costwarden-events-poll"))
        if self._relay is not None:
            self._tasks.append(
                asyncio.create_task(self._listen_loop(), name="costwarden-events-listen")
            )
            self._tasks.append(
                asyncio.create_task(self._relay_loop(), name="costwarden-events-relay")
            )
            self._tasks.append(
                asyncio.create_task(self._wants_loop(), name="costwarden-events-wants")
            )

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is still in the outbox (up to ``timeout``), stop the tasks and end
        every subscription (their iterators stop once they have read what they got)."""
        if self.closed:
            return
        self.closed = True
        if self._outbox and self._log is not None and self._tasks:
            try:
                async with asyncio.timeout(timeout):
                    await self._write_outbox()
            except Exception as exc:  # noqa: BLE001 - shutting down: say it, go on
                logger.error("%d events not written at shutdown: %s", len(self._outbox), exc)
        # The poll and relay loops stop between steps, so no read is left running in a worker
        # thread (holding a database connection) and no Redis command half-sent; the rest
        # are cancelled where they wait.
        self._stop.set()
        self._poke.set()
        self._relay_wake.set()
        self._announce.set()
        graceful = [t for t in self._tasks if t.get_name() in _STOPPABLE]
        if graceful:  # (those still running after it are cancelled with the rest)
            await asyncio.wait(graceful, timeout=timeout)
        with contextlib.suppress(Exception):
            await cancel_and_wait(self._tasks)
        self._tasks.clear()
        self.end_streams()

    # ------------------------------------------------------------------ background

    async def _write_loop(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            # A short wait gathers a batch: one transaction for many events. With no other
            # process to send them to (no relay) and no subscriber here, nobody waits for
            # them: the batch gathers for idle_flush_interval instead (a subscriber that
            # comes cuts that short), so a lone gateway pays one transaction every few
            # seconds, not 50 a second.
            if failures:
                pass
            elif not self._live and not self._hurry and self._no_one_waits():
                self._listener.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.idle_flush_interval):
                        await self._listener.wait()
                await asyncio.sleep(self.flush_interval)
            else:
                await asyncio.sleep(self.flush_interval)
            self._wake.clear()
            self._hurry = False
            try:
                await self._write_outbox()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the log is down: keep, retry
                failures += 1
                delay = min(0.1 * 2 ** (failures - 1), _MAX_BACKOFF)
                log = logger.error if failures == 1 else logger.warning
                log(
                    "event log write failed (attempt %d, %d events waiting); retrying in "
                    "%.1fs: %s",
                    failures,
                    len(self._outbox),
                    delay,
                    type(exc).__name__,
                )
                await asyncio.sleep(delay)
                self._wake.set()

    def _no_one_waits(self) -> bool:
        """No other process waits for what this one's outbox holds (so far as it knows: with
        the relay down it hears no announcements, and writes as if someone waited)."""
        if self._relay is None:
            return True
        return self.relay_up and not self._remote.every

    async def _write_outbox(self) -> None:
        async with self._writing:  # the writer task, or close(): never both on one batch
            await self._write_batches()

    async def _write_batches(self) -> None:
        assert self._log is not None
        outbox = self._outbox
        while outbox:
            batch = [outbox[i] for i in range(min(len(outbox), _MAX_BATCH))]
            data = encode_batch(batch)
            ts_ms = int(batch[-1][0] * 1000)
            last = await asyncio.to_thread(self._log.append, len(batch), ts_ms, data)
            for _ in batch:
                outbox.popleft()
            first = last - len(batch) + 1
            if first == self.last_id + 1 and not self._pending:
                self._deliver_batch(first, batch)
            else:  # another process's batch is still on its way: in id order
                self._accept([Event(first + i, ts, p) for i, (ts, p) in enumerate(batch)])
            if self._relay is not None:
                message = orjson.dumps([first, orjson.Fragment(data)])
                # Never waited for: a stalled Redis must not hold up the log or this
                # process's own stream. A task publishes in order; past _MAX_UNRELAYED
                # waiting batches the oldest is dropped (the others read it from the log).
                self._to_relay.append(message)
                self._relay_wake.set()

    async def _relay_loop(self) -> None:
        assert self._relay is not None
        publishes = FailureRun("event relay publishes")
        while not self._stop.is_set():
            await self._relay_wake.wait()
            self._relay_wake.clear()
            while self._to_relay:
                message = self._to_relay.popleft()
                try:
                    await self._relay.publish(message)
                except Exception as exc:  # noqa: BLE001 - the others read the log meanwhile
                    if publishes.failed():
                        logger.warning("event relay publish failed: %s", type(exc).__name__)
                else:
                    publishes.succeeded()

    def _relay_ready(self) -> None:
        if not self.relay_up:
            self.relay_up = True
            logger.info("event relay connected")
            self._read_now = True  # what was raised while it was down: from the log
            self._poke.set()
            self._announce.set()  # announcements made while it was down were not heard

    async def _listen_loop(self) -> None:
        assert self._relay is not None
        failures = 0
        while True:
            try:
                async for message in self._relay.listen(self._relay_ready):
                    failures = 0
                    first, batch = orjson.loads(message)
                    if first == 0:  # what another process waits for: no event
                        heard = Announcement.decode(batch)
                        if heard is not None and self._remote.heard(heard, time.monotonic()):
                            self._listener.set()  # the gathering outbox is wanted now
                        continue
                    # This process's own batches come back too: skipped before decoding.
                    self._accept(_decode([(first, batch)], self.last_id))
            except Exception as exc:  # noqa: BLE001 - Redis went away: poll the log meanwhile
                failures += 1
                if self.relay_up or failures == 1:
                    logger.warning(
                        "event relay lost (%s); reading the log every %.1fs until it is back",
                        type(exc).__name__,
                        self.poll_interval,
                    )
                self.relay_up = False
            await asyncio.sleep(min(0.1 * 2 ** max(failures - 1, 0), _MAX_BACKOFF))

    async def _wants_loop(self) -> None:
        """Announce what this process waits for when that changes and every
        ANNOUNCE_SECONDS while it waits for something (``core.event_wants``)."""
        assert self._relay is not None
        announced = Announcement(self._remote.origin, every=False, kinds=frozenset())
        failures = FailureRun("event wants announcements")
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ANNOUNCE_SECONDS):
                    await self._announce.wait()
            self._announce.clear()
            if self._stop.is_set():
                return
            self._remote.expire(time.monotonic())
            wants = Announcement(announced.origin, bool(self._live), frozenset(self._urgent))
            if wants.empty and announced.empty:
                continue
            try:
                await self._relay.publish(wants.encode(int(self._clock() * 1000)))
            except Exception as exc:  # noqa: BLE001 - said again at the next tick
                if failures.failed():
                    logger.warning("event wants announcement failed: %s", type(exc).__name__)
            else:
                failures.succeeded()
                announced = wants

    async def _poll_loop(self) -> None:
        last_read = last_prune = time.monotonic()
        reads = FailureRun("event log reads")
        while True:
            # Asleep until the next read is due: the poll interval, a gap's timeout, a relay
            # that reconnected (poked), or close; no ticking in between.
            now = time.monotonic()
            due = last_read + self.poll_interval
            if self._gap_since is not None:
                due = min(due, self._gap_since + self.gap_timeout)
            if not self._read_now:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(due - now, 0.0)):
                        await self._poke.wait()
            self._poke.clear()
            if self._stop.is_set():
                return
            now = time.monotonic()
            gap = self._gap_since is not None and now - self._gap_since >= self.gap_timeout
            try:
                if gap or self._read_now or now - last_read >= self.poll_interval:
                    last_read = now
                    self._read_now = False
                    await self.catch_up()
                if now - last_prune >= _PRUNE_SECONDS:
                    last_prune = now
                    await self._prune()
            except Exception as exc:  # noqa: BLE001 - the log is down: try again next tick
                if reads.failed():
                    logger.warning("event log read failed: %s", type(exc).__name__)
            else:
                reads.succeeded()

    async def _prune(self) -> None:
        assert self._log is not None
        before_ms = int((self._clock() - self.retention_seconds) * 1000)
        gone = await asyncio.to_thread(self._log.prune, before_ms)
        if gone:
            logger.info("event log: %d events older than the retention pruned", gone)
