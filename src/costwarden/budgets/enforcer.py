"""The enforcer: what the request path calls before the upstream call and after it.

``reserve`` finds the limits a request meets (a few dict lookups in the in-memory
:class:`~costwarden.budgets.limits.LimitBook`), bounds what the call can cost, and asks the
counter store for a grant -- one atomic step, one Redis round trip when Redis is used. A
refusal becomes a 402 or 429 before anything reaches the provider. ``settle`` replaces the
reservation by what the call really cost (one more round trip).

In the background the enforcer polls storage for changed limits (one cheap query per
``refresh_seconds``), seeds counters for limits that just appeared from the ledger before
they are enforced, rebuilds a tenant's counters when the store has lost them, and forgets
counters whose windows are over.

A store call that fails may have run anyway (Redis timed out, then resumed): a failed settle
or release is sent again, and a failed reserve is abandoned (whatever it reserved is given
back), by a retry task that runs only while some are pending and retries within a fifth of a
second of the store answering again. The store makes both idempotent.

Once a store call has failed, the request path stops asking the store (``mode``) until a
probe off the request path sees it answer: requests under a limit get 503 (``fail_closed``)
or are admitted on local counters and counted into the store when it is back
(``fail_open``): see budgets/outage.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from costwarden.budgets.asks import Asks
from costwarden.budgets.limits import LimitBook, Principal, Tier
from costwarden.budgets.memory import MemoryStore
from costwarden.budgets.outage import (
    CounterMode,
    Fallback,
    Figures,
    OnUnavailable,
    mode_when_unreachable,
)
from costwarden.budgets.policy import Actual, Ask, Check, Grant, Refusal, checks_for
from costwarden.budgets.ports import BudgetConfig, LedgerSums, PolicySource
from costwarden.budgets.rebuild import Family, TenantSeeds, compute_seeds, tenant_of
from costwarden.budgets.reservation import Reservation as Reservation
from costwarden.budgets.reservation import refusal_error
from costwarden.budgets.store import CountersLost, CounterStore, LeaseClosed, TenantsSpanSlots
from costwarden.budgets.thresholds import Crossings
from costwarden.budgets.windows import CalendarWindow, bucket_seconds, calendar_window, zone
from costwarden.core import polling
from costwarden.core.errors import CountersUnavailable, GatewayError
from costwarden.core.event_kinds import EventPayload
from costwarden.core.records import LedgerRecord, cost_nanos
from costwarden.core.tasks import cancel_and_wait
from costwarden.providers.base import Deployment

logger = logging.getLogger(__name__)

_PRUNE_EVERY = 60.0
_REBUILD_LOCK_MS = 15_000
_CHECKS_CACHE_SIZE = 10_000
# Failed store calls are sent again after _RETRY_FIRST, backing off to _RETRY_MAX while the
# store still fails; one alone first (while the store is down a pass costs one timeout),
# then the rest _RETRY_BATCH at a time.
_RETRY_FIRST = 0.02
_RETRY_MAX = 0.2
_RETRY_BATCH = 32
# While the counter store is unreachable a probe pings it, first after _PROBE_FIRST, backing
# off to _PROBE_MAX; then (fail_open) the local admissions are counted into it within
# _RECONCILE_SECONDS, or it is probed again.
_PROBE_FIRST = 0.05
_PROBE_MAX = 0.25
_RECONCILE_SECONDS = 5.0
_RECONCILE_PASSES = 20
# Requests wait this long at most for a reconciliation under way, then are admitted locally.
_RECONCILE_WAIT = 1.0


@dataclasses.dataclass(slots=True)
class _Pending:
    """A store call to send again: a settle (or release, ``actual`` of nothing), the
    abandon of a lease whose reserve failed (``actual`` None), or (``add``) a request admitted
    on the local counters of an outage, to be counted in the store."""

    lease: str
    checks: list[Check]
    amounts: list[int]
    actual: Actual | None
    since: float  # when the call first failed (an add: when the request settled)
    add: bool = False


class Enforcer:
    """``policy`` and ``ledger`` are storage's readers (see budgets/ports.py); they are called
    in worker threads by the refresh, the seeding and the rebuild, never by reserve or settle."""

    def __init__(
        self,
        config: BudgetConfig,
        policy: PolicySource,
        ledger: LedgerSums,
        *,
        clock: Callable[[], float] = time.time,
        flush_ledger: Callable[[], Awaitable[None]] | None = None,
        store: CounterStore | None = None,
    ) -> None:
        self.settings = b = config  # the proxy reads default_max_output_tokens from it
        self._policy = policy
        self._ledger = ledger
        self.clock = clock
        self.tz = zone(b.timezone)
        # The app passes a RedisStore (on its one Redis client) when Redis is configured.
        self.store: CounterStore = MemoryStore() if store is None else store
        # Where limit_threshold_crossed events go (the app's event bus), if anywhere.
        self.publish: Callable[[EventPayload], None] | None = None
        self._crossings = Crossings()
        self.config_tiers: list[Tier] = list(b.tiers)
        self.book = LimitBook(tiers=self.config_tiers, version=-1)
        self._families: set[Family] = set()
        self._flush_ledger = flush_ledger
        batched = b.ledger_mode == "batched"
        # Rows other processes still hold in memory reach the ledger within a flush interval.
        self._flush_wait = 2 * b.flush_interval_ms / 1000 if batched else 0.0
        self._windows: dict[str, CalendarWindow] = {}
        # Checks are shared read-only between the requests of one principal.
        self._checks_cache: dict[tuple[Any, ...], tuple[LimitBook, float, list[Check]]] = {}
        self._ask = Asks(b).ask
        self._lease_seconds = b.lease_seconds
        self._pending: list[_Pending] = []
        self._retrying: asyncio.Task[None] | None = None
        self._serial = itertools.count()
        self._rebuilding = asyncio.Lock()
        self._last_prune = 0.0
        self._poller = polling.Poller(
            "costwarden-budgets", b.refresh_seconds, self._step, _poll_failed
        )
        # What happens while the store cannot be reached (budgets/outage.py).
        self.on_unavailable: OnUnavailable = b.on_unavailable
        self.mode: CounterMode = "shared"
        self._figures = Figures()
        self._keep_figures = b.on_unavailable == "fail_open"
        self._fallback: Fallback | None = None
        self._adds_unsent = 0
        self._watching: asyncio.Task[None] | None = None
        self._reconciled = asyncio.Event()  # set while mode is "shared"
        self._reconciled.set()

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        await self.store.start()
        await self.refresh(initial=True)
        self._last_prune = self.clock()
        self._poller.start()

    async def close(self) -> None:
        await self._poller.close()
        await cancel_and_wait((self._watching, self._retrying))
        self._watching = self._retrying = None
        if self._pending:
            await self._retry_pending()  # a last pass; what still fails is logged
            if self._pending:
                logger.error(
                    "closing with %d budget store call(s) unsent: counters may differ from "
                    "the ledger until rebuilt",
                    len(self._pending),
                )
        await self.store.close()

    async def _step(self) -> None:
        await self.refresh()
        if self._pending:
            self._retry_soon()  # in case the retry task died
        if self.clock() - self._last_prune > _PRUNE_EVERY:
            self._last_prune = self.clock()
            await self.store.prune(self._last_prune)

    async def refresh(self, *, initial: bool = False) -> None:
        """Load changed limits; counters for newly limited scopes are seeded before use."""
        version = await asyncio.to_thread(self._policy.version)
        if version == self.book.version and not initial:
            return
        snap = await asyncio.to_thread(self._policy.load)
        version = snap.version
        tiers = [*self.config_tiers, *snap.api_tiers]
        book = LimitBook(snap.limits, tiers, snap.org_tiers, version, snap.alert_rules)
        families = book.families()
        new = families if initial else families - self._families
        if new:
            await self._seed(new, book)
        self.book = book
        self._families = families
        if not initial:
            logger.info("limits reloaded (version %d, %d limits)", version, len(book.limits))

    async def _seed(self, families: set[Family], book: LimitBook) -> None:
        if self._flush_ledger is not None:
            await self._flush_ledger()
        tenants = {tenant_of(f) for f in families}
        lost = [t for t in sorted(tenants) if not await self.store.ready(t)]
        if lost:
            await self._rebuild(lost, book)
        rest = {f for f in families if tenant_of(f) not in lost}
        if not rest:
            return
        seeds = await asyncio.to_thread(compute_seeds, self._ledger, rest, self.clock(), self.tz)
        for tenant, found in seeds.items():
            await self.store.seed(tenant, found.seeds, found.ttls, complete=False)

    async def _rebuild(self, tenants: list[str], book: LimitBook | None = None) -> None:
        """Rebuild lost tenants from the ledger; one process rebuilds, the others wait."""
        book = book or self.book
        async with self._rebuilding:
            for tenant in tenants:
                if await self.store.ready(tenant):
                    continue
                if not await self.store.acquire_rebuild(tenant, _REBUILD_LOCK_MS):
                    await self._wait_ready(tenant)
                    continue
                try:
                    logger.warning("budget counters of %s missing: rebuilding from ledger", tenant)
                    if self._flush_ledger is not None:
                        await self._flush_ledger()
                    await asyncio.sleep(self._flush_wait)
                    families = {f for f in book.families() if tenant_of(f) == tenant}
                    seeds = await asyncio.to_thread(
                        compute_seeds, self._ledger, families, self.clock(), self.tz
                    )
                    found = seeds.get(tenant, TenantSeeds())
                    await self.store.seed(tenant, found.seeds, found.ttls, complete=True)
                finally:
                    await self.store.release_rebuild(tenant)

    async def _wait_ready(self, tenant: str) -> None:
        deadline = time.monotonic() + _REBUILD_LOCK_MS / 1000
        while time.monotonic() < deadline:
            if await self.store.ready(tenant):
                return
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ request path

    async def reserve(
        self,
        lease: str,
        principal: Principal,
        deployment: Deployment,
        endpoint: str,
        body_len: int,
        payload: dict[str, Any],
    ) -> Reservation | None:
        """Reserve in every counter the request meets; None when no limit applies.

        ``lease`` names the request; the lease is that name plus a serial, so that a request
        that reserves again (on another deployment) never reuses a lease id: the store refuses
        a lease it has seen settled or abandoned."""
        now = self.clock()
        checks = self._checks(principal, now)
        if not checks:
            return None
        if self.mode == "reconciling":
            # A few round trips: admitting locally meanwhile would keep it from ending.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconciled.wait(), _RECONCILE_WAIT)
            now = self.clock()
            checks = self._checks(principal, now)
        ask = self._ask(deployment, endpoint, body_len, payload)
        name, lease = lease, f"{lease}.{next(self._serial)}"
        if self.mode != "shared":
            return await self._reserve_unshared(lease, ask, checks, now)
        result: Grant | Refusal | None
        try:
            try:
                result = await self.store.reserve(lease, ask, checks, now)
            except CountersLost as lost:
                await self._rebuild(lost.tenants)
                result = await self.store.reserve(lease, ask, checks, self.clock())
        except CountersLost:
            raise CountersUnavailable(
                "budget counters are being rebuilt; retry shortly", headers={"retry-after": "1"}
            ) from None
        except TenantsSpanSlots as exc:
            # Refused before anything was sent: not an outage (the store stays "reachable"),
            # a deployment that cannot enforce this request's limits (docs/scale-out.md).
            logger.error("budget limits not enforceable: %s", exc)
            raise CountersUnavailable(
                "this request meets an org limit and a platform limit, which the gateway's "
                "Redis Cluster cannot enforce together; refusing rather than risking overspend"
            ) from None
        except BaseException as exc:
            # It may have reserved, or may when a stalled store resumes: give the lease up.
            self._retry_later(_Pending(lease, checks, [], None, self.clock()))
            if not isinstance(exc, Exception):
                raise
            logger.warning("budget store unavailable: %s: %s", type(exc).__name__, exc)
            if not isinstance(exc, LeaseClosed):
                self._unreachable()
            result = None
        if result is None:
            # Locally (or 503) under a new lease: the store will find this one abandoned.
            lease = f"{name}.{next(self._serial)}"
            return await self._reserve_unshared(lease, ask, checks, self.clock())
        if isinstance(result, Refusal):
            raise self._refused(result, checks)
        if self._keep_figures:
            self._figures.saw(checks, result.remaining, now)
        return Reservation(lease, checks, result)

    async def _reserve_unshared(
        self, lease: str, ask: Ask, checks: list[Check], now: float
    ) -> Reservation:
        """Reserve while the store is unreachable: on the local counters (fail_open), or 503."""
        fallback = self._fallback
        if self.mode == "shared" or fallback is None:  # fail_closed (or a lease closed)
            raise CountersUnavailable(
                "budget counters are unavailable; refusing rather than risking overspend",
                headers={"retry-after": "1"},
            )
        if fallback.seed(checks, now) is not None:
            raise CountersUnavailable(
                "budget counters are unavailable, and this gateway process has no recent "
                "figure for one of this request's limits; refusing rather than guessing",
                headers={"retry-after": "1"},
            )
        result = await fallback.store.reserve(lease, ask, checks, now)
        if isinstance(result, Refusal):
            raise self._refused(result, checks)
        reservation = Reservation(lease, checks, result, local=True)
        fallback.inflight[lease] = (reservation, now)
        fallback.admitted += 1
        return reservation

    def _refused(self, refusal: Refusal, checks: list[Check]) -> GatewayError:
        return refusal_error(refusal, checks, self.settings.inflight_retry_seconds)

    async def settle(self, reservation: Reservation, record: LedgerRecord) -> None:
        if reservation.settled:
            return
        reservation.settled = True
        # As the ledger stores the cost (12 places, then up to whole nano-dollars): the
        # counter then equals a rebuild from the ledger's rows, never below their sum.
        actual = Actual(cost_nanos(record), record.input_tokens + record.output_tokens)
        admitted = reservation.remaining
        if reservation.local and await self._settle_local(reservation, actual):
            pass
        else:
            try:
                reservation.remaining = await self.store.settle(
                    reservation.lease, reservation.checks, reservation.amounts, actual, self.clock()
                )
            except BaseException as exc:
                # The lease keeps the room reserved meanwhile; sent again (it may have run).
                self._retry_later(_resend(reservation, actual, self.clock()))
                if not isinstance(exc, Exception):
                    raise
                logger.warning("settle failed, will retry: %s: %s", type(exc).__name__, exc)
                self._unreachable()
                return
            if self._keep_figures:
                self._figures.saw(reservation.checks, reservation.remaining, self.clock())
        if self.publish is not None and reservation.checks:
            for event in self._crossings.events(
                reservation.checks, reservation.amounts, admitted, reservation.remaining
            ):
                self.publish(event)

    async def _settle_local(self, reservation: Reservation, actual: Actual) -> bool:
        """Settle a reservation of the local counters; False when it was adopted by the store
        meanwhile (it settles there, as any other)."""
        fallback = self._fallback
        if fallback is not None and reservation.lease in fallback.adopting:
            await fallback.adopted.wait()
        if fallback is None or fallback.inflight.pop(reservation.lease, None) is None:
            return False
        now = self.clock()
        reservation.remaining = await fallback.store.settle(
            reservation.lease, reservation.checks, reservation.amounts, actual, now
        )
        lease, cs = reservation.lease, reservation.checks
        if lease in fallback.maybe_adopted:  # give back what its adoption may hold
            fallback.maybe_adopted.discard(lease)
            self._retry_later(_Pending(lease, cs, [], None, now))
        if actual.requests or actual.nanos or actual.tokens:
            # Under an id of its own: the abandon above tombstones the lease's.
            self._adds_unsent += 1
            self._retry_later(_Pending(lease + "+", cs, [], actual, now, add=True))
        return True

    async def release(self, reservation: Reservation) -> None:
        """Give the reservation back unused: the request will not be made (or is made on
        another deployment, under a new reservation). Counts no request."""
        if reservation.settled:
            return
        reservation.settled = True
        actual = Actual(0, 0, requests=0)
        if reservation.local and await self._settle_local(reservation, actual):
            return
        try:
            await self.store.settle(
                reservation.lease, reservation.checks, reservation.amounts, actual, self.clock()
            )
        except BaseException as exc:
            self._retry_later(_resend(reservation, actual, self.clock()))
            if not isinstance(exc, Exception):
                raise
            logger.warning("release failed, will retry: %s: %s", type(exc).__name__, exc)
            self._unreachable()

    # ------------------------------------------------------------------ outages

    def _unreachable(self) -> None:
        """A store call failed: stop asking the store on the request path until a probe sees
        it answer (refuse, or admit locally: ``on_unavailable``)."""
        if self.mode == "reconciling":
            self.mode = "local"  # the reconciliation gives up and the probe starts again
            return
        if self.mode != "shared" or isinstance(self.store, MemoryStore):
            return
        self.mode = mode_when_unreachable(self.on_unavailable)
        self._reconciled.clear()
        if self.mode == "local" and self._fallback is None:
            self._fallback = Fallback(
                self._figures, self.store.processes, counted=self.store.counted(self.clock())
            )
        logger.warning(
            "budget counters unreachable: %s until they answer (redis.on_unavailable = %s)",
            "admitting on this process's own counters (each limit: its share of the room "
            f"left at the last answer, 1/{self.store.processes})"
            if self.mode == "local"
            else "refusing requests under a limit with 503",
            self.on_unavailable,
        )
        if self._watching is None or self._watching.done():
            self._watching = asyncio.create_task(self._watch(), name="costwarden-budget-probe")

    async def _watch(self) -> None:
        """Probe the store off the request path until it answers; then leave the outage."""
        delay = _PROBE_FIRST
        while self.mode != "shared":
            await asyncio.sleep(delay)
            try:
                await self.store.ping()
            except Exception as exc:
                logger.debug("budget store probe failed: %s: %s", type(exc).__name__, exc)
                delay = min(2 * delay, _PROBE_MAX)
                continue
            if self.mode == "refusing":
                self.mode = "shared"
                self._reconciled.set()
                logger.warning("budget counters answer again: requests are admitted again")
                return
            self.mode = "reconciling"
            if await self._reconcile():
                return
            self.mode = "local"
            delay = _PROBE_FIRST

    async def _reconcile(self) -> bool:
        """Count every local admission in the store, then decide there again (True), or
        False when the store failed again."""
        fallback = self._fallback
        assert fallback is not None
        deadline = time.monotonic() + _RECONCILE_SECONDS
        for _ in range(_RECONCILE_PASSES):
            # 1. each settled local request added (the retry task sends them)
            while self._adds_unsent:
                if self.mode != "reconciling" or time.monotonic() > deadline:
                    return False
                self._retry_soon()
                await asyncio.sleep(_RETRY_FIRST)
            # 2. the local reservations in flight held in the store as leases
            todo = [(lease, r, at) for lease, (r, at) in fallback.inflight.items()]
            if todo:
                fallback.adopting = {lease for lease, _, _ in todo}
                fallback.adopted.clear()
                try:
                    leases = [(lease, r.checks, r.amounts, at) for lease, r, at in todo]
                    await self.store.adopt(leases, self.clock())
                except Exception as exc:
                    logger.warning("adopting local reservations failed: %s", exc)
                    fallback.maybe_adopted.update(fallback.adopting)
                    return False
                else:
                    for lease, reservation, _ in todo:
                        reservation.local = False
                        fallback.inflight.pop(lease, None)
                        fallback.maybe_adopted.discard(lease)
                finally:
                    fallback.adopting = set()
                    fallback.adopted.set()
            # 3. nothing local left: the store decides again (no await since the checks)
            if self.mode != "reconciling":  # a store call failed meanwhile
                return False
            if not self._adds_unsent and not fallback.inflight:
                self.mode, self._fallback = "shared", None
                self._reconciled.set()
                logger.warning(
                    "budget counters answer again: %d request(s) admitted locally meanwhile "
                    "are counted in them",
                    fallback.admitted,
                )
                return True
        return False

    # ------------------------------------------------------------------ retries

    def _retry_later(self, pending: _Pending) -> None:
        self._pending.append(pending)
        self._retry_soon()

    def _retry_soon(self) -> None:
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.create_task(self._retry_loop(), name="costwarden-budget-retry")

    async def _retry_loop(self) -> None:
        delay = _RETRY_FIRST
        while self._pending:
            await asyncio.sleep(delay)
            if await self._retry_pending():
                delay = _RETRY_FIRST
                continue
            if delay == _RETRY_FIRST:
                logger.warning(
                    "budget store still failing: %d call(s) pending, resent every %.1f s at most",
                    len(self._pending),
                    _RETRY_MAX,
                )
            delay = min(2 * delay, _RETRY_MAX)

    async def _retry_pending(self) -> bool:
        """Send the pending calls again; False (the rest still pending) when the store fails."""
        now = self.clock()
        # An abandon is moot once its lease has expired (any reserve purges it): dropping
        # those bounds the queue through a long outage.
        todo = [
            p for p in self._pending if p.actual is not None or now < p.since + self._lease_seconds
        ]
        self._pending = []
        sent = 0
        try:
            while todo:
                batch = todo[: _RETRY_BATCH if sent else 1]
                results = await asyncio.gather(
                    *(self._send(p) for p in batch), return_exceptions=True
                )
                failed = [p for p, r in zip(batch, results, strict=True) if r is not None]
                # Failed ones go last: one that fails for good must not keep the others back.
                todo = todo[len(batch) :] + failed
                sent += len(batch) - len(failed)
                if failed:
                    logger.debug("budget store still failing: %r", next(r for r in results if r))
                    return False
            return True
        finally:
            self._pending[:0] = todo  # what was not sent (cancelled too), before newer calls
            if sent:
                logger.info("budget store answers again: %d call(s) sent again", sent)

    async def _send(self, pending: _Pending) -> None:
        if pending.actual is None:
            await self.store.abandon(pending.lease, pending.checks, self.clock())
        elif pending.add:
            await self.store.add(pending.lease, pending.checks, pending.actual, pending.since)
            self._adds_unsent -= 1
        else:
            await self.store.settle(
                pending.lease, pending.checks, pending.amounts, pending.actual, self.clock()
            )

    def _checks(self, principal: Principal, now: float) -> list[Check]:
        """The principal's counters at ``now``, cached until a window or bucket moves on."""
        book = self.book
        cache_key = (
            principal.org_id,
            principal.project_id,
            principal.key_id,
            principal.end_user,
            principal.session_id,
            tuple(principal.tags.items()) if principal.tags else (),
        )
        cached = self._checks_cache.get(cache_key)
        if cached is not None and cached[0] is book and now < cached[1]:
            return cached[2]
        checks = checks_for(book.applicable(principal), now, self.tz, self._calendar)
        until = math.inf
        for check in checks:
            if check.rolling:
                size = bucket_seconds(check.limit.window)
                until = min(until, (check.bucket + 1) * size)
            elif check.resets_at is not None:
                until = min(until, check.resets_at)
        if len(self._checks_cache) >= _CHECKS_CACHE_SIZE:
            self._checks_cache.clear()  # bounded; rebuilt from hits within a bucket
        self._checks_cache[cache_key] = (book, until, checks)
        return checks

    def _calendar(self, window: str, now: float, tz: Any) -> CalendarWindow:
        cached = self._windows.get(window)
        if cached is not None and cached.start <= now < (cached.resets_at or math.inf):
            return cached
        fresh = self._windows[window] = calendar_window(window, now, tz)
        return fresh


def _resend(reservation: Reservation, actual: Actual, now: float) -> _Pending:
    return _Pending(reservation.lease, reservation.checks, reservation.amounts, actual, now)


def _poll_failed(exc: Exception) -> None:  # keep enforcing with what we have
    logger.warning("budget refresh failed: %s: %s", type(exc).__name__, exc)
