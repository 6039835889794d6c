"""Analytics reads on SQLite and PostgreSQL: every answer, grouped, bucketed, filtered or
confined to one org, equals what the raw ledger's rows add up to, whether its range is read
from the daily rollup, the hourly one or the ledger itself."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from costwarden.analytics.overview import CacheCounts
from costwarden.analytics.query import SpendQuery
from costwarden.analytics.rollup import Totals, day_of, hour_of, row_totals, tags_of
from costwarden.core.records import LedgerRecord
from costwarden.storage import analytics_top
from costwarden.storage.analytics_read import (
    cache_counts,
    cost_by,
    requests_by,
    rolled_until,
    slice_for,
    spend,
)
from costwarden.storage.analytics_top import top
from costwarden.storage.db import create_engine_for
from costwarden.storage.ledger import LedgerWriter
from costwarden.storage.rollups import roll_up
from costwarden.storage.schema import ledger
from tests.storage.conftest import BACKENDS, ledger_row, migrated_db_url, random_record


@dataclasses.dataclass
class Written:
    records: list[LedgerRecord]
    base: datetime  # three days back, on a whole hour
    now: datetime


def _expected(records: list[LedgerRecord], q: SpendQuery) -> dict[tuple[Any, ...], Totals]:
    out: dict[tuple[Any, ...], Totals] = {}
    for r in records:
        if not q.since <= r.ts < q.until:
            continue
        row = ledger_row(r)
        values = {k: row[k] or "" for k in ("org_id", "project_id", "key_id", "end_user",
                                             "provider", "model", "status")}  # fmt: skip
        if q.tenant is not None and values["org_id"] != q.tenant:
            continue
        bucket = None
        if q.granularity == "hour":
            bucket = hour_of(r.ts).isoformat()
        elif q.granularity == "day":
            bucket = day_of(r.ts)
        tags = tags_of(row["tags"]) if ("tag" in q.by or "tag" in q.filters) else [None]
        for tag in tags:
            values["tag"] = tag or ""
            if any(values[k] != v for k, v in q.filters.items()):
                continue
            key = (bucket, tuple(values[k] for k in q.by))
            out.setdefault(key, Totals()).add(row_totals(row))
    return out


async def _write(
    engine: Engine,
    second: Engine,
    made: Callable[[random.Random, datetime], LedgerRecord] = random_record,
) -> Written:
    """Three days of rows, rolled up; then rows from the hour the watermark is in on, not
    (written by a second engine: another process's writer)."""
    rng = random.Random(31)
    now = datetime.now(UTC)
    base = hour_of(now) - timedelta(days=3)
    span = (now - base).total_seconds()
    rolled = [made(rng, base + timedelta(seconds=rng.uniform(0, span))) for _ in range(500)]
    async with LedgerWriter(engine, flush_interval=0.01) as writer:
        for record in rolled:
            writer.submit(record)
    await asyncio.to_thread(roll_up, engine, lag_ms=0)
    with engine.connect() as conn:
        boundary = rolled_until(conn)
    assert boundary is not None
    now = datetime.now(UTC)
    fresh = [made(rng, boundary + (now - boundary) * rng.random()) for _ in range(40)]
    async with LedgerWriter(second, flush_interval=0.01) as writer:
        for record in fresh:
            writer.submit(record)
    return Written([*rolled, *fresh], base, datetime.now(UTC))


@pytest.fixture
async def written(
    engine: Engine, db_url: str, make_engine: Callable[[str], Engine]
) -> Written:
    """Three days of rows, rolled up; then rows from the hour the watermark is in on, not."""
    return await _write(engine, make_engine(db_url))


def _maybe_a_hit(rng: random.Random, ts: datetime) -> LedgerRecord:
    """A random record, or (one in three) a response-cache hit: $0, what it saved."""
    record = random_record(rng, ts)
    if rng.random() < 1 / 3:
        saved = Decimal(rng.randrange(1, 10**10)).scaleb(-12)
        record = dataclasses.replace(record, status="cached", cost_usd=Decimal(0),
                                     saved_usd=saved)  # fmt: skip
    return record


# Writing and rolling up the rows is most of this module's time: the tests that only read
# them share one database per backend (a test that changes them takes ``written``).


def _written_once(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    made: Callable[[random.Random, datetime], LedgerRecord],
) -> Iterator[tuple[Engine, Written]]:
    url = migrated_db_url(str(request.param), tmp_path_factory, request)
    engine = create_engine_for(url)
    try:
        second = create_engine_for(url)
        try:
            data = asyncio.run(_write(engine, second, made))
        finally:
            second.dispose()
        yield engine, data
    finally:
        engine.dispose()


@pytest.fixture(scope="module", params=BACKENDS)
def written_once(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Engine, Written]]:
    """``written``, in a database of its own, for tests that only read it."""
    yield from _written_once(request, tmp_path_factory, random_record)


