"""Rollups as data: what one rollup row holds, the buckets rows fall in, and drift.

A rollup row is the totals of the ledger rows of one bucket (a UTC hour, or a UTC day) that
share every dimension (org, project, key, end user, provider, model, status), or one tag.
Its measures are sums only, so a bucket can be recomputed from its raw rows at any time and
give the same row (the rollup job's idempotence), and a day is the sum of its hours.

Every measure is exact: counts and tokens are integers, money is ``Decimal`` (the ledger's 12
places: the cost, and the response cache's savings ``saved_usd``), and latencies are summed
in whole microseconds (each row's milliseconds rounded to a microsecond first: by the
database for the dimensions' rollup, by :func:`micros` for tags; the two may differ on an
exact half microsecond), so the same rows always give the same sums, in any order.

Reconciliation compares a day's totals per org from the raw ledger with the rollup's: any
difference in requests, tokens or cost is a :class:`Drift` (a row written behind the job's
back, or deleted), and so is a latency histogram that does not count every request
(measure ``latency_requests``).

Pure: storage reads and writes the rows (``storage.rollups``), the app schedules the job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

HOUR = timedelta(hours=1)
DIMENSIONS = ("org_id", "project_id", "key_id", "end_user", "provider", "model", "status")
# What reconciliation compares: the measures a bill is made of, and what the response cache
# saved.
CHECKED = (
    "requests", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
    "reasoning_tokens", "cost_usd", "saved_usd",
)  # fmt: skip
_ZERO = Decimal(0)
LATENCY_REQUESTS = "latency_requests"  # the drift of a latency histogram's request count
# The daily slices (storage: rollup_slices_daily): (slice name, its org column, its value
# column); None is "" in the table. What most queries read instead of the full cube.
OTHER_DIMENSIONS = DIMENSIONS[1:]
SLICES: tuple[tuple[str, str | None, str | None], ...] = (
    ("total", None, None),
    ("org", "org_id", None),
    *((d, "org_id", d) for d in OTHER_DIMENSIONS),
    *((f"all:{d}", None, d) for d in OTHER_DIMENSIONS),
)


@dataclasses.dataclass(slots=True)
class Totals:
    """The measures of one rollup row (or of any set of ledger rows)."""

    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = _ZERO
    # Prompt cache savings: what the provider's cached input tokens saved. 0: not computed yet.
    cache_savings_usd: Decimal = _ZERO
    # Response cache savings: what the calls answered from the gateway's response cache would
    # have cost (the ledger's saved_usd, only ever non-zero on rows of status "cached").
    saved_usd: Decimal = _ZERO
    latency_us: int = 0
    ttft_us: int = 0
    ttft_count: int = 0

    def add(self, other: Totals) -> None:
        for field in _FIELDS:
            setattr(self, field, getattr(self, field) + getattr(other, field))

    def as_dict(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in _FIELDS}

    @classmethod
    def of(cls, values: Mapping[Any, Any]) -> Totals:
        """Totals from a rollup row's measures (money as Decimal, the rest as integers);
        a measure the row lacks stays 0."""
        out = cls()
        # Over the row's own items: a lookup of a key a SQLAlchemy row lacks raises inside
        # (tens of µs a row). An aggregate over no rows sums to NULL: left 0.
        for f, value in values.items():
            if value and f in _FIELD_SET:
                setattr(out, f, Decimal(value) if f in _MONEY else int(value))
        return out


_FIELDS = tuple(f.name for f in dataclasses.fields(Totals))
_FIELD_SET = frozenset(_FIELDS)
_MONEY = frozenset({"cost_usd", "cache_savings_usd", "saved_usd"})
MEASURES = _FIELDS
MONEY_MEASURES = _MONEY


def micros(ms: float | None) -> int:
    """A latency in milliseconds as whole microseconds (what rollups sum)."""
    return 0 if ms is None else round(ms * 1000)


def row_totals(row: Mapping[Any, Any]) -> Totals:
    """One ledger row's measures (``row`` has the ledger's columns)."""
    ttft = row["ttft_ms"]
    return Totals(
        requests=1,
        input_tokens=int(row["input_tokens"]),
        cached_input_tokens=int(row["cached_input_tokens"]),
        cache_write_tokens=int(row["cache_write_tokens"]),
        output_tokens=int(row["output_tokens"]),
        reasoning_tokens=int(row["reasoning_tokens"]),
        cost_usd=Decimal(row["cost_usd"]),
        saved_usd=Decimal(row["saved_usd"]),
        latency_us=micros(row["latency_ms"]),
        ttft_us=micros(ttft),
        ttft_count=0 if ttft is None else 1,
    )


def hour_of(ts: datetime) -> datetime:
    """The UTC hour ``ts`` falls in (its start)."""
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_of(ts: datetime) -> str:
    """The UTC day ``ts`` falls in, as the ledger's ``day`` column writes it."""
    return ts.astimezone(UTC).strftime("%Y-%m-%d")


def day_start(day: str) -> datetime:
    return datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)


def hours_of_day(day: str) -> list[datetime]:
    start = day_start(day)
    return [start + i * HOUR for i in range(24)]


def tags_of(text: str | None) -> list[str]:
    """A ledger row's tags (a compact JSON object) as ``name=value`` strings."""
    if not text or text == "{}":
        return []
    data = orjson.loads(text)
    return [f"{name}={value}" for name, value in sorted(data.items())]


def tag_rollup(rows: Iterable[Mapping[Any, Any]]) -> dict[tuple[str, str], Totals]:
    """(org id, tag) -> totals of the rows carrying that tag (a row counts once per tag)."""
    out: dict[tuple[str, str], Totals] = {}
    for row in rows:
        tags = tags_of(row["tags"])
        if not tags:
            continue
        totals = row_totals(row)
        org = row["org_id"] or ""
        for tag in tags:
            found = out.get((org, tag))
            if found is None:
                out[(org, tag)] = found = Totals()
            found.add(totals)
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class Drift:
    """A day and org whose rollup differs from the raw ledger in ``measure``."""

    day: str
    org_id: str
    measure: str
    ledger: str
    rollup: str


def drifts(
    day: str,
    ledger: Mapping[str, Totals],
    rollup: Mapping[str, Totals],
    *,
    latency: Mapping[str, int] | None = None,
) -> list[Drift]:
    """Where a day's rollup totals per org differ from the ledger's (empty: they agree);
    ``latency``: the requests the day's latency histogram counts per org, if checked."""
    out: list[Drift] = []
    empty = Totals()
    for org in sorted(set(ledger) | set(rollup) | set(latency or ())):
        raw, rolled = ledger.get(org, empty), rollup.get(org, empty)
        for measure in CHECKED:
            a, b = getattr(raw, measure), getattr(rolled, measure)
            if a != b:
                out.append(Drift(day, org, measure, str(a), str(b)))
        counted = None if latency is None else latency.get(org, 0)
        if counted is not None and counted != raw.requests:
            out.append(Drift(day, org, LATENCY_REQUESTS, str(raw.requests), str(counted)))
    return out
