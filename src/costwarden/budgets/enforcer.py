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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from decimal import ROUND_CEILING, Decimal
from typing import Any

from costwarden.budgets.limits import (
    LimitBook,
    Principal,
    Tier,
    format_amount,
)
from costwarden.budgets.memory import MemoryStore
from costwarden.budgets.policy import Actual, Ask, Check, Grant, Refusal, checks_for
from costwarden.budgets.ports import BudgetConfig, LedgerSums, PolicySource
from costwarden.budgets.rebuild import Family, TenantSeeds, compute_seeds, tenant_of
from costwarden.budgets.store import CountersLost, CounterStore
from costwarden.budgets.thresholds import Crossings
from costwarden.budgets.windows import (
    CalendarWindow,
    bucket_seconds,
    calendar_window,
    iso,
    zone,
)
from costwarden.core import polling
from costwarden.core.errors import (
    BudgetExceeded,
    BudgetInFlight,
    CountersUnavailable,
    GatewayError,
    RateLimited,
)
from costwarden.core.event_kinds import EventPayload
from costwarden.core.records import LedgerRecord, cost_nanos
from costwarden.providers.base import Deployment

logger = logging.getLogger(__name__)

_PICO = Decimal(10**12)
_PRUNE_EVERY = 60.0
_REBUILD_LOCK_MS = 15_000
_CHECKS_CACHE_SIZE = 10_000
# Failed store calls are sent again after _RETRY_FIRST, backing off to _RETRY_MAX while the
# store still fails; one alone first (while the store is down a pass costs one timeout),
# then the rest _RETRY_BATCH at a time.
_RETRY_FIRST = 0.02
_RETRY_MAX = 0.2
_RETRY_BATCH = 32


class Reservation:
    """What one admitted request holds until it settles."""

    __slots__ = ("lease", "checks", "amounts", "out_tokens", "remaining", "settled")

    def __init__(self, lease: str, checks: list[Check], grant: Grant) -> None:
        self.lease = lease
        self.checks = checks
        self.amounts = grant.amounts
        self.out_tokens = grant.out_tokens
        self.remaining = grant.remaining
        self.settled = False

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Remaining budget and rate-limit headers (the tightest limit of each kind)."""
        tightest: dict[tuple[bool, str], int] = {}
        remaining = self.remaining
        for i, check in enumerate(self.checks):
            kind = (check.rolling, check.limit.metric)
            best = tightest.get(kind)
            if best is None or remaining[i] < remaining[best]:
                tightest[kind] = i
        out: list[tuple[bytes, bytes]] = []
        reset: float | None = None
        for kind, i in tightest.items():
            check = self.checks[i]
            metric = kind[1]
            left = format_amount(metric, max(0, remaining[i])).encode()
            if kind[0]:
                limit_name, remaining_name = _RATE_HEADERS[metric]
                out.append((limit_name, _amount_bytes(metric, check.limit.amount)))
                out.append((remaining_name, left))
            else:
                out.append((_BUDGET_HEADERS[metric], left))
                if check.resets_at is not None and (reset is None or check.resets_at < reset):
                    reset = check.resets_at
        if reset is not None:
            out.append((b"x-costwarden-budget-reset", _iso_bytes(reset)))
        if self.out_tokens is not None:
            out.append((b"x-costwarden-max-tokens-clamped", str(self.out_tokens).encode()))
        return out


_RATE_HEADERS = {
    m: (f"x-ratelimit-limit-{m}".encode(), f"x-ratelimit-remaining-{m}".encode())
    for m in ("usd", "tokens", "requests")
}
_BUDGET_HEADERS = {
    m: f"x-costwarden-budget-remaining-{m}".encode() for m in ("usd", "tokens", "requests")
}


@functools.lru_cache(maxsize=256)
def _iso_bytes(epoch: float) -> bytes:
    return str(iso(epoch)).encode()


@functools.lru_cache(maxsize=1024)
def _amount_bytes(metric: str, amount: int) -> bytes:
    """A limit's amount as a header value (the same few limits on every response)."""
    return format_amount(metric, amount).encode()


