"""Spend spikes: which org's last complete clock hour to compare with which previous hours,
and the verdicts (``alerts.forecast.spike`` judges each). Pure functions over the hourly sums
the caller read; no I/O, no clock.

- **The hour.** The newest clock hour (UTC) that ended at least ``grace_seconds`` ago: the
  ledger writes in batches, so the last rows of an hour land a moment after it ends. Each hour
  is checked once per process; its alerts are keyed on it, so a second check (another
  process, a restart) raises nothing new.
- **The usual.** The same hour on each of the previous ``history_days`` days, a day counting
  only if the org existed when that hour began (an hour before the org was created is no
  evidence of its usual, and a new org has no usual: ``short_history`` until it has
  ``min_history_days``). A day in which the org existed but used nothing that hour counts as
  zero: a quiet night's usual is zero, and a runaway job at 3 am is the spike this is for.
- **The metrics.** USD (nano-dollars, floor ``min_usd_nanos``) always; tokens (input plus
  output, floor ``min_tokens``) only when a floor is set, since a spend spike usually is a
  token spike too and one alert per cause is enough by default.
- Only hours with use are judged (an empty hour is never a spike), and only orgs the caller
  knows (an org id without a creation time, such as a deleted org's, is skipped).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Literal

from costwarden.alerts.forecast import SPIKE_FLOOR_NANOS, SpikeResult, spike
from costwarden.core.errors import InvalidInput

HOUR = 3600
DAY = 86_400
SpikeMetric = Literal["usd", "tokens"]


@dataclasses.dataclass(frozen=True, slots=True)
class SpikeParams:
    """The spike rule's knobs, mapped by the app from ``[alerts]``."""

    factor: Decimal = Decimal(3)
    history_days: int = 7
    min_history_days: int = 3
    min_usd_nanos: int = SPIKE_FLOOR_NANOS
    min_tokens: int = 0  # 0: token spikes are not checked
    grace_seconds: int = 120

    def __post_init__(self) -> None:
        if self.factor <= 1:
            raise InvalidInput("factor must be above 1")
        if not 1 <= self.min_history_days <= self.history_days:
            raise InvalidInput("min_history_days must be between 1 and history_days")
        if self.min_usd_nanos < 0 or self.min_tokens < 0:
            raise InvalidInput("floors must not be negative")
        if not 0 <= self.grace_seconds < HOUR:
            raise InvalidInput("grace_seconds must be at least 0 and under an hour")


@dataclasses.dataclass(frozen=True, slots=True)
class HourUse:
    """An org's use in the clock hour from ``hour`` (epoch seconds, a multiple of 3600)."""

    org_id: str
    hour: int
    usd_nanos: int
    tokens: int


@dataclasses.dataclass(frozen=True, slots=True)
class SpikeFinding:
    """A spike: the org, the metric, the hour (its start) and the verdict behind it."""

    org_id: str
    metric: SpikeMetric
    hour: int
    result: SpikeResult


def hour_to_check(now: float, grace_seconds: int) -> int:
    """The start of the newest clock hour that ended at least ``grace_seconds`` before ``now``."""
    return (int(now - grace_seconds) // HOUR - 1) * HOUR


def compared_hours(hour: int, history_days: int) -> list[int]:
    """``hour`` and the same hour on each of the previous ``history_days`` days, newest first:
    every hour a check reads."""
    return [hour - day * DAY for day in range(history_days + 1)]


def spikes(
    hour: int,
    usage: Iterable[HourUse],
    org_created: Mapping[str, float],
    params: SpikeParams,
) -> list[SpikeFinding]:
    """The spikes of ``hour``, given every org's use in the :func:`compared_hours` and when
    each org was created (epoch seconds); orgs in id order, USD before tokens."""
    use: dict[tuple[str, int], HourUse] = {}
    for u in usage:
        seen = use.get((u.org_id, u.hour))
        use[(u.org_id, u.hour)] = u if seen is None else _add(seen, u)
    floors: list[tuple[SpikeMetric, int]] = [("usd", params.min_usd_nanos)]
    if params.min_tokens > 0:
        floors.append(("tokens", params.min_tokens))
    found: list[SpikeFinding] = []
    for org_id in sorted({org for org, h in use if h == hour}):
        created = org_created.get(org_id)
        if created is None:
            continue
        last = use[(org_id, hour)]
        days = [h for h in compared_hours(hour, params.history_days)[1:] if h >= created]
        for metric, floor in floors:
            history = [_amount(use.get((org_id, h)), metric) for h in days]
            result = spike(
                _amount(last, metric),
                history,
                params.factor,
                min_history=params.min_history_days,
                min_amount=floor,
            )
            if result.spike:
                found.append(SpikeFinding(org_id, metric, hour, result))
    return found


def _amount(u: HourUse | None, metric: SpikeMetric) -> int:
    if u is None:
        return 0
    return u.usd_nanos if metric == "usd" else u.tokens


def _add(a: HourUse, b: HourUse) -> HourUse:
    return HourUse(a.org_id, a.hour, a.usd_nanos + b.usd_nanos, a.tokens + b.tokens)
