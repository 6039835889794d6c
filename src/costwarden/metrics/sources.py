"""What the app hands the exporter to read at scrape time: plain callables and plain values.

The metrics package sits in the domain layer next to budgets and routing and imports neither:
the composition root (``costwarden.app``) reads its breaker board, enforcer, ledger writer and
event bus and answers in these types. Every callable runs on the event loop's thread, once
per scrape, and must not do I/O (values already in memory only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Final, Literal

BreakerStateName = Literal["closed", "half_open", "open"]
# The value of costwarden_breaker_state for each state (documented in docs/metrics.md).
BREAKER_STATE_VALUES: Final[Mapping[str, int]] = {"closed": 0, "half_open": 1, "open": 2}


# The budget counters' modes (budgets/outage.py), each exported as
# costwarden_budget_counters_mode{mode=...}: 1 for the current one, 0 for the others.
COUNTER_MODES: Final[tuple[str, ...]] = ("shared", "refusing", "local", "reconciling")


@dataclasses.dataclass(frozen=True, slots=True)
class LimitGauge:
    """One limit in force, in counter units: nano-dollars for USD limits, else a count.

    ``spent``, ``reserved`` and ``remaining`` are None when the counters are not in this
    process's memory (they live in Redis): only the amount is known without I/O.
    """

    org: str  # "" for a platform limit
    scope: str  # platform, org, project, key, user, session, tag
    scope_id: str  # "" for the platform
    limit: str  # e.g. daily_usd, requests_per_minute
    amount: int
    spent: int | None = None
    reserved: int | None = None
    remaining: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class LimitGauges:
    """The limits to export (at most the configured cap) and how many were left out."""

    limits: tuple[LimitGauge, ...] = ()
    omitted: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerGauges:
    """The batching ledger writer's state."""

    queue_depth: int  # rows submitted, not yet committed
    flush_lag_seconds: float  # age of the oldest of them (0 when none wait)
    written: int  # rows committed since the process started
    failures: int  # failed write attempts since the process started
    spooled: int = 0  # rows in the spool, waiting for the database
    spooling: bool = False  # the database is out of reach: rows go to the spool


@dataclasses.dataclass(frozen=True, slots=True)
class SliceCounts:
    """Leased budget slices (``budgets.leased_slices``): where requests under a limit were
    decided, and the slices calls to Redis, since the process started."""

    admitted_locally: int  # against this process's slices: no Redis round trip
    reserved_exactly: int  # reserved (or refused) in Redis: near a limit, no slice with room
    calls: int  # slices scripts sent (one per org: settle, top up, give back)


@dataclasses.dataclass(frozen=True, slots=True)
class GaugeSources:
    """The callables read at every scrape; a None one exports nothing."""

    breakers: Callable[[], Mapping[str, str]] | None = None  # deployment -> state name
    limits: Callable[[], LimitGauges] | None = None
    ledger: Callable[[], LedgerGauges] | None = None
    event_subscribers: Callable[[], int] | None = None
    counters_mode: Callable[[], str] | None = None  # one of COUNTER_MODES
    slices: Callable[[], SliceCounts] | None = None  # only with leased slices on
