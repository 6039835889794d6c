"""Circuit-breaker policy for one deployment: a state machine over data, no I/O.

::

    closed --(N consecutive failures, or failure rate >= R over the window)--> open
    open --(cooldown over; the next admitted request is the probe)--> half_open
    half_open --(the probe succeeds)--> closed
    half_open --(the probe fails)--> open (a new cooldown)

Half-open admits exactly one request, the probe. A probe that never reports (its caller
crashed or was cancelled) would wedge the breaker half-open forever, so its slot expires
after ``probe_timeout_seconds`` and the next request may probe instead.

Every method takes ``now`` (epoch seconds) from the caller and returns the
:class:`Transition` it made, if any; recording, logging and publishing it is the caller's
business (:mod:`costwarden.routing.breakers`).

Which outcomes are failures is :func:`counts_as_failure`. Callers report every other outcome
as a success: the provider answered, so it is up. In half-open any report decides, since a
report cannot say whether it came from the probe or from a request admitted before the
breaker opened; either is fresh evidence about the deployment.

The failure rate is counted in ``_BUCKETS`` buckets per window (one second each with the
default 60 s window), so memory per breaker is fixed whatever the traffic, and "the last
60 s" is accurate to one bucket.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

from costwarden.core.errors import InvalidInput

BreakerState = Literal["closed", "open", "half_open"]
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
STATES: tuple[BreakerState, ...] = get_args(BreakerState)

OUTCOME_KINDS = ("status", "timeout", "connection")
MAX_REASON_LEN = 300
_BUCKETS = 60


def counts_as_failure(kind: str, status: int | None = None) -> bool:
    """Whether an upstream outcome counts against the deployment's breaker.

    - ``timeout`` and ``connection`` (refused, reset, dropped mid-response): failures.
    - ``status``: 5xx and 408 (the provider timed out) are failures. Other 4xx are the
      client's doing (bad request, unknown model, content policy) and say nothing about the
      provider's health. 429 is *not* a failure: it is the provider's rate limit, which
      retries with backoff handle; opening the breaker on it would take a healthy
      deployment out of rotation exactly when traffic is high, and every process sharing
      the provider would pile onto the fallbacks at once.
    """
    if kind in ("timeout", "connection"):
        return True
    if kind != "status":
        raise ValueError(f"unknown outcome kind {kind!r} (known: {', '.join(OUTCOME_KINDS)})")
    if status is None or isinstance(status, bool) or not 100 <= status <= 599:
        raise ValueError(f"outcome 'status' needs an HTTP status code, got {status!r}")
    if status == 429:
        return False
    return status == 408 or status >= 500


def _positive(name: str, value: Any, *, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"breaker {name} must be {kind}, got {value!r}")
    if integer and not isinstance(value, int):
        raise InvalidInput(f"breaker {name} must be an integer, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"breaker {name} must be above 0, got {value!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_threshold: int = 5  # consecutive failures that open the breaker
    failure_rate: float = 0.5  # ... or this share of failures in the window
    window_seconds: float = 60.0
    min_requests: int = 20  # requests in the window before the rate counts
    cooldown_seconds: float = 60.0  # open this long before a probe may go
    probe_timeout_seconds: float = 30.0  # a probe silent this long gives its slot up

    def __post_init__(self) -> None:
        _positive("failure_threshold", self.failure_threshold, integer=True)
        _positive("failure_rate", self.failure_rate)
        if self.failure_rate > 1:
            raise InvalidInput(
                f"breaker failure_rate is a share of requests (0 < rate <= 1), "
                f"got {self.failure_rate!r}"
            )
        _positive("window_seconds", self.window_seconds)
        _positive("min_requests", self.min_requests, integer=True)
        _positive("cooldown_seconds", self.cooldown_seconds)
        _positive("probe_timeout_seconds", self.probe_timeout_seconds)


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    deployment: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    at: float  # epoch seconds


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def _clip(reason: str) -> str:
    text = " ".join(str(reason).split()) or "unspecified"
    return text if len(text) <= MAX_REASON_LEN else text[: MAX_REASON_LEN - 1] + "…"


class Breaker:
    """The breaker of one deployment. Not thread-safe: one event loop owns it."""

    __slots__ = (
        "deployment",
        "policy",
        "state",
        "reason",
        "opened_at",
        "probe_until",
        "consecutive_failures",
        "last_success_at",
        "last_failure_at",
        "_buckets",
        "_width",
        "_requests",
        "_failures",
    )

    def __init__(self, deployment: str, policy: BreakerPolicy) -> None:
        self.deployment = deployment
        self.policy = policy
        self.state: BreakerState = CLOSED
        self.reason = ""
        self.opened_at: float | None = None  # when the breaker last opened (open, half_open)
        self.probe_until: float | None = None  # the probe slot is taken until then
        self.consecutive_failures = 0
        self.last_success_at: float | None = None
        self.last_failure_at: float | None = None
        self._width = policy.window_seconds / _BUCKETS
        # [bucket index, requests, failures], oldest first; totals kept alongside.
        self._buckets: collections.deque[list[int]] = collections.deque()
        self._requests = 0
        self._failures = 0

    # ---------------------------------------------------------------- the rolling window

    def _expire(self, index: int) -> None:
        buckets = self._buckets
        while buckets and buckets[0][0] <= index - _BUCKETS:
            _, requests, failures = buckets.popleft()
            self._requests -= requests
            self._failures -= failures

    def _count(self, now: float, failed: bool) -> None:
        index = math.floor(now / self._width)
        self._expire(index)
        buckets = self._buckets
        # A clock that stepped back lands in the newest bucket rather than out of order.
        if buckets and buckets[-1][0] >= index:
            bucket = buckets[-1]
        else:
            bucket = [index, 0, 0]
            buckets.append(bucket)
        bucket[1] += 1
        self._requests += 1
        if failed:
            bucket[2] += 1
            self._failures += 1

    def window(self, now: float) -> tuple[int, int]:
        """(requests, failures) in the window ending at ``now``."""
        self._expire(math.floor(now / self._width))
        return self._requests, self._failures

    def error_rate(self, now: float) -> float:
        requests, failures = self.window(now)
        return failures / requests if requests else 0.0

    def _clear_counts(self) -> None:
        self._buckets.clear()
        self._requests = self._failures = 0
        self.consecutive_failures = 0

    # ---------------------------------------------------------------- transitions

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    def _move(self, to_state: BreakerState, reason: str, now: float) -> Transition:
        transition = Transition(self.deployment, self.state, to_state, _clip(reason), now)
        self.state = to_state
        self.reason = transition.reason
        return transition

    def _open(self, reason: str, now: float) -> Transition:
        self.opened_at = now
        self.probe_until = None
        return self._move(OPEN, reason, now)

    def _close(self, reason: str, now: float) -> Transition:
        # A fresh start: failures from before the outage must not re-open it at once.
        self._clear_counts()
        self.opened_at = None
        self.probe_until = None
        return self._move(CLOSED, reason, now)

    @property
    def retry_at(self) -> float | None:
        """When an open breaker lets a probe through."""
        if self.state != OPEN or self.opened_at is None:
            return None
        return self.opened_at + self.policy.cooldown_seconds

    def probe_due(self, now: float) -> bool:
        """True when a request now would be the probe: the breaker is open with its cooldown
        over, or half-open, and nobody holds the probe slot."""
        if self.state == CLOSED:
            return False
        if self.state == OPEN:
            retry_at = self.retry_at
            if retry_at is not None and now < retry_at:
                return False
        return self.probe_until is None or now >= self.probe_until

    def start_probe(self, now: float) -> Transition | None:
        """Take the probe slot (call when :meth:`probe_due`); opens half-open if needed."""
        self.probe_until = now + self.policy.probe_timeout_seconds
        if self.state == OPEN:
            cooldown = f"{self.policy.cooldown_seconds:g}"
            return self._move(HALF_OPEN, f"cooldown of {cooldown}s over; probing", now)
        return None

    def hold_probe(self, until: float) -> None:
        """Another process holds the probe slot until ``until``: don't probe before then."""
        if self.state != CLOSED:
            self.probe_until = until

    def admit(self, now: float) -> tuple[bool, Transition | None]:
        """Whether a request may go now, and the transition admitting it made (if any)."""
        if self.state == CLOSED:
            return True, None
        if not self.probe_due(now):
            return False, None
        return True, self.start_probe(now)

    def record_success(self, now: float) -> Transition | None:
        self.last_success_at = now
        self.consecutive_failures = 0
        self._count(now, failed=False)
        if self.state == HALF_OPEN:
            return self._close("probe succeeded", now)
        return None

    def record_failure(self, now: float, reason: str) -> Transition | None:
        self.last_failure_at = now
        self.consecutive_failures += 1
        self._count(now, failed=True)
        why = _clip(reason)
        if self.state == HALF_OPEN:
            return self._open(f"probe failed: {why}", now)
        if self.state == OPEN:
            return None  # a request admitted before it opened; it is already open
        policy = self.policy
        if self.consecutive_failures >= policy.failure_threshold:
            return self._open(f"{self.consecutive_failures} consecutive failures; last: {why}", now)
        requests, failures = self._requests, self._failures
        if requests >= policy.min_requests and failures >= policy.failure_rate * requests:
            return self._open(
                f"failure rate {failures / requests:.0%} over {policy.window_seconds:g}s "
                f"({failures} of {requests} requests); last: {why}",
                now,
            )
        return None

    def reset(self, now: float, reason: str) -> Transition | None:
        """Force closed (an operator's call); counts start afresh even if it was closed."""
        if self.state == CLOSED:
            self._clear_counts()
            return None
        return self._close(reason, now)

    def apply(
        self, state: str, opened_at: float | None, reason: str, at: float
    ) -> Transition | None:
        """Take on a state another process recorded (shared state); the transition this
        process sees, if its state changes."""
        if state not in STATES:
            raise ValueError(f"unknown breaker state {state!r}")
        if state == CLOSED:
            return None if self.state == CLOSED else self._close(reason, at)
        if state == OPEN:
            self.opened_at = opened_at if opened_at is not None else at
            self.probe_until = None
            if self.state == OPEN:
                self.reason = _clip(reason)  # re-opened elsewhere: a new cooldown, same state
                return None
            return self._move(OPEN, reason, at)
        # half-open elsewhere: that process holds the probe slot (Redis arbitrates it)
        if opened_at is not None:
            self.opened_at = opened_at
        if self.state == HALF_OPEN:
            return None
        return self._move(HALF_OPEN, reason, at)

    # ---------------------------------------------------------------- reporting

    def snapshot(self, now: float) -> dict[str, Any]:
        """The health entry (times as ISO 8601 UTC, or None)."""
        requests, failures = self.window(now)
        return {
            "deployment": self.deployment,
            "state": self.state,
            "reason": self.reason or None,
            "last_success_at": iso(self.last_success_at),
            "last_failure_at": iso(self.last_failure_at),
            "error_rate": failures / requests if requests else 0.0,
            "requests_in_window": requests,
            "consecutive_failures": self.consecutive_failures,
            "opened_at": iso(self.opened_at),
            "retry_at": iso(self.retry_at),
        }
