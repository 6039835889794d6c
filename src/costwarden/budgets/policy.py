"""The budget and rate-limit decision, as plain functions over counter values.

A request *asks* (:class:`Ask`) for an amount in every counter that applies (:class:`Check`);
:func:`decide` answers with a :class:`Grant` (how much to reserve in each counter, and the
output-token cap to send upstream) or a :class:`Refusal`. Both counter stores -- the
in-process one and the Redis Lua script, which is a line-by-line port of this module -- apply
exactly this decision, so the tests of one hold for the other.

Units: USD counters are integer nano-dollars; output prices are integer pico-dollars per
token (rounded up, so a bound computed from them stays a bound).

Order: rate limits first (429 ``rate``), then budgets. A *hard* budget reserves a true upper
bound -- every prompt byte counted as a token, plus the output cap -- and clamps the output cap
to what fits; a request that cannot fit even ``min_out`` tokens is refused: 402 ``budget`` if
the settled spend alone leaves no room (the money is gone), else 429 ``inflight`` (other
requests' reservations hold the room and will mostly be given back). A *soft* budget and every
rate limit reserve an estimate and refuse only when the window is already full.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from zoneinfo import ZoneInfo

from costwarden.budgets.limits import ROLLING_WINDOWS, Limit
from costwarden.budgets.windows import (
    CalendarWindow,
    bucket_index,
    bucket_leaves_at,
    bucket_seconds,
    calendar_window,
    first_bucket,
)

CalendarLookup = Callable[[str, float, ZoneInfo], CalendarWindow]
_NO_CAP = 1 << 62
# Seconds a rolling counter outlives its window, and a calendar one its reset.
_GRACE = 86400


# Check and Ask are built per request: plain slotted dataclasses (a frozen one pays an
# object.__setattr__ per field). Treat them as immutable.
@dataclasses.dataclass(slots=True)
class Check:
    """One counter a request must fit in."""

    limit: Limit
    key: str  # counter key, unique across tenants
    rolling: bool
    resets_at: float | None = None  # calendar: epoch of the reset; None for lifetime
    starts_at: float = 0.0  # calendar: epoch of the window's start (0 for lifetime)
    bucket: int = 0  # rolling: the current bucket
    first: int = 0  # rolling: the oldest bucket still counted
    ttl: int = 0  # seconds the counter must be kept (0: forever)


def checks_for(
    limits: list[Limit], now: float, tz: ZoneInfo, calendar: CalendarLookup | None = None
) -> list[Check]:
    """The counters ``limits`` use at ``now`` (``calendar`` may cache window lookups)."""
    out: list[Check] = []
    for limit in limits:
        if limit.window in ROLLING_WINDOWS:
            out.append(
                Check(
                    limit,
                    "r:" + limit.counter,
                    True,
                    bucket=bucket_index(limit.window, now),
                    first=first_bucket(limit.window, now),
                    ttl=ROLLING_WINDOWS[limit.window] + 2 * bucket_seconds(limit.window),
                )
            )
        else:
            window = (calendar or calendar_window)(limit.window, now, tz)
            ttl = 0 if window.resets_at is None else int(window.resets_at - now) + _GRACE
            out.append(
                Check(
                    limit,
                    f"c:{limit.counter}|{window.id}",
                    False,
                    window.resets_at,
                    starts_at=window.start or 0.0,
                    ttl=ttl,
                )
            )
    return out


@dataclasses.dataclass(slots=True)
class Ask:
    """What one request may cost, in counter units."""

    in_bound_tokens: int  # a true upper bound of prompt tokens (request bytes + overhead)
    in_est_tokens: int  # an estimate (bytes / 4)
    in_bound_nanos: int  # in_bound_tokens at the dearest input price, rounded up
    in_est_nanos: int
    out_pico: int  # dearest output price, pico-dollars per token, rounded up
    want_out: int | None  # the client's output cap, if it sent one
    max_out: int  # the cap used when the client sent none
    min_out: int  # the smallest cap worth calling with
    est_out: int  # expected output tokens (soft budgets, rate limits)
    has_output: bool = True  # False for embeddings
    # Choices generated per request (OpenAI's ``n``): providers bill every one, so each output
    # bound and estimate is per choice times this.
    choices: int = 1


@dataclasses.dataclass(slots=True)
class View:
    """A counter's values as the decision sees them."""

    used: int = 0  # settled (calendar)
    reserved: int = 0  # in flight (calendar)
    buckets: dict[int, int] = dataclasses.field(default_factory=dict)  # rolling


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    out_tokens: int | None  # output cap to send upstream; None leaves the request unchanged
    amounts: list[int]  # reserved in each check
    remaining: list[int]  # room left in each check after this reservation
    # Admitted against this process's leased slices (budgets/leased.py): their lease id, which
    # the request's ledger row carries. None when a store reserved it.
    holder: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    kind: str  # "rate" | "budget" | "inflight"
    index: int  # which check refused
    used: int  # settled spend (budgets) or window total (rate limits)
    reserved: int
    retry_after: float | None  # seconds; None when only a reset helps


@dataclasses.dataclass(frozen=True, slots=True)
class Actual:
    """What a request really used, in counter units."""

    nanos: int
    tokens: int
    requests: int = 1


# On the request path the built-in min() and max() of two values are left out for
# comparisons: in CPython 3.11 a call parses its keywords and costs about 1,000 instructions,
# the comparison 30 (callgrind: 27,000 instructions a request went to them).


def window_total(view: View, check: Check) -> int:
    buckets = view.buckets
    first = check.first
    # min() and sum() here: a window holds up to BUCKETS + 1 buckets, walked in C.
    if not buckets or min(buckets) >= first:  # the usual case: old buckets already pruned
        return sum(buckets.values())
    return sum(v for b, v in buckets.items() if b >= first)


