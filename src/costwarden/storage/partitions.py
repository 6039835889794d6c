"""The ledger's monthly partitions (PostgreSQL) and the raw-ledger retention cutoff, as data.

Request ids are ``req_`` + 12 hex digits of epoch milliseconds + 12 random hex digits
(``gateway.proxy.new_request_id``), so they sort by time, and the ids of one UTC month are
the range [``req_<ms of its start>``, ``req_<ms of the next month's start>``). On PostgreSQL
the ledger is partitioned by that range (``PARTITION BY RANGE (request_id)``, migration 0009):
the primary key stays ``request_id`` alone, so the ledger's ``INSERT ... ON CONFLICT
(request_id) DO NOTHING`` stays idempotent (partitioning by ``ts`` would make the key
``(request_id, ts)``), and retention drops a month's partition instead of deleting its rows.
An id of any other shape, or of a month with no partition, lands in the DEFAULT partition
``ledger_default``.

Pure: ``storage.retention`` and the migration run the SQL.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

PARTITION_PREFIX = "ledger_p"
DEFAULT_PARTITION = "ledger_default"
# Months kept ahead by ensure_partitions: the current one and the next two, so a month's
# partition exists long before its first row (a row with no partition goes to the default).
MONTHS_AHEAD = 3
_NAME = re.compile(r"ledger_p(\d{4})(\d{2})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class Month:
    """A UTC calendar month: its partition's name and request-id bounds."""

    year: int
    month: int

    @property
    def name(self) -> str:
        return f"{PARTITION_PREFIX}{self.year:04d}{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.next().start

    @property
    def lower(self) -> str:
        """The first request id of the month (inclusive bound)."""
        return id_bound(self.start)

    @property
    def upper(self) -> str:
        """The first request id of the next month (exclusive bound)."""
        return id_bound(self.end)

    def next(self) -> Month:
        if self.month == 12:
            return Month(self.year + 1, 1)
        return Month(self.year, self.month + 1)

    def create_sql(self) -> str:
        """The DDL of this month's partition (bounds are our own hex: safe as literals)."""
        return (
            f"CREATE TABLE {self.name} PARTITION OF ledger "
            f"FOR VALUES FROM ('{self.lower}') TO ('{self.upper}')"
        )


def epoch_ms(at: datetime) -> int:
    # Integer arithmetic on the timedelta: a float timestamp could round a bound by 1 ms.
    delta = at.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def id_bound(at: datetime) -> str:
    """The smallest request id made at ``at`` or later (ids sort by their time)."""
    return f"req_{epoch_ms(at):012x}"


def month_of(at: datetime) -> Month:
    at = at.astimezone(UTC)
    return Month(at.year, at.month)


def months_between(first: datetime, last: datetime) -> list[Month]:
    """Every month from the one ``first`` falls in to the one ``last`` falls in."""
    month, end = month_of(first), month_of(last)
    out: list[Month] = []
    while month <= end:
        out.append(month)
        month = month.next()
    return out


def months_ahead(now: datetime, count: int = MONTHS_AHEAD) -> list[Month]:
    """The month of ``now`` and the ``count - 1`` after it."""
    out = [month_of(now)]
    while len(out) < count:
        out.append(out[-1].next())
    return out


def month_named(name: str) -> Month | None:
    """The month of a partition name (``ledger_p202611``), None for any other name."""
    found = _NAME.fullmatch(name)
    if found is None or not 1 <= int(found.group(2)) <= 12:
        return None
    return Month(int(found.group(1)), int(found.group(2)))


def is_partition(name: str) -> bool:
    """Whether ``name`` is one of the ledger's partitions (not a table of the schema)."""
    return name == DEFAULT_PARTITION or month_named(name) is not None


def wholly_before(names: Iterable[str], cutoff: datetime) -> list[Month]:
    """The month partitions among ``names`` whose whole id range lies before ``cutoff``,
    oldest first. A month partly after the cutoff stays (until it is wholly before a later
    cutoff), so raw rows are kept at least the retention, and up to a month longer."""
    months = (month_named(n) for n in names)
    return sorted(m for m in months if m is not None and m.end <= cutoff)


def prune_cutoff(now: datetime, keep_days: int, rolled_up_ms: int | None) -> datetime | None:
    """Before when raw rows may go: ``now - keep_days``, but never past what the rollup job
    has rolled up (``rolled_up_ms``, its watermark), floored to a UTC day so that every
    day, and every hour, is either wholly before the cutoff or wholly after it. None when
    nothing may go: retention off (0 days), or nothing rolled up yet."""
    if keep_days <= 0 or rolled_up_ms is None:
        return None
    rolled = _EPOCH + timedelta(milliseconds=rolled_up_ms)
    cutoff = min(now.astimezone(UTC) - timedelta(days=keep_days), rolled)
    return cutoff.replace(hour=0, minute=0, second=0, microsecond=0)
