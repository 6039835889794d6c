"""Leased slices: the policy of admitting requests against this process's share of a counter.

With counters in Redis, each gateway process may lease a *slice* of a counter's room: an
amount it reserves in Redis once (``lua/slices.lua``) and then spends locally, request by
request, without a round trip. This module is that local book, as plain functions over data;
:mod:`costwarden.budgets.leased` is the I/O around it.

Why the cap stays exact: a slice is an ordinary reservation in Redis, so the sum of every
process's slices, every exact reservation and the settled spend never exceeds the limit
(``slices.lua`` grants from the room left, at most ``1 / (2 P)`` of it per process). Locally a
request is admitted only if every counter it meets has a slice with room for its whole
reservation (the same bound :func:`~costwarden.budgets.policy.decide` reserves), and only if
the slice would not clamp its output more than the exact path would. What a local request
consumed is moved from the slice to the settled spend by the next call (every ``flush``
interval), cumulatively, so a call resent after a timeout counts it once. Near the limit a
share no longer holds one request: the slice is *tight*, it is drained and given back, and the
counter's requests take the exact path (one reservation per request) until the room is back.

A process that dies leaves its slices in Redis until its slice lease expires; the purge then
counts each as spent (it may have admitted against all of it without telling): stranded, never
overspent (docs/budgets.md, "Leased slices").
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

from costwarden.budgets.policy import (
    Actual,
    Ask,
    Check,
    Grant,
    View,
    actual_amount,
    decide,
)
from costwarden.budgets.windows import bucket_index, bucket_seconds

# A slice is sized for this many of the largest request seen, or this many flush intervals of
# its recent traffic, whichever is more.
SLICE_REQUESTS = 8
SLICE_INTERVALS = 25
# A slice is topped up when its free part falls below this fraction of its wanted size.
TOP_UP_FRACTION = 0.5
# Between two calls a process admits at most this many of the largest request, or this many
# flush intervals of its recent traffic, whichever is more: its *allowance*. A purge of a dead
# process's slice counts that (and its requests in flight at its last call) as spent.
ALLOWANCE_REQUESTS = 4
ALLOWANCE_INTERVALS = 15
# What slices consumed is counted in Redis at the latest this many flush intervals after the
# last call (sooner when a slice needs topping up or half its allowance is used): until then it
# is still held there as part of the slice, so no one else can take that room meanwhile.
COUNT_INTERVALS = 10
# A rolling counter's slice of the next bucket is taken this long before the bucket starts (or
# this many flush intervals, if longer), so that requests never wait for it: under load a
# flush runs late. It counts in the window that much early.
LEAD_SECONDS = 0.25
LEAD_INTERVALS = 5
# A counter found tight takes the exact path for this long before slices are tried again.
TIGHT_SECONDS = 1.0
# A slice nobody asked anything of for this long is given back (its room is others' again).
IDLE_SECONDS = 5.0
# Counters whose last rate is remembered (a new slice of them starts from it), at most.
_HISTORY_SIZE = 10_000


@dataclasses.dataclass(slots=True, eq=False)
class Slice:
    """This process's slice of one counter (a rolling counter: of one bucket of it)."""

    check: Check  # the check it was taken for (limit, window, bucket, ttl)
    granted: int = 0  # held in Redis for this process, as of the last answer
    held: int = 0  # reserved by local requests in flight
    used: int = 0  # consumed by settled local requests, cumulative
    sent: int = 0  # ``used`` as of the last answered call (Redis counted that much)
    room: int = 0  # room outside every slice at the last answer (for headers)
    need: int = 0  # the largest single reservation asked of it
    admitted: int = 0  # asked of it since the last answer
    rate: float = 0.0  # what is asked of it per second, smoothed over the last answers
    answered_at: float = 0.0
    admitted_total: int = 0  # reserved locally, cumulative
    base: int = 0  # admitted_total when the last answered call was sent
    allowance: int = 0  # what may be admitted past ``base`` before the next answer
    inflight: int = 0  # local requests holding part of it
    last_asked: float = 0.0  # when a request last asked anything of it
    draining: bool = False  # tight or over: no local admissions; given back once idle
    forgotten: bool = False  # its entry is gone from Redis

    @property
    def free(self) -> int:
        return self.granted - self.held - (self.used - self.sent)

    def per_interval(self, now: float, interval: float) -> float:
        """What is asked of it in one flush interval, by its recent rate or, if higher, the
        rate since the last answer (traffic that just grew)."""
        recent = self.admitted / max(now - self.answered_at, interval)
        return max(self.rate, recent) * interval

    def want(self, now: float, interval: float) -> int:
        per = self.per_interval(now, interval)
        return max(SLICE_REQUESTS * self.need, math.ceil(SLICE_INTERVALS * per))

    def next_allowance(self, now: float, interval: float) -> int:
        per = self.per_interval(now, interval)
        return max(ALLOWANCE_REQUESTS * self.need, math.ceil(ALLOWANCE_INTERVALS * per))

    def fits(self, amount: int) -> bool:
        """Whether one more local request of ``amount`` fits its room and its allowance."""
        return amount <= self.free and self.admitted_total - self.base + amount <= self.allowance


