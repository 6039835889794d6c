"""The ledger reads of the watch's alert rules, on SQLite and PostgreSQL: every org's use per
clock hour (spikes), each provider's requests and failures per minute (error rates), and the
alerts of a rule that are open or recent."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy.engine import Engine

from costwarden.alerts.rules import AlertDraft, error_rate_alert
from costwarden.core.money import ledger_nanos
from costwarden.core.records import LedgerRecord
from costwarden.storage import alerts as store
from costwarden.storage.ledger_rows import record_to_row
from costwarden.storage.outcomes import provider_minutes
from costwarden.storage.schema import ledger
from costwarden.storage.spend import hourly_usage, usage_buckets

MakeRecord = Callable[..., LedgerRecord]
H = 1_900_000_800  # 2030-03-17 18:00 UTC
DAY = 86_400


def _insert(engine: Engine, records: list[LedgerRecord]) -> None:
    with engine.begin() as conn:
        conn.execute(ledger.insert(), [record_to_row(r) for r in records])


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def test_hourly_usage_sums_each_org_and_asked_hour(engine: Engine, make_record: MakeRecord) -> None:
    rng = random.Random(7)
    hours = [H, H - DAY, H - 2 * DAY]
    records: list[LedgerRecord] = []
    expected_usd: Counter[tuple[str, int]] = Counter()
    expected_tokens: Counter[tuple[str, int]] = Counter()
    for _ in range(120):
        org = rng.choice(["org_a", "org_b", None])
        # Inside an asked hour (its first and last microsecond included), or just outside.
        base = rng.choice([*hours, H - DAY // 2, H + 3600])
        offset = rng.choice([0, 1, 1800, 3599.999999, rng.uniform(0, 3600)])
        cost = Decimal(rng.randint(1, 10**9)) / Decimal(10**12)
        r = make_record(org_id=org, ts=_at(base + offset), cost_usd=cost)
        records.append(r)
        if org is not None and base in hours:
            expected_usd[(org, base)] += ledger_nanos(r.cost_usd)
            expected_tokens[(org, base)] += r.input_tokens + r.output_tokens
    # The first instant after an hour belongs to the next one.
    records.append(make_record(org_id="org_a", ts=_at(H + 3600), cost_usd=Decimal(5)))
    # A response-cache hit is no use to call a spike (charged to no budget): its tokens too.
    records.append(
        make_record(org_id="org_a", ts=_at(H + 60), status="cached", cost_usd=Decimal(0),
                    saved_usd=Decimal(3), input_tokens=10**6)
    )  # fmt: skip
    _insert(engine, records)
    got = hourly_usage(engine, hours)
    assert {(u.org_id, u.hour): u.usd_nanos for u in got} == dict(expected_usd)
    assert {(u.org_id, u.hour): u.tokens for u in got} == dict(expected_tokens)
    assert got == sorted(got, key=lambda u: (u.org_id, u.hour))
    assert hourly_usage(engine, []) == []


def test_provider_minutes_count_requests_and_upstream_failures(
    engine: Engine, make_record: MakeRecord
) -> None:
    first = H  # a multiple of 60
    rows = [
        # (minute, provider, status, http_status)
        (0, "openai", "success", 200),
        (0, "openai", "upstream_error", 502),
        (0, "openai", "upstream_error", 429),  # rate limited upstream: counts
        (0, "openai", "upstream_error", 400),  # the client's own error, relayed: does not
        (0, "anthropic", "success", 200),
        (2, "openai", "upstream_error", 504),
        (2, "openai", "cancelled", 499),
        (2, None, "degraded", 200),  # no provider: not counted for any
        (0, "openai", "cached", 200),  # a response-cache hit: no request to the provider
        (2, "anthropic", "cached", 200),
        (3, "openai", "success", 200),  # outside the 3 minutes asked
        (-1, "openai", "upstream_error", 502),  # before them
    ]
    records = [
        make_record(
            ts=_at(first + m * 60 + (i % 50)),
            provider=p,
            status=s,
            http_status=code,
        )  # fmt: skip
        for i, (m, p, s, code) in enumerate(rows)
    ]
    _insert(engine, records)
    got = provider_minutes(engine, first, 3)
    as_tuples = {p: [(m.start, m.requests, m.failures) for m in ms] for p, ms in got.items()}
    assert as_tuples == {
        "anthropic": [(first, 1, 0)],
        "openai": [(first, 4, 2), (first + 120, 2, 1)],
    }


def test_forecast_buckets_leave_response_cache_hits_out(
    engine: Engine, make_record: MakeRecord
) -> None:
    since = _at(H)
    _insert(engine, [
        make_record(org_id="org_a", ts=_at(H + 10), cost_usd=Decimal("0.000000002"),
                    input_tokens=3, output_tokens=4),
        make_record(org_id="org_a", ts=_at(H + 20), status="cached", cost_usd=Decimal(0),
                    saved_usd=Decimal(1), input_tokens=1000, output_tokens=1000),
    ])  # fmt: skip
    assert usage_buckets(engine, "org_a", "usd", since, 60) == [(float(H), 2)]
    assert usage_buckets(engine, "org_a", "tokens", since, 60) == [(float(H), 7)]


def test_recent_alerts_are_the_open_and_the_newly_fired(engine: Engine) -> None:
    t0 = _at(H)

    def draft(provider: str, start: int) -> AlertDraft:
        return error_rate_alert(
            provider=provider, episode_start=start, pct=20, minutes=5, requests=10,
            failures=5, reason="r",
        )  # fmt: skip

    old_open = store.raise_alert(engine, draft("openai", H - 7200), now=t0 - timedelta(hours=2))
    old_done = store.raise_alert(engine, draft("azure", H - 7200), now=t0 - timedelta(hours=2))
    new_done = store.raise_alert(engine, draft("azure", H - 60), now=t0 - timedelta(minutes=1))
    assert old_open and old_done and new_done
    store.resolve_cleared(engine, "service-error-rate", "azure", None, reason="x", now=t0)
    got = store.recent_alerts(engine, "service-error-rate", t0 - timedelta(minutes=15))
    assert sorted(a.id for a in got) == sorted([old_open.id, new_done.id])
    assert store.recent_alerts(engine, "spend-spike", t0 - timedelta(days=1)) == []