@pytest.fixture(scope="module", params=BACKENDS)
def with_hits_once(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Engine, Written]]:
    """As ``written_once``, a third of the rows response-cache hits."""
    yield from _written_once(request, tmp_path_factory, _maybe_a_hit)


QUERIES = [
    {"by": ()},
    {"by": ("org_id",), "granularity": "day"},
    {"by": ("model", "status"), "granularity": "hour", "filters": {"provider": "openai"}},
    {"by": ("tag",)},
    {"by": ("org_id", "tag"), "granularity": "day", "filters": {"tag": "team=ml"}},
    {"by": ("key_id", "end_user"), "tenant": "org_a"},
    {"by": ("project_id",), "tenant": "org_b", "filters": {"org_id": "org_a"}},  # nothing
    {"by": ("provider",), "granularity": "day", "since_h": 5, "until_h": 55.5},
    # Each kind of daily slice: every org by a dimension, one org by one, one org's totals.
    {"by": ("model",)},
    {"by": ("end_user",), "filters": {"org_id": "org_a"}, "granularity": "day"},
    {"by": (), "tenant": "org_b"},
    {"by": ("status",), "filters": {"status": "success"}},
]


@pytest.mark.parametrize("fields", QUERIES)
async def test_every_answer_equals_the_ledger(
    written_once: tuple[Engine, Written], fields: dict[str, Any]
) -> None:
    engine, written = written_once
    fields = dict(fields)
    base = written.base
    since = base + timedelta(hours=fields.pop("since_h", 0))
    until_h = fields.pop("until_h", None)
    until = written.now if until_h is None else base + timedelta(hours=until_h)
    q = SpendQuery(since, until, **fields)
    rows = await asyncio.to_thread(spend, engine, q)
    got = {(r.bucket, r.keys): r.totals for r in rows}
    assert got == _expected(written.records, q)
    if q.by == () and until_h is None and q.tenant is None:
        assert got[(None, ())].requests == len(written.records)


async def test_rolled_hours_read_the_rollups_and_the_rest_the_ledger(
    engine: Engine, written: Written
) -> None:
    """Raw rows deleted behind the job's back: the rolled hours still answer from the
    rollups, the hour the watermark is in from the ledger."""
    with engine.connect() as conn:
        boundary = rolled_until(conn)
    assert boundary is not None
    q = SpendQuery(written.base, written.now)
    (before,) = await asyncio.to_thread(spend, engine, q)
    fresh = [r for r in written.records if r.ts >= boundary]
    assert fresh
    with engine.begin() as conn:
        conn.execute(ledger.delete().where(ledger.c.ts < boundary))  # every rolled row
        conn.execute(ledger.delete().where(ledger.c.request_id == fresh[0].request_id))
    (after,) = await asyncio.to_thread(spend, engine, q)
    assert after.totals.requests == before.totals.requests - 1
    assert after.totals.cost_usd == before.totals.cost_usd - fresh[0].cost_usd


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, ("total", None)),
        ({"by": ("org_id",)}, ("org", None)),
        ({"tenant": "o"}, ("org", None)),
        ({"by": ("model",)}, ("all:model", "model")),
        ({"by": ("model",), "tenant": "o"}, ("model", "model")),
        ({"filters": {"key_id": "k"}, "by": ("org_id",)}, ("key_id", "key_id")),
        ({"by": ("model", "status")}, None),
    ],
)
def test_queries_read_the_narrowest_slice(
    fields: dict[str, Any], expected: tuple[str, str | None] | None
) -> None:
    now = datetime.now(UTC)
    assert slice_for(SpendQuery(hour_of(now), now, **fields)) == expected


async def test_an_empty_ledger_answers_nothing(engine: Engine) -> None:
    now = datetime.now(UTC)
    for by in ((), ("org_id",), ("tag",)):
        q = SpendQuery(hour_of(now) - timedelta(days=2), now, by=by)
        assert await asyncio.to_thread(spend, engine, q) == []
    await asyncio.to_thread(roll_up, engine, lag_ms=0)
    assert await asyncio.to_thread(spend, engine, SpendQuery(hour_of(now), now)) == []


_TOPS = [
    *((by, n, 64) for by in ("org_id", "model", "key_id", "end_user", "tag", "one org")
      for n in (1, 2, 10)),
    # A row or two of each day's list at a time: several rounds before the top is decided.
    ("org_id", 2, 1), ("key_id", 1, 2), ("end_user", 10, 1),
]  # fmt: skip