def slice_id(check: Check) -> str:
    """A rolling counter's slices are per bucket: what is admitted counts in the bucket the
    slice was reserved in, so a slice never outlives its bucket."""
    return f"{check.key}@{check.bucket}" if check.rolling else check.key


class Op(NamedTuple):
    """One slice in one call of ``slices.lua`` (see its ARGV[7])."""

    slice: Slice
    used: int
    keep: int
    want: int
    need: int
    forget: bool
    allowance: int  # the allowance from the answer on (exposed: ``held + allowance``)
    held: int  # requests in flight when sent
    admitted_at: int  # admitted_total when sent

    @property
    def exposed(self) -> int:
        return self.held + self.allowance


class Answer(NamedTuple):
    granted: int
    room: int
    tight: bool


@dataclasses.dataclass(slots=True)
class LocalLease:
    """A request admitted against slices: what it holds in each, to settle locally."""

    slices: list[Slice]
    amounts: list[int]
    checks: list[Check]


class SliceBook:
    """Every slice this process holds, per tenant, and the requests admitted against them."""

    def __init__(self, interval: float = 0.02, holder: str | None = None) -> None:
        self.interval = interval  # seconds between two calls of a busy tenant (the flush)
        self.holder = holder  # the slice lease id local grants carry (Grant.holder)
        self.tenants: dict[str, dict[str, Slice]] = {}
        self.leases: dict[str, LocalLease] = {}
        # counter key -> until when it takes the exact path
        self.tight: dict[str, float] = {}
        # counter key -> (rate, need) of its last slice: a rolling counter's next bucket's
        # slice starts from them
        self.history: dict[str, tuple[float, int]] = {}
        # tenant -> until when its slices may be spent: their lease was last extended to
        # expire later than this (safely before, so a late purge cannot meet a live slice)
        self.valid_until: dict[str, float] = {}

    # -- admission -------------------------------------------------------------------------

    def admit(self, lease: str, ask: Ask, checks: list[Check], now: float) -> Grant | None:
        """Admit locally, or None (a slice is missing, draining or too small: ask Redis)."""
        slices: list[Slice] = []
        views: list[View] = []
        for check in checks:
            tenant = check.limit.tenant
            found = self.tenants.get(tenant, {}).get(slice_id(check))
            if found is None or found.draining or found.forgotten:
                return None
            if now >= self.valid_until.get(tenant, 0.0):
                return None
            slices.append(found)
            used = check.limit.amount - found.free
            if check.rolling:
                views.append(View(buckets={check.bucket: used}))
            else:
                views.append(View(used=used))
        result = decide(ask, checks, views, now)
        if not isinstance(result, Grant) or _clamped(ask, result):
            return None
        if not all(s.fits(a) for s, a in zip(slices, result.amounts, strict=True)):
            return None
        for s, amount in zip(slices, result.amounts, strict=True):
            s.held += amount
            s.admitted += amount
            s.admitted_total += amount
            s.inflight += 1
            s.need = max(s.need, amount)
            s.last_asked = now
        self.leases[lease] = LocalLease(slices, result.amounts, checks)
        remaining = [s.room + s.free for s in slices]
        return Grant(result.out_tokens, result.amounts, remaining, self.holder)

    def wanted(self, ask: Ask, checks: list[Check], now: float) -> list[str]:
        """Make the slices a request would need and has not (sized for it); the tenants to
        ask. Empty when one of its counters is tight (the exact path is the way)."""
        if any(self.tight.get(c.key, 0.0) > now for c in checks):
            return []
        unbounded = decide(ask, checks, [View() for _ in checks], now)
        if not isinstance(unbounded, Grant):  # cannot fit even an empty counter
            return []
        tenants: list[str] = []
        for check, amount in zip(checks, unbounded.amounts, strict=True):
            book = self.tenants.setdefault(check.limit.tenant, {})
            sid = slice_id(check)
            found = book.get(sid)
            if found is None or found.forgotten:
                found = book[sid] = self._new_slice(check)
            if found.draining:
                return []
            found.need = max(found.need, amount)
            found.admitted += amount  # demand: sizes the slice
            found.last_asked = now
            if not found.fits(amount) and check.limit.tenant not in tenants:
                tenants.append(check.limit.tenant)
        return tenants

    def settle(self, lease: str, actual: Actual) -> list[int] | None:
        """Settle a locally admitted request (None: it was not admitted here). Returns the
        room left in each of its counters, as far as this process knows."""
        local = self.leases.pop(lease, None)
        if local is None:
            return None
        for s, check, amount in zip(local.slices, local.checks, local.amounts, strict=True):
            s.held -= amount
            s.used += actual_amount(check, actual)
            s.inflight -= 1
        return [s.room + s.free for s in local.slices]

    def owns(self, lease: str) -> bool:
        return lease in self.leases

    # -- calls -----------------------------------------------------------------------------

    def ops(self, tenant: str, now: float, *, closing: bool = False) -> list[Op]:
        """What the next call for ``tenant`` sends: every slice that consumed something,
        needs topping up, is over (its bucket or window passed) or draining; all of them
        when ``closing`` (they are given back)."""
        out: list[Op] = []
        for s in list(self.tenants.get(tenant, {}).values()):
            if s.forgotten:
                continue
            unasked = s.inflight == 0 and now - s.last_asked > IDLE_SECONDS
            if closing or s.draining or unasked or _over(s.check, now):
                s.draining = True
                idle = s.inflight == 0
                keep = 0 if idle else s.held
                out.append(Op(s, s.used, keep, 0, s.need, idle, 0, s.held, s.admitted_total))
                continue
            want = s.want(now, self.interval)
            if (
                s.free < TOP_UP_FRACTION * want
                or 2 * (s.admitted_total - s.base) > s.allowance
                or (
                    (s.used > s.sent or s.admitted_total > s.base)
                    and now - s.answered_at >= COUNT_INTERVALS * self.interval
                )
            ):
                out.append(self._top_up(s, now))
            if s.check.rolling:
                self._lead(tenant, s, now, out)
        return self._with_siblings(tenant, out, now)

    def _with_siblings(self, tenant: str, ops: list[Op], now: float) -> list[Op]:
        """``ops``, plus a top-up of every other live slice of a rolling counter that has one
        among them (the current bucket's and the next one's), each counter's oldest bucket
        first: ``slices.lua`` sizes a process's slices of one counter out of one fair share,
        in that order, so a call that finds the counter tight drains all of them at once."""
        rolling = {op.slice.check.key for op in ops if op.slice.check.rolling}
        if not rolling:
            return ops
        present = {id(op.slice) for op in ops}
        for s in self.tenants.get(tenant, {}).values():
            if s.check.key in rolling and id(s) not in present and not s.forgotten:
                ops.append(self._top_up(s, now))
        return sorted(ops, key=lambda op: (op.slice.check.key, op.slice.check.bucket))

    def _top_up(self, s: Slice, now: float) -> Op:
        keep = s.granted - (s.used - s.sent)
        want = s.want(now, self.interval)
        allowance = s.next_allowance(now, self.interval)
        return Op(s, s.used, keep, max(want, keep), s.need, False, allowance, s.held,
                  s.admitted_total)  # fmt: skip

    def answered(
        self, tenant: str, ops: list[Op], answers: list[Answer], now: float, valid_until: float
    ) -> None:
        """Apply a call's answers (the slices' sizes in Redis now); the tenant's slices may
        be spent until ``valid_until``."""
        self.valid_until[tenant] = valid_until
        for op, answer in zip(ops, answers, strict=True):
            s = op.slice
            s.granted = answer.granted
            s.sent = op.used
            s.room = answer.room
            if s.answered_at:  # (a first answer keeps the rate a new slice inherited)
                s.rate = (s.rate + s.admitted / max(now - s.answered_at, self.interval)) / 2
            s.answered_at = now
            s.admitted = 0
            s.base = op.admitted_at
            s.allowance = op.allowance
            if len(self.history) >= _HISTORY_SIZE:
                self.history.clear()  # bounded (a day's window is a new key each day)
            self.history[s.check.key] = (s.rate, s.need)
            if answer.tight:
                s.draining = True
                self.tight[s.check.key] = now + TIGHT_SECONDS
            if op.forget:
                s.forgotten = True
        book = self.tenants.get(tenant, {})
        for sid in [sid for sid, s in book.items() if s.forgotten]:
            del book[sid]
        for sid in [sid for sid, until in self.tight.items() if until <= now]:
            del self.tight[sid]

    def _new_slice(self, check: Check) -> Slice:
        rate, need = self.history.get(check.key, (0.0, 0))
        return Slice(check, rate=rate, need=need)

    def _lead(self, tenant: str, s: Slice, now: float, out: list[Op]) -> None:
        """Near the end of a rolling slice's bucket, the next bucket's slice (a new op)."""
        size = bucket_seconds(s.check.limit.window)
        if (s.check.bucket + 1) * size - now > max(LEAD_SECONDS, LEAD_INTERVALS * self.interval):
            return
        book = self.tenants[tenant]
        nxt = dataclasses.replace(s.check, bucket=s.check.bucket + 1, first=s.check.first + 1)
        sid = slice_id(nxt)
        if sid in book:
            return
        fresh = book[sid] = Slice(nxt, rate=s.rate, need=s.need, last_asked=now)
        out.append(
            Op(fresh, 0, 0, fresh.want(now, self.interval), fresh.need, False,
               fresh.next_allowance(now, self.interval), 0, 0)  # fmt: skip
        )

    def failed(self, tenant: str, ops: list[Op]) -> None:
        """A call failed with its outcome unknown. Redis holds at least ``keep`` of each
        slice either way, and ``used`` is resent (cumulative) with the next call; but the
        allowance Redis counts on may be either call's, so nothing more is admitted locally
        until a call is answered."""
        self.valid_until[tenant] = 0.0
        for op in ops:
            if op.slice.draining:
                op.slice.granted = min(op.slice.granted, op.keep + (op.used - op.slice.sent))

    def drop(self, tenant: str) -> int:
        """Forget every slice of ``tenant`` (purged after expiring, or lost with Redis's
        data): requests in flight on them settle into nothing. Returns how many."""
        book = self.tenants.pop(tenant, {})
        self.valid_until.pop(tenant, None)
        for s in book.values():
            s.forgotten = True
        return len(book)

    def holding(self) -> list[str]:
        """Tenants with any slice."""
        return [t for t, book in self.tenants.items() if book]


def _over(check: Check, now: float) -> bool:
    """Whether the slice's window (a calendar counter) or bucket (a rolling one) has passed."""
    if check.rolling:
        return bucket_index(check.limit.window, now) > check.bucket  # (a lead slice: <)
    return check.resets_at is not None and now >= check.resets_at


def _clamped(ask: Ask, grant: Grant) -> bool:
    """Whether the slices cut the output cap below what the request would get unbounded: the
    exact path may fit more."""
    if grant.out_tokens is None or not ask.has_output:
        return False
    cap = ask.max_out if ask.want_out is None else ask.want_out
    return grant.out_tokens < cap
