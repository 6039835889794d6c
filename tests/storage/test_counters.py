"""Ledger aggregates for budget counters: exact nano-dollar sums, on both backends."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.budgets.limits import METRICS, Limit
from costwarden.budgets.policy import checks_for
from costwarden.budgets.rebuild import compute_seeds
from costwarden.core.errors import InvalidInput
from costwarden.core.money import usd_to_nanos
from costwarden.core.records import LEDGER_STATUSES, LedgerRecord
from costwarden.storage.counters import (
    ADMITTED_STATUSES,
    LedgerAggregates,
    ledger_buckets,
    ledger_totals,
)
from costwarden.storage.db import NanoSum, nanos_sum
from costwarden.storage.ledger_rows import record_to_row
from costwarden.storage.schema import ledger

MakeRecord = Callable[..., LedgerRecord]

T0 = datetime(2024, 11, 21, 12, 0, tzinfo=UTC)
A, B = "org_aaaaaaaaaaaa", "org_bbbbbbbbbbbb"
BIG = 1_250_000_000  # $1.25


def _insert(engine: Engine, records: list[LedgerRecord]) -> None:
    with engine.begin() as conn:
        conn.execute(ledger.insert(), [record_to_row(r) for r in records])


@pytest.fixture
def seeded(engine: Engine, make_record: MakeRecord) -> Engine:
    """Hand-made rows; the expected sums below are computed by hand from them."""
    records = [
        # r1: $1e-12 rounds up to 1 nano
        make_record(
            ts=T0,
            org_id=A,
            project_id="p1",
            key_id="k1",
            end_user="u1",
            session_id="s1",
            tags={"team": "search", "env": "prod"},
            cost_usd=Decimal("0.000000000001"),
            input_tokens=10,
            output_tokens=5,
            status="success",
        ),
        # r2: exactly 1 nano
        make_record(
            ts=T0 + timedelta(seconds=30),
            org_id=A,
            project_id="p1",
            key_id="k2",
            tags={"team": "search"},
            cost_usd=Decimal("0.000000001"),
            input_tokens=100,
            output_tokens=0,
            status="upstream_error",
        ),
        # r3: 1.5 nano rounds up to 2
        make_record(
            ts=T0 + timedelta(seconds=90),
            org_id=A,
            key_id="k1",
            end_user="u1",
            cost_usd=Decimal("0.0000000015"),
            input_tokens=1,
            output_tokens=1,
            status="cancelled",
        ),
        # r4: another org, same end user name
        make_record(
            ts=T0 + timedelta(hours=1),
            org_id=B,
            project_id="p2",
            key_id="k3",
            end_user="u1",
            tags={"team": "search"},
            cost_usd=Decimal("1.25"),
            input_tokens=7,
            output_tokens=3,
            status="gateway_error",
        ),
        # r5: a day earlier, no org (counts for the platform only)
        make_record(
            ts=T0 - timedelta(days=1),
            org_id=None,
            key_id=None,
            cost_usd=Decimal("0.0000000005"),
            input_tokens=0,
            output_tokens=0,
            status="success",
        ),
    ]
    # response-cache hits never count: charged to no budget, $0 but with tokens
    for i in range(2):
        records.append(
            make_record(
                ts=T0 + timedelta(seconds=20 + i),
                org_id=A,
                project_id="p1",
                key_id="k1",
                end_user="u1",
                session_id="s1",
                tags={"team": "search"},
                cost_usd=Decimal(0),
                saved_usd=Decimal("0.75"),
                input_tokens=500,
                output_tokens=200,
                status="cached",
            )
        )
    # refused requests never count
    for status in ("blocked", "client_error", "auth_error"):
        records.append(
            make_record(
                ts=T0 + timedelta(seconds=10),
                org_id=A,
                project_id="p1",
                key_id="k1",
                end_user="u1",
                session_id="s1",
                tags={"team": "search"},
                cost_usd=Decimal(5),
                input_tokens=1000,
                output_tokens=1000,
                status=status,
            )
        )
    _insert(engine, records)
    return engine


def test_admitted_statuses_are_ledger_statuses() -> None:
    assert set(ADMITTED_STATUSES) <= set(LEDGER_STATUSES)
    assert {"blocked", "client_error", "auth_error", "cached"}.isdisjoint(ADMITTED_STATUSES)


@pytest.mark.parametrize("window", ["day", "lifetime", "hour", "24h"])
def test_rebuilt_counters_leave_response_cache_hits_out(
    engine: Engine, make_record: MakeRecord, window: str
) -> None:
    """A cache hit is answered with no reservation and charged to no budget: a counter
    rebuilt from the ledger (budgets.rebuild over LedgerAggregates) counts neither its
    dollars, its tokens nor the request, calendar and rolling windows alike."""
    now = T0 + timedelta(minutes=10)
    hit = {"org_id": A, "key_id": "k1", "status": "cached", "cost_usd": Decimal(0),
           "saved_usd": Decimal("0.75"), "input_tokens": 500, "output_tokens": 200}  # fmt: skip
    _insert(engine, [
        make_record(ts=T0, org_id=A, key_id="k1", status="success", input_tokens=10,
                    output_tokens=5, cost_usd=Decimal("0.0000000015")),
        *(make_record(ts=T0 + timedelta(seconds=s), **hit) for s in (1, 2, 3)),
    ])  # fmt: skip
    tz = ZoneInfo("UTC")
    families = {(A, scope, metric, window) for scope in ("org", "key") for metric in METRICS}
    seeds = compute_seeds(LedgerAggregates(engine), families, now.timestamp(), tz)[A].seeds
    want = {"usd": 2, "tokens": 15, "requests": 1}  # the success alone
    for scope, subject in (("org", A), ("key", "k1")):
        for metric in METRICS:
            limit = Limit(scope, subject, A, metric, window, 0)
            (check,) = checks_for([limit], now.timestamp(), tz)
            seed = seeds[check.key]
            got = sum(seed.values()) if isinstance(seed, dict) else seed
            assert got == want[metric], (scope, metric)


def test_totals_per_scope(seeded: Engine) -> None:
    engine = seeded
    assert ledger_totals(engine, scope="platform", since=None) == {
        ("", ""): (1 + 1 + 2 + BIG + 1, 15 + 100 + 2 + 10, 5)
    }
    assert ledger_totals(engine, scope="org", since=None) == {
        (A, A): (4, 117, 3),
        (B, B): (BIG, 10, 1),
    }
    assert ledger_totals(engine, scope="project", since=None) == {
        (A, "p1"): (2, 115, 2),
        (B, "p2"): (BIG, 10, 1),
    }
    assert ledger_totals(engine, scope="key", since=None) == {
        (A, "k1"): (3, 17, 2),
        (A, "k2"): (1, 100, 1),
        (B, "k3"): (BIG, 10, 1),
    }
    assert ledger_totals(engine, scope="user", since=None) == {
        (A, "u1"): (3, 17, 2),
        (B, "u1"): (BIG, 10, 1),
    }
    assert ledger_totals(engine, scope="session", since=None) == {(A, "s1"): (1, 15, 1)}
    assert ledger_totals(engine, scope="tag", since=None) == {
        (A, "team=search"): (2, 115, 2),
        (A, "env=prod"): (1, 15, 1),
        (B, "team=search"): (BIG, 10, 1),
    }


def test_totals_filters(seeded: Engine) -> None:
    engine = seeded
    assert ledger_totals(engine, scope="platform", since=T0) == {
        ("", ""): (1 + 1 + 2 + BIG, 127, 4)
    }
    assert ledger_totals(engine, scope="platform", since=T0, org_id=A) == {("", ""): (4, 117, 3)}
    assert ledger_totals(engine, scope="key", since=None, org_id=A) == {
        (A, "k1"): (3, 17, 2),
        (A, "k2"): (1, 100, 1),
    }
    assert ledger_totals(engine, scope="key", since=T0 + timedelta(seconds=60)) == {
        (A, "k1"): (2, 2, 1),
        (B, "k3"): (BIG, 10, 1),
    }
    # since is inclusive
    assert ledger_totals(engine, scope="session", since=T0) == {(A, "s1"): (1, 15, 1)}
    assert ledger_totals(engine, scope="session", since=T0 + timedelta(microseconds=1)) == {}
    assert ledger_totals(engine, scope="tag", since=None, org_id=B) == {
        (B, "team=search"): (BIG, 10, 1)
    }
    assert ledger_totals(engine, scope="org", since=None, org_id="org_nobody") == {}
    assert ledger_totals(engine, scope="platform", since=T0 + timedelta(days=9)) == {}


def test_totals_on_empty_ledger(engine: Engine) -> None:
    for scope in ("platform", "org", "tag"):
        assert ledger_totals(engine, scope=scope, since=None) == {}
        assert ledger_buckets(engine, scope=scope, since=T0, bucket_seconds=60) == {}


def test_buckets(seeded: Engine) -> None:
    engine = seeded
    b0 = int(T0.timestamp()) // 60
    since = T0 - timedelta(days=2)
    assert ledger_buckets(engine, scope="key", since=since, bucket_seconds=60) == {
        (A, "k1"): {b0: (1, 15, 1), b0 + 1: (2, 2, 1)},
        (A, "k2"): {b0: (1, 100, 1)},
        (B, "k3"): {b0 + 60: (BIG, 10, 1)},
    }
    assert ledger_buckets(engine, scope="platform", since=since, bucket_seconds=60) == {
        ("", ""): {
            b0 - 24 * 60: (1, 0, 1),
            b0: (2, 115, 2),
            b0 + 1: (2, 2, 1),
            b0 + 60: (BIG, 10, 1),
        }
    }
    h0 = int(T0.timestamp()) // 3600
    assert ledger_buckets(engine, scope="tag", since=since, bucket_seconds=3600) == {
        (A, "team=search"): {h0: (2, 115, 2)},
        (A, "env=prod"): {h0: (1, 15, 1)},
        (B, "team=search"): {h0 + 1: (BIG, 10, 1)},
    }
    assert ledger_buckets(engine, scope="org", since=T0, bucket_seconds=86400, org_id=A) == {
        (A, A): {int(T0.timestamp()) // 86400: (4, 117, 3)}
    }
    assert ledger_buckets(
        engine, scope="project", since=T0 + timedelta(seconds=1), bucket_seconds=60
    ) == {(A, "p1"): {b0: (1, 100, 1)}, (B, "p2"): {b0 + 60: (BIG, 10, 1)}}
    assert ledger_buckets(engine, scope="user", since=since, bucket_seconds=60, org_id=B) == {
        (B, "u1"): {b0 + 60: (BIG, 10, 1)}
    }
    assert ledger_buckets(engine, scope="session", since=since, bucket_seconds=60) == {
        (A, "s1"): {b0: (1, 15, 1)}
    }


def test_bucket_boundaries_are_exact(engine: Engine, make_record: MakeRecord) -> None:
    edge = T0 + timedelta(minutes=5)
    _insert(
        engine,
        [
            make_record(ts=edge - timedelta(microseconds=1), org_id=A, key_id="k", cost_usd=0),
            make_record(ts=edge, org_id=A, key_id="k", cost_usd=0),
        ],
    )
    b = int(edge.timestamp()) // 60
    got = ledger_buckets(engine, scope="key", since=T0, bucket_seconds=60)
    assert {bucket: v[2] for bucket, v in got[(A, "k")].items()} == {b - 1: 1, b: 1}


def test_sums_match_python_exactly(engine: Engine, make_record: MakeRecord) -> None:
    """Many rows with awkward costs: the SQL sum equals the per-row rounded-up Python sum."""
    rng = random.Random(11)
    records = [
        make_record(
            ts=T0 + timedelta(seconds=rng.randint(0, 7200)),
            org_id=rng.choice([A, B]),
            key_id=rng.choice(["k1", "k2"]),
            cost_usd=Decimal(rng.choice([0, 1, rng.randint(0, 10**13)])).scaleb(-12),
            input_tokens=rng.randint(0, 10**6),
            output_tokens=rng.randint(0, 10**5),
            status=rng.choice(LEDGER_STATUSES),
        )
        for _ in range(500)
    ]
    _insert(engine, records)
    expected: dict[tuple[str, str], list[int]] = {}
    per_bucket: dict[tuple[str, str], dict[int, list[int]]] = {}
    for r in records:
        if r.status not in ADMITTED_STATUSES:
            continue
        assert r.org_id is not None and r.key_id is not None
        nanos = math.ceil(r.cost_usd * 10**9)
        for into in (
            expected.setdefault((r.org_id, r.key_id), [0, 0, 0]),
            per_bucket.setdefault((r.org_id, r.key_id), {}).setdefault(
                int(r.ts.timestamp()) // 600, [0, 0, 0]
            ),
        ):
            into[0] += nanos
            into[1] += r.input_tokens + r.output_tokens
            into[2] += 1
    got = ledger_totals(engine, scope="key", since=None)
    assert got == {k: tuple(v) for k, v in expected.items()}
    buckets = ledger_buckets(engine, scope="key", since=T0, bucket_seconds=600)
    assert buckets == {k: {b: tuple(v) for b, v in bs.items()} for k, bs in per_bucket.items()}


def test_tiny_costs_round_up_per_row(engine: Engine, make_record: MakeRecord) -> None:
    """1000 rows of $1e-12: $1e-9 in all, but 1000 nanos as counted request by request."""
    _insert(
        engine,
        [
            make_record(org_id=A, key_id="k", cost_usd=Decimal("0.000000000001"))
            for _ in range(1000)
        ],
    )
    assert ledger_totals(engine, scope="key", since=None)[(A, "k")][0] == 1000
    with engine.connect() as conn:
        total = conn.execute(sa.select(nanos_sum(ledger.c.cost_usd))).scalar_one()
    assert total == 1000 and isinstance(total, int)


def test_nanos_sum_of_no_rows_is_null(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(sa.select(nanos_sum(ledger.c.cost_usd))).scalar_one() is None


@pytest.mark.parametrize(
    ("cost", "nanos"),
    [
        ("0", 0),
        ("0.000000000001", 1),
        ("0.000000001", 1),
        ("0.000000001000000000000001", 2),
        ("1.25", BIG),
        ("123456789012.000000000001", 123456789012 * 10**9 + 1),
        ("-0.0000000015", -1),
    ],
)
def test_usd_to_nanos(cost: str, nanos: int) -> None:
    assert usd_to_nanos(Decimal(cost)) == nanos


def test_nanosum_aggregate() -> None:
    agg = NanoSum()
    assert agg.finalize() is None
    for value in (None, "0.000000000001", b"0.0000000015", 3, "1.25"):
        agg.step(value)
    assert agg.finalize() == 1 + 2 + 3 * 10**9 + BIG
    for bad in (0.5, "abc", "NaN", [1]):
        with pytest.raises(ValueError):
            NanoSum().step(bad)


def test_bad_arguments(engine: Engine) -> None:
    with pytest.raises(InvalidInput):
        ledger_totals(engine, scope="team", since=None)
    with pytest.raises(InvalidInput):
        ledger_totals(engine, scope="org", since=datetime(2024, 1, 1))
    with pytest.raises(InvalidInput):
        ledger_buckets(engine, scope="key", since=T0, bucket_seconds=0)
    with pytest.raises(InvalidInput):
        ledger_buckets(engine, scope="team", since=T0, bucket_seconds=60)