@dataclasses.dataclass(slots=True)
class _Pending:
    """A store call to send again: a settle (or release, ``actual`` of nothing), or the
    abandon of a lease whose reserve failed (``actual`` None)."""

    lease: str
    checks: list[Check]
    amounts: list[int]
    actual: Actual | None
    since: float  # when the call first failed


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
        self._prices: dict[str, tuple[int, int]] = {}
        self._lease_seconds = b.lease_seconds
        self._pending: list[_Pending] = []
        self._retrying: asyncio.Task[None] | None = None
        self._serial = itertools.count()
        self._rebuilding = asyncio.Lock()
        self._last_prune = 0.0
        self._poller = polling.Poller(
            "costwarden-budgets", b.refresh_seconds, self._step, _poll_failed
        )

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        await self.store.start()
        await self.refresh(initial=True)
        self._last_prune = self.clock()
        self._poller.start()

    async def close(self) -> None:
        await self._poller.close()
        task, self._retrying = self._retrying, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
        ask = self._ask(deployment, endpoint, body_len, payload)
        lease = f"{lease}.{next(self._serial)}"
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
        except BaseException as exc:
            # It may have reserved, or may when a stalled store resumes: give the lease up.
            self._retry_later(_Pending(lease, checks, [], None, self.clock()))
            if not isinstance(exc, Exception):
                raise
            logger.warning("budget store unavailable: %s: %s", type(exc).__name__, exc)
            raise CountersUnavailable(
                "budget counters are unavailable; refusing rather than risking overspend",
                headers={"retry-after": "1"},
            ) from None
        if isinstance(result, Refusal):
            raise self._refused(result, checks)
        return Reservation(lease, checks, result)

    async def settle(self, reservation: Reservation, record: LedgerRecord) -> None:
        if reservation.settled:
            return
        reservation.settled = True
        # As the ledger stores the cost (12 places, then up to whole nano-dollars): the
        # counter then equals a rebuild from the ledger's rows, never below their sum.
        actual = Actual(cost_nanos(record), record.input_tokens + record.output_tokens)
        try:
            admitted = reservation.remaining
            reservation.remaining = await self.store.settle(
                reservation.lease, reservation.checks, reservation.amounts, actual, self.clock()
            )
            if self.publish is not None and reservation.checks:
                for event in self._crossings.events(
                    reservation.checks, reservation.amounts, admitted, reservation.remaining
                ):
                    self.publish(event)
        except BaseException as exc:
            # The lease keeps the room reserved meanwhile; sent again (it may have run).
            self._retry_later(_resend(reservation, actual, self.clock()))
            if not isinstance(exc, Exception):
                raise
            logger.warning("settle failed, will retry: %s: %s", type(exc).__name__, exc)

    async def release(self, reservation: Reservation) -> None:
        """Give the reservation back unused: the request will not be made (or is made on
        another deployment, under a new reservation). Counts no request."""
        if reservation.settled:
            return
        reservation.settled = True
        actual = Actual(0, 0, requests=0)
        try:
            await self.store.settle(
                reservation.lease, reservation.checks, reservation.amounts, actual, self.clock()
            )
        except BaseException as exc:
            self._retry_later(_resend(reservation, actual, self.clock()))
            if not isinstance(exc, Exception):
                raise
            logger.warning("release failed, will retry: %s: %s", type(exc).__name__, exc)

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

    def _ask(
        self, deployment: Deployment, endpoint: str, body_len: int, payload: dict[str, Any]
    ) -> Ask:
        prices = self._prices.get(deployment.id)
        if prices is None:
            per_in, per_out = deployment.rates.bound_rates()
            prices = self._prices[deployment.id] = (_pico(per_in), _pico(per_out))
        in_pico, out_pico = prices
        b = self.settings
        bound = body_len + b.prompt_overhead_tokens
        est = max(1, (body_len + 3) // 4)
        choices = 1
        if endpoint == "messages":
            want = payload.get("max_tokens")
        else:
            want = payload.get("max_completion_tokens") or payload.get("max_tokens")
            n = payload.get("n")  # validated: absent, null or a positive integer
            if n is not None and n != 1 and endpoint == "chat.completions":
                choices = n
        return Ask(
            in_bound_tokens=bound,
            in_est_tokens=est,
            in_bound_nanos=-(-bound * in_pico // 1000),
            in_est_nanos=-(-est * in_pico // 1000),
            out_pico=out_pico,
            want_out=want if isinstance(want, int) else None,
            max_out=deployment.max_output_tokens or b.default_max_output_tokens,
            min_out=b.min_output_tokens,
            est_out=b.expected_output_tokens,
            has_output=endpoint != "embeddings",
            choices=choices,
        )

    def _refused(self, refusal: Refusal, checks: list[Check]) -> GatewayError:
        check = checks[refusal.index]
        limit = check.limit
        metric = limit.metric

        def fmt(units: int) -> str:
            return format_amount(metric, units)

        who = limit.scope if limit.scope == "platform" else f"{limit.scope} {limit.subject}"
        extra: dict[str, Any] = {
            "scope": limit.scope,
            "scope_id": limit.subject or None,
            "limit_name": limit.name,
            "limit": fmt(limit.amount),
            "spent": fmt(refusal.used),
        }
        if refusal.kind == "rate":
            wait = max(1, math.ceil(refusal.retry_after or 1))
            extra["retry_after"] = wait
            return RateLimited(
                f"rate limit {limit.name} = {fmt(limit.amount)} reached for {who} "
                f"({fmt(refusal.used)} used in the window); retry after {wait} s",
                extra=extra,
                headers={"retry-after": str(wait)},
            )
        resets = iso(check.resets_at)
        extra["resets_at"] = resets
        if refusal.kind == "budget":
            when = f"resets at {resets}" if resets else "a lifetime budget does not reset"
            return BudgetExceeded(
                f"budget exceeded: {who} {limit.name} = {fmt(limit.amount)} is spent "
                f"({fmt(refusal.used)} used); {when}",
                extra=extra,
                headers={"x-costwarden-budget-reset": resets} if resets else None,
            )
        wait = self.settings.inflight_retry_seconds
        extra["reserved"] = fmt(refusal.reserved)
        extra["retry_after"] = wait
        return BudgetInFlight(
            f"budget {limit.name} of {who} is held by requests in flight "
            f"({fmt(refusal.reserved)} reserved, {fmt(refusal.used)} spent of "
            f"{fmt(limit.amount)}); retry after {wait} s",
            extra=extra,
            headers={"retry-after": str(wait)},
        )


def _resend(reservation: Reservation, actual: Actual, now: float) -> _Pending:
    return _Pending(reservation.lease, reservation.checks, reservation.amounts, actual, now)


def _poll_failed(exc: Exception) -> None:  # keep enforcing with what we have
    logger.warning("budget refresh failed: %s: %s", type(exc).__name__, exc)


def _pico(usd_per_token: Decimal) -> int:
    return int((usd_per_token * _PICO).to_integral_value(rounding=ROUND_CEILING))