def estimate(ask: Ask, check: Check) -> int:
    """What soft budgets and rate limits reserve."""
    metric = check.limit.metric
    if metric == "requests":
        return 1
    out = 0
    if ask.has_output:
        est, want = ask.est_out, ask.want_out
        out = est if want is None or est <= want else want
        out *= ask.choices
    if metric == "tokens":
        return ask.in_est_tokens + out
    return ask.in_est_nanos + _ceil_div(out * ask.out_pico, 1000)


def _hard_terms(ask: Ask, metric: str) -> tuple[int, int]:
    """(fixed part, milli-units per token of the output cap) of a hard bound; the cap applies
    to each of the request's choices."""
    if metric == "usd":
        return ask.in_bound_nanos, ask.out_pico * ask.choices
    if metric == "tokens":
        return ask.in_bound_tokens, 1000 * ask.choices
    return 1, 0


def _fits(room: int, fixed: int, per_milli: int) -> int:
    """Most output tokens that fit in ``room`` (-1 if not even the fixed part does)."""
    if room < fixed:
        return -1
    if per_milli == 0:
        return _NO_CAP
    return (room - fixed) * 1000 // per_milli


def rate_retry_after(view: View, check: Check, amount: int, now: float) -> float:
    """Seconds until enough old buckets leave the window for ``amount`` to fit."""
    limit = check.limit.amount
    need = window_total(view, check) + amount - limit
    if amount > limit:
        return float(ROLLING_WINDOWS[check.limit.window])
    freed = 0
    for b in sorted(k for k in view.buckets if k >= check.first):
        freed += view.buckets[b]
        if freed >= need:
            return max(0.0, bucket_leaves_at(check.limit.window, b) - now)
    return float(ROLLING_WINDOWS[check.limit.window])


def decide(ask: Ask, checks: list[Check], views: list[View], now: float) -> Grant | Refusal:
    est = [estimate(ask, c) for c in checks]
    totals = [window_total(views[i], c) if c.rolling else 0 for i, c in enumerate(checks)]
    for i, check in enumerate(checks):
        if check.rolling:
            total = totals[i]
            if total + est[i] > check.limit.amount:
                return Refusal("rate", i, total, 0, rate_retry_after(views[i], check, est[i], now))

    cap = 0 if not ask.has_output else (ask.max_out if ask.want_out is None else ask.want_out)
    threshold = ask.min_out if ask.min_out <= cap else cap
    out = cap
    bounded = False  # some hard budget depends on the output cap
    refusal: Refusal | None = None
    for i, check in enumerate(checks):
        if check.rolling:
            continue
        limit, view = check.limit, views[i]
        if limit.mode == "hard":
            fixed, per = _hard_terms(ask, limit.metric)
            bounded = bounded or per > 0
            fits = _fits(limit.amount - view.used - view.reserved, fixed, per)
            if fits < threshold:
                gone = _fits(limit.amount - view.used, fixed, per) < threshold
                refusal = _worse(refusal, Refusal(_kind(gone), i, view.used, view.reserved, None))
            if fits < out:
                out = fits
        else:
            # Soft: admitted while anything is left (counters are integers, so "full" is
            # used + reserved >= limit); the estimate may overshoot by what is in flight.
            if view.used + view.reserved >= limit.amount:
                gone = view.used >= limit.amount
                refusal = _worse(refusal, Refusal(_kind(gone), i, view.used, view.reserved, None))
    if refusal is not None:
        return refusal

    amounts: list[int] = []
    remaining: list[int] = []
    for i, check in enumerate(checks):
        limit, view = check.limit, views[i]
        if check.rolling:
            amounts.append(est[i])
            remaining.append(limit.amount - totals[i] - est[i])
            continue
        if limit.mode == "hard":
            fixed, per = _hard_terms(ask, limit.metric)
            amount = fixed + _ceil_div(out * per, 1000)
        else:
            amount = est[i]
        amounts.append(amount)
        remaining.append(limit.amount - view.used - view.reserved - amount)
    clamp = bounded and ask.has_output and (ask.want_out is None or out < ask.want_out)
    return Grant(out if clamp else None, amounts, remaining)


def _kind(gone: bool) -> str:
    return "budget" if gone else "inflight"


def _worse(current: Refusal | None, new: Refusal) -> Refusal:
    """A spent budget (402) outranks reservations in flight (429)."""
    if current is None or (new.kind == "budget" and current.kind != "budget"):
        return new
    return current


def actual_amount(check: Check, actual: Actual) -> int:
    metric = check.limit.metric
    if metric == "usd":
        return actual.nanos
    if metric == "tokens":
        return actual.tokens
    return actual.requests


def apply_grant(grant: Grant, checks: list[Check], views: list[View]) -> None:
    for i, check in enumerate(checks):
        if check.rolling:
            buckets = views[i].buckets
            buckets[check.bucket] = buckets.get(check.bucket, 0) + grant.amounts[i]
        else:
            views[i].reserved += grant.amounts[i]


def apply_settle(
    checks: list[Check], amounts: list[int], actual: Actual, views: list[View], *, held: bool
) -> None:
    """Replace each reservation by the actual amount (``held``: the reservation still exists)."""
    for i, check in enumerate(checks):
        real = actual_amount(check, actual)
        if check.rolling:
            buckets = views[i].buckets
            buckets[check.bucket] = buckets.get(check.bucket, 0) + real - (
                amounts[i] if held else 0
            )
        else:
            if held:
                views[i].reserved -= amounts[i]
            views[i].used += real


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)
