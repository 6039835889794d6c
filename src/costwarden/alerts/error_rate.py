"""The upstream error-rate rule: "this provider has been failing at least ``pct`` % of its
requests for ``minutes`` minutes". Pure functions over per-minute counts the caller read from
the ledger; no I/O, no clock (``now`` is an argument).

**Counts.** One :class:`MinuteOutcomes` per provider and clock minute (epoch seconds, a
multiple of 60): its ledger rows, and those that failed (``alerts.risks.FAILURE_STATUSES``,
less the client's own errors: a 4xx other than 429 is relayed, not an upstream fault,
as failover treats it). The ledger has one row per request, attributed to the last provider
tried: a request that failed on one provider and was served by the next counts as a success
of the next. The rule measures what clients got, not every attempt (breaker alerts see those).

**Verdict** (:func:`error_rate`), over the last ``minutes`` *complete* minutes before
``now`` (the minute in progress is partial: left out):

- ``failing`` when every one of them had requests and at least ``pct`` % of them failed, and
  the window had at least ``min_requests`` requests in all (one failure out of one request
  pages nobody). A minute without requests breaks the run: no traffic is no evidence.
- ``healthy`` when the newest minute of the window that had requests is under ``pct`` %, and
  ``idle`` when the window had no requests at all: both clear an open alert.
- ``not_sustained`` (the newest minute with traffic is at or over the threshold, but not for
  long enough) and ``too_few_requests``: neither fires nor clears, so a flapping rate neither
  pages twice nor resolves on a lull.

The **episode** is the run of consecutive failing minutes ending at the newest complete one;
it began at ``run_start``, counted over ``lookback_minutes`` (clamped there: ``clamped``). The
caller keys its alert on it: every process, and the same process after a restart, computes
the same start for the same run, so the alert's unique key makes it fire once.

**Decision** (:func:`decide`), given the alerts of this rule and provider that are open or
fired within the lookback: raise when failing, none is open and none fired during this
episode (at or after ``run_start``); resolve when healthy or idle and one is open. Resolving by
hand while the errors go on keeps the rule quiet for the rest of the episode as far as the
lookback sees it (acknowledge instead: an open alert is never repeated).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Literal

from costwarden.core.errors import InvalidInput

ErrorRateVerdict = Literal["failing", "healthy", "idle", "not_sustained", "too_few_requests"]
Decision = Literal["raise", "resolve", "none"]

# The 4xx status of failed rows that still counts: a rate limit is the provider's (failover
# moves on after it too); other 4xx are the client's own errors, relayed as they came.
UPSTREAM_CLIENT_STATUSES = (429,)
MINUTE = 60


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorRateParams:
    """The rule's knobs, mapped by the app from ``[alerts]``."""

    pct: int = 20
    minutes: int = 5
    min_requests: int = 10
    lookback_minutes: int = 15  # how far back an episode's start is found

    def __post_init__(self) -> None:
        if not 1 <= self.pct <= 100:
            raise InvalidInput("pct must be between 1 and 100")
        if self.minutes < 1:
            raise InvalidInput("minutes must be at least 1")
        if self.min_requests < 1:
            raise InvalidInput("min_requests must be at least 1")
        if self.lookback_minutes < self.minutes:
            raise InvalidInput("lookback_minutes must be at least minutes")


@dataclasses.dataclass(frozen=True, slots=True)
class MinuteOutcomes:
    """One provider's requests and upstream failures in the minute from ``start``."""

    start: int  # epoch seconds, a multiple of 60
    requests: int
    failures: int


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorRateResult:
    """What :func:`error_rate` concludes. ``requests`` and ``failures`` are the window's (the
    last ``minutes`` complete minutes); ``run_start`` is the first minute of the current run
    of failing minutes (None when the newest minute is not failing), ``run_minutes`` its
    length within the lookback."""

    verdict: ErrorRateVerdict
    fires: bool
    clears: bool
    requests: int
    failures: int
    run_start: int | None
    run_minutes: int
    clamped: bool
    reason: str


def is_failing(m: MinuteOutcomes, pct: int) -> bool:
    """Whether a minute had requests and at least ``pct`` % of them failed (exact integers)."""
    return m.requests > 0 and m.failures * 100 >= pct * m.requests


def error_rate(
    outcomes: Iterable[MinuteOutcomes], *, now: float, params: ErrorRateParams
) -> ErrorRateResult:
    """The verdict of one provider's per-minute counts at ``now`` (module docstring)."""
    newest = int(now // MINUTE) - 1  # the newest complete minute, as a minute index
    oldest = newest - params.lookback_minutes + 1
    by_minute: dict[int, MinuteOutcomes] = {}
    for m in outcomes:
        i = m.start // MINUTE
        if oldest <= i <= newest:  # older minutes and the one in progress are ignored
            seen = by_minute.get(i)
            by_minute[i] = m if seen is None else _add(seen, m)
    empty = MinuteOutcomes(0, 0, 0)
    run = 0
    while run < params.lookback_minutes and is_failing(
        by_minute.get(newest - run, empty), params.pct
    ):
        run += 1
    window = [by_minute.get(i, empty) for i in range(newest - params.minutes + 1, newest + 1)]
    requests = sum(m.requests for m in window)
    failures = sum(m.failures for m in window)
    run_start = (newest - run + 1) * MINUTE if run else None
    share = f"{failures} of {requests} requests failed in the last {params.minutes} min"
    verdict: ErrorRateVerdict
    if run >= params.minutes and requests >= params.min_requests:
        verdict = "failing"
        why = f"{share}: at least {params.pct} % in each of those minutes"
    elif requests == 0:
        verdict, why = "idle", f"no requests in the last {params.minutes} min"
    elif not is_failing(next(m for m in reversed(window) if m.requests), params.pct):
        verdict = "healthy"
        why = f"{share}; the newest minute with requests is under {params.pct} %"
    elif run >= params.minutes:
        verdict = "too_few_requests"
        why = f"{share}: fewer than the {params.min_requests} requests needed to alert"
    else:
        verdict = "not_sustained"
        why = f"{share}: at least {params.pct} % for {run} min, not {params.minutes} in a row"
    return ErrorRateResult(
        verdict=verdict,
        fires=verdict == "failing",
        clears=verdict in ("healthy", "idle"),
        requests=requests,
        failures=failures,
        run_start=run_start,
        run_minutes=run,
        clamped=run == params.lookback_minutes,
        reason=why,
    )


def _add(a: MinuteOutcomes, b: MinuteOutcomes) -> MinuteOutcomes:
    return MinuteOutcomes(a.start, a.requests + b.requests, a.failures + b.failures)


@dataclasses.dataclass(frozen=True, slots=True)
class PriorAlert:
    """An alert of this rule and provider: open or not, and when it fired (epoch seconds)."""

    open: bool
    fired_at: float


def decide(result: ErrorRateResult, priors: Sequence[PriorAlert]) -> Decision:
    """Raise, resolve or leave alone, given the provider's alerts that are open or fired within
    the lookback (module docstring)."""
    is_open = any(p.open for p in priors)
    if result.fires:
        if is_open or result.run_start is None:
            return "none"
        if any(p.fired_at >= result.run_start for p in priors):
            return "none"  # this episode alerted already, and someone resolved it by hand
        return "raise"
    if result.clears and is_open:
        return "resolve"
    return "none"