@pytest.mark.parametrize(("by", "n", "first_read"), _TOPS)
async def test_top_is_the_costliest_n_with_every_measure(
    written_once: tuple[Engine, Written], by: str, n: int, first_read: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every org by a dimension is ranked by reading each day's list costliest first (a
    few rows at a time: ``first_read``, then four times more; undecided after the rounds,
    or with many candidates, by cost alone), the others by summing each group's cost;
    either way the top is the ledger's."""
    engine, written = written_once
    monkeypatch.setattr(analytics_top, "_FIRST_READ", first_read)
    monkeypatch.setattr(analytics_top, "_ROUNDS", 3 if first_read < 64 else 1)
    monkeypatch.setattr(analytics_top, "_SHORT", 0)  # lists however few the groups
    since = written.base + timedelta(hours=5)
    if by == "tag":  # and org_id by a tag filter: both summed from tags
        q = SpendQuery(since, written.now, by=("org_id",), filters={"tag": "team=ml"})
    elif by == "one org":
        q = SpendQuery(since, written.now, by=("model",), tenant="org_a")
    else:
        q = SpendQuery(since, written.now, by=(by,))
    ranked = sorted(
        ((keys, totals) for (_, keys), totals in _expected(written.records, q).items()),
        key=lambda item: (-item[1].cost_usd, item[0]),
    )
    got = await asyncio.to_thread(top, engine, q, n)
    assert [(r.keys, r.totals) for r in got] == ranked[:n]


async def test_top_ranks_costs_doubles_order_the_other_way(
    engine: Engine, make_record: Callable[..., LedgerRecord]
) -> None:
    """key_a: $100,000 in one hour, then 5e-12 in each of two more (as doubles, summed in
    that order: 100000.0, each trillionth lost); key_b: $100,000.000000000008 in one hour
    (the double above 100000.0). Exactly, key_a costs more; as doubles, key_b does. SQLite
    ranks on doubles first: the bound on their error keeps key_a a candidate."""
    hour = hour_of(datetime.now(UTC))
    spent = [
        ("key_a", 3, "100000.000000000000"), ("key_a", 2, "0.000000000005"),
        ("key_a", 1, "0.000000000005"), ("key_b", 3, "100000.000000000008"),
        ("key_c", 2, "1"),
    ]  # fmt: skip
    async with LedgerWriter(engine, flush_interval=0.01) as writer:
        for key, hours_back, cost in spent:
            writer.submit(make_record(
                ts=hour - timedelta(hours=hours_back, minutes=-10), key_id=key,
                cost_usd=Decimal(cost),
            ))  # fmt: skip
    await asyncio.to_thread(roll_up, engine, lag_ms=0)
    q = SpendQuery(hour - timedelta(hours=4), hour, by=("key_id",))
    (first,) = await asyncio.to_thread(top, engine, q, 1)
    assert first.keys == ("key_a",)
    assert first.totals.cost_usd == Decimal("100000.000000000010")
    assert [r.keys for r in await asyncio.to_thread(top, engine, q, 3)] == [
        ("key_a",), ("key_b",), ("key_c",)
    ]


@pytest.mark.parametrize(
    "fields", [f for f in QUERIES if "since_h" not in f and "tag" not in f.get("by", ())]
)
async def test_fewer_measures_and_counts_alone_equal_the_ledger(
    written_once: tuple[Engine, Written], fields: dict[str, Any]
) -> None:
    """``measures`` sums only those (and requests and cost); ``requests_by`` counts only."""
    engine, written = written_once
    q = SpendQuery(written.base, written.now, **fields)
    expected = _expected(written.records, q)
    light = await asyncio.to_thread(spend, engine, q, measures=("output_tokens",))
    assert {(r.bucket, r.keys): r.totals for r in light} == {
        key: Totals(requests=t.requests, cost_usd=t.cost_usd, output_tokens=t.output_tokens)
        for key, t in expected.items()
    }
    counts = await asyncio.to_thread(requests_by, engine, q)
    assert counts == {key: t.requests for key, t in expected.items()}


async def test_counts_and_costs_alone_refuse_tags(engine: Engine) -> None:
    """Tags are summed in Python into every measure: spend() reads them, not these."""
    now = datetime.now(UTC)
    for q in (SpendQuery(hour_of(now), now, by=("tag",)),
              SpendQuery(hour_of(now), now, filters={"tag": "team=ml"})):  # fmt: skip
        for read in (requests_by, cost_by):
            with pytest.raises(ValueError, match="spend"):
                read(engine, q)


