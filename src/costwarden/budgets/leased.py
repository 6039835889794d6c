"""Leased budgets: counters in Redis, spent at in-process speed.

A :class:`LeasedStore` wraps the :class:`~costwarden.budgets.redis_store.RedisStore`. Each
process leases slices of the counters it meets (:mod:`costwarden.budgets.slices`, the
policy; ``lua/slices.lua``, the Redis side) and admits and settles requests against them
locally: no round trip on the request path. One call per tenant every ``flush_seconds`` (only
when something changed) moves what the slices consumed into the settled spend, tops them up
and renews their lease; the same call, made by a request that found no slice with room,
takes new ones. Near a limit the slices are given back and requests reserve exactly, as
:class:`RedisStore` alone does -- so the hard cap is as exact as without leasing.

Every slices call is one script for one tenant (its keys share a Redis Cluster hash slot).
A call that fails or times out is simply sent again with the next one: what it counts is
cumulative and every call carries a generation, so a late one does nothing.

On close (SIGTERM) every slice is given back at once. A process that dies strands its slices
until its slice lease expires (``budgets.lease_seconds``); the next call or reserve of anyone
in that tenant then purges them: given back but for their exposed part (what the dead process
may have admitted without telling), which is counted as spent. For a calendar counter that
part is then *unstranded*: once the dead process's ledger rows are all in (they carry its
slice lease id), what they hold beyond what its calls had counted replaces it, once, by
whichever process reads it first (``lua/unstrand.lua``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from costwarden.budgets.limits import parse_calendar_counter
from costwarden.budgets.policy import Actual, Ask, Check, Grant, Refusal, View
from costwarden.budgets.ports import LedgerSums
from costwarden.budgets.redis_store import RedisStore
from costwarden.budgets.slices import Answer, Op, SliceBook
from costwarden.budgets.store import CountersLost, Seed
from costwarden.core.polling import FailureRun
from costwarden.core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

# The slice lease is renewed this often at least (a fraction of its lifetime), and the
# slices are spent only while half of that lifetime is left.
_RENEW_FRACTION = 1 / 3
_VALID_FRACTION = 1 / 2
# A process that reserves exactly in a tenant looks this often at most for dead processes'
# slices to unstrand there (a tight tenant may see no slices call).
_STRANDED_LOOK_SECONDS = 1.0
# A request that finds no slice with room asks (or waits for a call under way) this many
# times before it reserves exactly: under a burst, one call sizes the slices for all waiting.
_ROUNDS = 3


class LeasedStore:
    name = "redis"

    def __init__(
        self,
        inner: RedisStore,
        *,
        ledger: LedgerSums,
        ledger_wait: float = 1.0,
        flush_seconds: float = 0.02,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``ledger``: storage's sums (read in a worker thread, off the request path, only to
        unstrand); ``ledger_wait``: how long after a purge every row of the dead process is
        in the ledger (a durable ledger's are at once; a batched one's within its flush)."""
        self.inner = inner
        self._ledger = ledger
        self._ledger_wait = ledger_wait
        self._unstranding: dict[str, asyncio.Task[None]] = {}  # tenant -> its task
        self._stranded_looked: dict[str, float] = {}  # tenant -> when last looked at
        self.book = SliceBook(flush_seconds, inner.slice_lease)
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._gen = itertools.count(1)  # the lease id is new with every process
        self._running: dict[str, asyncio.Future[None]] = {}  # tenant -> its call under way
        self._last_call: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._failures = FailureRun("budget slice calls")
        self._lease_seconds = inner.lease_seconds
        # Reservations admitted against slices, reserved exactly, and slices calls made.
        self.admitted_locally = 0
        self.reserved_exactly = 0
        self.calls = 0

    @property
    def processes(self) -> int:
        return self.inner.processes

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.inner.start()
        self._task = asyncio.create_task(self._flush_loop(), name="costwarden-budget-slices")
        logger.info("budget counters leased in slices (flushed every %.0f ms)",
                    self._flush_seconds * 1000)  # fmt: skip

    async def close(self) -> None:
        """Give every slice back (the server has drained: nothing is in flight), then close
        the Redis store."""
        await cancel_and_wait((self._task, *self._unstranding.values()))
        self._task = None
        for tenant in self.book.holding():
            try:
                await self._call(tenant, self._clock(), closing=True)
            except (RedisError, OSError, CountersLost) as exc:
                logger.warning("could not give back the slices of %s: %s (they are counted "
                               "as spent when their lease expires)", tenant, exc)  # fmt: skip
        logger.info("budget slices: %d request(s) admitted locally, %d reserved exactly, "
                    "%d slices call(s)", self.admitted_locally, self.reserved_exactly,
                    self.calls)  # fmt: skip
        await self.inner.close()

    # -- the request path ------------------------------------------------------------------

    async def reserve(
        self, lease: str, ask: Ask, checks: list[Check], now: float
    ) -> Grant | Refusal:
        for _ in range(_ROUNDS if checks else 0):
            granted = self.book.admit(lease, ask, checks, now)
            if granted is not None:
                self.admitted_locally += 1
                return granted
            tenants = self.book.wanted(ask, checks, now)
            if not tenants:
                break  # tight: the exact path
            for tenant in tenants:
                await self._call(tenant, now)
            now = self._clock()
        if checks:
            self.reserved_exactly += 1
            # Exact reserves purge too (reserve.lua), and may be all a tight tenant sees.
            for tenant in {c.limit.tenant for c in checks}:
                if now - self._stranded_looked.get(tenant, 0.0) > _STRANDED_LOOK_SECONDS:
                    self._unstrand_soon(tenant, now)
        return await self.inner.reserve(lease, ask, checks, now)

    async def settle(
        self, lease: str, checks: list[Check], amounts: list[int], actual: Actual, now: float
    ) -> list[int]:
        rooms = self.book.settle(lease, actual)
        if rooms is not None:
            return rooms
        return await self.inner.settle(lease, checks, amounts, actual, now)

    async def abandon(self, lease: str, checks: list[Check], now: float) -> None:
        await self.inner.abandon(lease, checks, now)

    # -- slice calls -----------------------------------------------------------------------

    async def _call(self, tenant: str, now: float, *, closing: bool = False) -> None:
        """One slices call for ``tenant``. Whoever finds one under way waits for it instead
        (it was sent with what the book held then: a request then tries again), all waiters
        woken at once by one future (a lock would wake them one loop iteration apiece)."""
        running = self._running.get(tenant)
        if running is not None:
            await asyncio.wait([running])
            if not closing:
                return
        done = self._running[tenant] = asyncio.get_running_loop().create_future()
        try:
            await self._send(tenant, self.book.ops(tenant, now, closing=closing), now, closing)
        finally:
            del self._running[tenant]
            done.set_result(None)

    async def _send(self, tenant: str, ops: list[Op], now: float, closing: bool) -> None:
        rows = [_row(op) for op in ops]
        self.calls += 1
        try:
            data = await self.inner.slices(
                tenant, next(self._gen), [op.slice.check for op in ops], rows, now, closing=closing
            )
        except BaseException:
            self.book.failed(tenant, ops)
            raise
        self._last_call[tenant] = now
        if "lost" in data:
            self.book.drop(tenant)
            raise CountersLost([tenant])
        if "purged" in data:
            dropped = self.book.drop(tenant)
            logger.warning("the slice lease of %s expired and was purged: %d slice(s) counted "
                           "as spent, new ones are taken", tenant, dropped)  # fmt: skip
            return
        if "stale" in data:  # a generation is never reused: only a bug gets here
            self.book.failed(tenant, ops)
            raise RuntimeError(f"slices call for {tenant} found a later generation")
        answers = [Answer(int(g), int(room), bool(tight)) for g, room, tight in data["slices"]]
        valid = now + self._lease_seconds * _VALID_FRACTION
        self.book.answered(tenant, ops, answers, now, valid)
        if data.get("stranded"):
            self._unstrand_soon(tenant, now)

    def _unstrand_soon(self, tenant: str, now: float) -> None:
        self._stranded_looked[tenant] = now
        if tenant not in self._unstranding:
            task = asyncio.create_task(self._unstrand_later(tenant), name="costwarden-unstrand")
            self._unstranding[tenant] = task
            task.add_done_callback(lambda _: self._unstranding.pop(tenant, None))

    async def _unstrand_later(self, tenant: str) -> None:
        """Unstrand the tenant's purged slices whose dead process's rows are all in by now
        (the others: when a later call finds them still there)."""
        await asyncio.sleep(self._ledger_wait)
        try:
            freed = await self.unstrand(tenant, self._clock())
        except Exception as exc:  # a later call that finds them tries again
            logger.warning("could not unstrand the slices of %s: %s: %s",
                           tenant, type(exc).__name__, exc)  # fmt: skip
        else:
            if freed:
                logger.warning("a dead gateway process's slices of %s: %d counted by its "
                               "ledger rows, the rest freed", tenant, freed)  # fmt: skip

    async def unstrand(self, tenant: str, now: float) -> int:
        """Each purged calendar slice of ``tenant`` purged at least ``ledger_wait`` ago: what
        its dead process's ledger rows hold in its counter's window replaces what the purge
        counted. Returns how many were applied here."""
        applied = 0
        for field, (counter, _exposed, since_ms, purged_ms) in (
            await self.inner.stranded(tenant)
        ).items():
            if purged_ms / 1000 + self._ledger_wait > now:
                continue
            holder = field.split("\n", 1)[0]
            found = parse_calendar_counter(counter.split("}:", 1)[1])
            totals = await asyncio.to_thread(
                self._ledger.totals,
                scope=found.scope,
                since=datetime.fromtimestamp(since_ms / 1000, UTC) if since_ms else None,
                org_id=found.org_id or None,
                holder=holder,
            )
            nanos, tokens, requests = totals.get((found.org_id, found.subject), (0, 0, 0))
            spent = {"usd": nanos, "tokens": tokens, "requests": requests}[found.metric]
            applied += await self.inner.unstrand(tenant, field, spent)
        return applied

    async def _flush_loop(self) -> None:
        renew_after = self._lease_seconds * _RENEW_FRACTION
        while True:
            await asyncio.sleep(self._flush_seconds)
            for tenant in self.book.holding():
                now = self._clock()
                due = now >= self._last_call.get(tenant, 0.0) + renew_after
                if not due and not self.book.ops(tenant, now):
                    continue
                try:
                    await self._call(tenant, now)
                except CountersLost:
                    logger.warning("budget counters of %s are gone: its slices are dropped",
                                   tenant)  # fmt: skip
                except Exception as exc:  # keep flushing: the next call resends it all
                    if self._failures.failed():
                        logger.warning("budget slice call failed: %s: %s",
                                       type(exc).__name__, exc)  # fmt: skip
                else:
                    self._failures.succeeded()

    # -- the rest is the Redis store's -----------------------------------------------------

    async def views(self, checks: list[Check], now: float) -> list[View]:
        return await self.inner.views(checks, now)

    def counted(self, now: float) -> bool:
        return self.inner.counted(now)

    async def ping(self) -> None:
        await self.inner.ping()

    async def add(
        self, lease: str, checks: list[Check], actual: Actual, settled_at: float
    ) -> None:
        await self.inner.add(lease, checks, actual, settled_at)

    async def adopt(
        self, leases: list[tuple[str, list[Check], list[int], float]], now: float
    ) -> None:
        await self.inner.adopt(leases, now)

    async def seed(
        self, tenant: str, seeds: dict[str, Seed], ttls: dict[str, int], *, complete: bool
    ) -> None:
        await self.inner.seed(tenant, seeds, ttls, complete=complete)

    async def prune(self, now: float) -> None:
        await self.inner.prune(now)

    async def ready(self, tenant: str) -> bool:
        return await self.inner.ready(tenant)

    async def acquire_rebuild(self, tenant: str, ttl_ms: int) -> bool:
        return await self.inner.acquire_rebuild(tenant, ttl_ms)

    async def release_rebuild(self, tenant: str) -> None:
        await self.inner.release_rebuild(tenant)


def _row(op: Op) -> list[Any]:
    check = op.slice.check
    field = str(check.bucket) if check.rolling else "r"
    return [
        1 if check.rolling else 0,
        field,
        check.limit.amount,
        check.ttl,
        check.first,
        op.used,
        op.keep,
        op.want,
        op.need,
        1 if op.forget else 0,
        op.exposed,
        math.floor(check.starts_at * 1000),
    ]
