"""Analytics queries as data: what a caller asks for, checked, and where each part is read.

A :class:`SpendQuery` asks for totals over ``[since, until)``, grouped by some dimensions
(org, project, key, end user, provider, model, status; or tag), optionally per UTC hour or
day, with equality filters on any dimension. The org a caller may see is part of the query
(``tenant``), set from who asks, never only from the query string: an org admin's queries are
confined to its org whatever filters it sends.

:func:`plan` splits the range by where it is read: whole UTC days before the rollup's
watermark from the daily rollup, the other hours before it from the hourly rollup, and the
rest (the hour the watermark is in, and after) from the raw ledger, so a query over a year
reads a few hundred rows per group and today's last minutes are still counted. A range
starts on a whole UTC hour; it may end anywhere (now).

Pure: ``storage.analytics_read`` runs the plan.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Literal

from costwarden.analytics.rollup import DIMENSIONS, HOUR, day_of, day_start, hour_of
from costwarden.core.errors import InvalidInput

Granularity = Literal["hour", "day"]
GRANULARITIES: tuple[Granularity, ...] = ("hour", "day")
GROUPS = (*DIMENSIONS, "tag")
MAX_RANGE = timedelta(days=366)
DAY = timedelta(days=1)


@dataclasses.dataclass(frozen=True, slots=True)
class SpendQuery:
    since: datetime
    until: datetime
    by: tuple[str, ...] = ()
    granularity: Granularity | None = None
    filters: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tenant: str | None = None  # the one org the caller may see; None: every org

    def __post_init__(self) -> None:
        check(self)


def check(q: SpendQuery) -> None:
    """InvalidInput, naming what is wrong, for a query that cannot be answered."""
    for when in (q.since, q.until):
        if when.tzinfo is None:
            raise InvalidInput("times must carry a UTC offset (e.g. 2026-11-01T00:00:00Z)")
    if q.since != hour_of(q.since):
        raise InvalidInput("'since' must be a whole UTC hour (or a date)")
    if q.until <= q.since:
        raise InvalidInput("'until' must be after 'since'")
    if q.until - q.since > MAX_RANGE:
        raise InvalidInput(f"a range is at most {MAX_RANGE.days} days")
    for name in q.by:
        if name not in GROUPS:
            raise InvalidInput(f"unknown dimension {name!r} (known: {', '.join(GROUPS)})")
    if len(set(q.by)) != len(q.by):
        raise InvalidInput("a dimension is named twice in 'by'")
    if "tag" in q.by and len(q.by) > 1 and set(q.by) != {"tag", "org_id"}:
        raise InvalidInput("'tag' groups alone or with org_id")
    for name in q.filters:
        if name not in GROUPS:
            raise InvalidInput(f"unknown filter {name!r} (known: {', '.join(GROUPS)})")
    if "tag" in q.filters and (set(q.filters) - {"tag", "org_id"} or _dims_only(q.by)):
        raise InvalidInput("a 'tag' filter goes with org_id filters and 'tag' groups only")
    if q.granularity is not None and q.granularity not in GRANULARITIES:
        raise InvalidInput(f"granularity must be one of {', '.join(GRANULARITIES)}")


def _dims_only(by: tuple[str, ...]) -> bool:
    return bool(by) and "tag" not in by and by != ("org_id",)


def uses_tags(q: SpendQuery) -> bool:
    return "tag" in q.by or "tag" in q.filters


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """Where each part of a query's range is read: whole days (daily rollup), hours (hourly
    rollup), and the rest (the ledger, ``[raw[0], raw[1])``)."""

    days: tuple[str, ...]
    hours: tuple[datetime, ...]
    raw: tuple[datetime, datetime] | None


def plan(q: SpendQuery, rolled_until: datetime | None) -> Plan:
    """Split ``q``'s range at ``rolled_until`` (the start of the hour the rollup's watermark
    is in: everything before it is rolled up): before it from the rollups (whole UTC days
    from the daily one, unless per hour), from there on from the ledger."""
    since, until = q.since.astimezone(UTC), q.until.astimezone(UTC)
    boundary = since if rolled_until is None else max(since, hour_of(rolled_until))
    boundary = min(boundary, hour_of(until))
    days: list[str] = []
    hours: list[datetime] = []
    hour = since
    while hour < boundary:
        if (
            q.granularity != "hour"
            and hour == day_start(day_of(hour))
            and hour + DAY <= boundary
        ):
            days.append(day_of(hour))
            hour += DAY
        else:
            hours.append(hour)
            hour += HOUR
    return Plan(tuple(days), tuple(hours), (boundary, until) if boundary < until else None)


# A time as the API and the CLI take it (the OpenAPI document's pattern is this text):
# a span back from now (24h, 30d), a date, or a date and time with an offset (Z, +02:00).
WHEN = (
    r"^(?:([0-9]{1,4})([hd])|([0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:T([0-9]{2}:[0-9]{2}(?::[0-9]{2})?)(Z|[+-][0-9]{2}:[0-9]{2}))?)$"
)
_WHEN = re.compile(WHEN)
# What the API and the CLI call the dimensions.
NAMES = {
    "org": "org_id", "project": "project_id", "key": "key_id", "user": "end_user",
    "provider": "provider", "model": "model", "status": "status", "tag": "tag",
}  # fmt: skip
BY = "^(?:" + "|".join(NAMES) + ")(?:,(?:" + "|".join(NAMES) + "))*$"


def parse_when(value: str, now: datetime, *, what: str) -> datetime:
    """``24h`` / ``30d`` back from now (from the start of that hour), a date (its midnight,
    UTC) or a date and time with an offset; InvalidInput naming ``what`` otherwise."""
    match = _WHEN.match(value)
    if match is None:
        raise InvalidInput(
            f"{what}: use a span like 24h or 30d, a date (2026-11-01) or a time with an "
            f"offset (2026-11-01T08:00Z), got {value!r}"
        )
    amount, unit, date, clock, offset = match.groups()
    if amount is not None:
        back = timedelta(hours=int(amount)) if unit == "h" else timedelta(days=int(amount))
        return hour_of(now - back)
    try:
        if clock is None:
            return datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC)
        zone = "+00:00" if offset == "Z" else offset
        return datetime.fromisoformat(f"{date}T{clock}{zone}").astimezone(UTC)
    except ValueError:
        raise InvalidInput(f"{what}: not a real date or time: {value!r}") from None


def dimensions(text: str | None) -> tuple[str, ...]:
    """``org,model`` -> the dimensions' column names; InvalidInput for an unknown one."""
    if text is None:
        return ()
    out = []
    for name in text.split(","):
        if name not in NAMES:
            raise InvalidInput(f"unknown dimension {name!r} (known: {', '.join(NAMES)})")
        out.append(NAMES[name])
    return tuple(out)


# ------------------------------------------------------------------ request-log cursors


def cursor_digest(parts: Mapping[str, object]) -> str:
    """A short digest of a request-log query (its filters, range, bounds and tenant): the
    cursor of one query does not fit another."""
    text = "&".join(f"{k}={parts[k]}" for k in sorted(parts))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_cursor(ts: datetime, request_id: str, digest: str) -> str:
    raw = f"{ts.astimezone(UTC).isoformat()}|{request_id}|{digest}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_cursor(cursor: str, digest: str) -> tuple[datetime, str]:
    """The position a cursor holds; InvalidInput for one that is not a cursor of this
    query (another query's, edited, or not a cursor at all)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, request_id, their_digest = raw.split("|")
        ts = datetime.fromisoformat(when)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidInput("cursor: not a cursor this API gave out") from None
    if their_digest != digest or ts.tzinfo is None or not request_id:
        raise InvalidInput("cursor: it belongs to another query (filters or range differ)")
    return ts, request_id