async def test_top_of_a_long_tail_is_decided_by_the_lists_alone(
    engine: Engine, make_record: Callable[..., LedgerRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """120 keys, key i costing about 1/(i + 1) of key 0, over four days: the first rows of
    each day's list decide the top 3 (no group's cost summed in full), and it is exact."""

    def refused(*_: object, **__: object) -> set[str]:
        raise AssertionError("ranked on every group's cost: the lists did not decide")

    monkeypatch.setattr(analytics_top, "_by_bounds", refused)
    monkeypatch.setattr(analytics_top, "_FIRST_READ", 16)
    monkeypatch.setattr(analytics_top, "_SHORT", 0)
    rng = random.Random(5)
    now = datetime.now(UTC)
    base = hour_of(now) - timedelta(days=4)
    records = [
        make_record(
            ts=base + timedelta(hours=rng.uniform(0, 95)), key_id=f"key_{i:03d}",
            cost_usd=(Decimal(rng.randrange(900, 1100)) / (i + 1)).quantize(Decimal("1E-12")),
        )
        for i in range(120) for _ in range(4)
    ]  # fmt: skip
    async with LedgerWriter(engine, flush_interval=0.01) as writer:
        for record in records:
            writer.submit(record)
    await asyncio.to_thread(roll_up, engine, lag_ms=0)
    q = SpendQuery(base + timedelta(hours=7), now, by=("key_id",))
    expected: dict[str, Decimal] = {}
    for r in records:
        if q.since <= r.ts:
            expected[str(r.key_id)] = expected.get(str(r.key_id), Decimal(0)) + r.cost_usd
    ranked = sorted(expected.items(), key=lambda item: (-item[1], item[0]))[:3]
    got = await asyncio.to_thread(top, engine, q, 3)
    assert [(r.keys[0], r.totals.cost_usd) for r in got] == ranked


CACHE_QUERIES = [
    {"by": ()},
    {"by": ("org_id",)},
    {"by": ("org_id",), "granularity": "day"},
    {"by": (), "tenant": "org_a"},
    {"by": ("model",), "tenant": "org_b", "granularity": "hour"},
    {"by": ("org_id", "status")},
    {"by": ("key_id", "provider"), "filters": {"org_id": "org_a"}},
    {"by": ("org_id",), "filters": {"status": "cached"}},
]


@pytest.mark.parametrize("fields", CACHE_QUERIES)
async def test_response_cache_counts_and_savings_equal_the_ledger(
    with_hits_once: tuple[Engine, Written], fields: dict[str, Any]
) -> None:
    """Per group: hits (status cached), the requests answered (success + cached), and what
    the hits saved, exactly; one org's (tenant) never holds another's."""
    engine, with_hits = with_hits_once
    q = SpendQuery(with_hits.base, with_hits.now, **fields)
    expected = _expected(with_hits.records, q)
    want: dict[Any, CacheCounts] = {key: CacheCounts() for key in expected}
    for r in with_hits.records:
        if not q.since <= r.ts < q.until or (q.tenant and r.org_id != q.tenant):
            continue
        for key in _keys_of(r, q):
            if key in want:
                want[key].count(r.status, 1)
    got = await asyncio.to_thread(cache_counts, engine, q)
    assert got == want
    assert sum(c.hits for c in got.values()) > 0
    rows = await asyncio.to_thread(spend, engine, q)
    assert {(r.bucket, r.keys): r.totals.saved_usd for r in rows} == {
        key: t.saved_usd for key, t in expected.items()
    }
    if q.tenant is not None:
        mine = [r for r in with_hits.records if q.since <= r.ts < q.until]
        assert sum(c.hits for c in got.values()) == sum(
            r.status == "cached" for r in mine if r.org_id == q.tenant
        ) < sum(r.status == "cached" for r in mine)


def _keys_of(r: LedgerRecord, q: SpendQuery) -> list[tuple[str | None, tuple[str, ...]]]:
    """The (bucket, group) ``r`` counts in for ``q`` (none if a filter leaves it out)."""
    row = ledger_row(r)
    values = {k: row[k] or "" for k in ("org_id", "project_id", "key_id", "end_user",
                                         "provider", "model", "status")}  # fmt: skip
    if any(values[k] != v for k, v in q.filters.items()):
        return []
    bucket = {"hour": hour_of(r.ts).isoformat(), "day": day_of(r.ts)}.get(q.granularity or "")
    return [(bucket, tuple(values[k] for k in q.by))]


async def test_response_cache_counts_of_some_groups_and_not_of_tags(
    with_hits_once: tuple[Engine, Written],
) -> None:
    engine, with_hits = with_hits_once
    q = SpendQuery(with_hits.base, with_hits.now, by=("org_id",))
    every = await asyncio.to_thread(cache_counts, engine, q)
    some = await asyncio.to_thread(cache_counts, engine, q, among=("org_id", {"org_b"}))
    assert some == {(None, ("org_b",)): every[(None, ("org_b",))]}
    with pytest.raises(ValueError, match="spend"):
        cache_counts(engine, SpendQuery(with_hits.base, with_hits.now, by=("tag",)))
