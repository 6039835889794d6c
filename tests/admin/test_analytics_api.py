"""The analytics admin API: spend by dimension, top spenders and the monthly chargeback CSV
add up to the ledger's rows exactly (CSV = API = ledger for the same month), the overview's
latency percentiles are the histogram estimates of the ledger's rows (within the stated
error of the exact ones), and bad input is a clear 400."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import math
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import httpx
import pytest
import pytest_asyncio

from costwarden.analytics.latency import MAX_RELATIVE_ERROR, histogram, quantile
from costwarden.core.records import LedgerRecord
from costwarden.mock import serve_mock
from costwarden.storage import repo
from costwarden.storage.analytics_read import rolled_until
from costwarden.storage.ledger import LedgerWriter
from costwarden.storage.rollups import roll_up
from tests.admin.conftest import AUTH, TOKEN
from tests.conftest import PROXY_VARIABLES
from tests.helpers import LiveGateway, live_gateway, scratch_pg_database
from tests.storage.conftest import random_record

MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture
async def records(gw: LiveGateway) -> list[LedgerRecord]:
    """October 2026 and the first days of November, for two real orgs, rolled up."""
    engine = gw.app.engine
    ids = [
        (await asyncio.to_thread(repo.ensure_org, engine, name))[0] for name in ("acme", "beta")
    ]
    rng = random.Random(7)
    out = []
    for _ in range(400):
        ts = MONTH_START + timedelta(seconds=rng.uniform(0, 36 * 86400))
        out.append(dataclasses.replace(random_record(rng, ts), org_id=rng.choice(ids)))
    async with LedgerWriter(engine, flush_interval=0.01) as writer:
        for record in out:
            writer.submit(record)
    await asyncio.to_thread(roll_up, engine, lag_ms=0)
    return out


def _in_october(records: list[LedgerRecord]) -> list[LedgerRecord]:
    return [r for r in records if r.ts < datetime(2026, 11, 1, tzinfo=UTC)]


async def test_spend_top_and_chargeback_equal_the_ledger(
    gw: LiveGateway, client: httpx.AsyncClient, records: list[LedgerRecord]
) -> None:
    october = _in_october(records)
    ledger_cost = sum((r.cost_usd for r in october), Decimal(0))
    range_ = {"since": "2026-10-01", "until": "2026-11-01"}
    by_org = await client.get(
        "/admin/analytics/spend", params={**range_, "by": "org", "granularity": "day"},
        headers=AUTH,
    )  # fmt: skip
    assert by_org.status_code == 200, by_org.text
    body = by_org.json()
    assert Decimal(body["totals"]["cost_usd"]) == ledger_cost
    assert body["totals"]["requests"] == len(october)
    assert {row["org_name"] for row in body["data"]} == {"acme", "beta"}
    assert len({row["bucket"] for row in body["data"]}) == 31

    acme = (await asyncio.to_thread(repo.get_org_by_name, gw.app.engine, "acme"))
    assert acme is not None
    only_acme = await client.get(
        "/admin/analytics/spend", params={**range_, "org": "acme", "by": "model"}, headers=AUTH
    )
    acme_cost = sum((r.cost_usd for r in october if r.org_id == acme.id), Decimal(0))
    assert Decimal(only_acme.json()["totals"]["cost_usd"]) == acme_cost

    top = await client.get(
        "/admin/analytics/top", params={**range_, "by": "org", "n": "1"}, headers=AUTH
    )
    (first,) = top.json()["data"]
    per_org: dict[str | None, Decimal] = {}
    for r in october:
        per_org[r.org_id] = per_org.get(r.org_id, Decimal(0)) + r.cost_usd
    leader = max(per_org, key=lambda org: per_org[org])
    assert (first["org"], Decimal(first["cost_usd"])) == (leader, per_org[leader])

    # A month that is over: every day complete, the projection is what was spent.
    projected = await client.get(
        "/admin/analytics/projection", params={"month": "2026-10"}, headers=AUTH
    )
    assert projected.status_code == 200, projected.text
    per_org = {row["org"]: row for row in projected.json()["data"]}
    for org_id, row in per_org.items():
        spent = sum((r.cost_usd for r in october if r.org_id == org_id), Decimal(0))
        assert Decimal(row["spent"]) == spent and row["days_left"] == 0
        assert Decimal(row["projected"]) == spent.quantize(Decimal("0.01"))

    csv_answer = await client.get(
        "/admin/analytics/chargeback.csv", params={"month": "2026-10"}, headers=AUTH
    )
    assert csv_answer.status_code == 200 and csv_answer.headers["content-type"].startswith(
        "text/csv"
    )
    rows = list(csv.DictReader(io.StringIO(csv_answer.text)))
    assert {r["SubAccountName"] for r in rows} == {"acme", "beta"}
    assert sum(Decimal(r["BilledCost"]) for r in rows) == ledger_cost
    assert sum(int(r["x_Requests"]) for r in rows) == len(october)
    by_project = await client.get(
        "/admin/analytics/chargeback.csv", params={"month": "2026-10", "by": "project"},
        headers=AUTH,
    )  # fmt: skip
    projects = list(csv.DictReader(io.StringIO(by_project.text)))
    assert sum(Decimal(r["BilledCost"]) for r in projects) == ledger_cost


# Bad input is refused before anything is read or written: the cases share one gateway per
# backend (its own loop, the module's) instead of starting one, and a database, each.


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db')}/costwarden.db"
        return
    request.getfixturevalue("pg_ready")
    with scratch_pg_database() as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_gw(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveGateway]:
    # The gateway reads the environment when it starts, before the first test's autouse
    # fixture has removed the machine's proxy variables.
    with pytest.MonkeyPatch.context() as env:
        for name in PROXY_VARIABLES:
            env.delenv(name, raising=False)
        async with (
            serve_mock("127.0.0.1", 0) as mock,
            live_gateway(
                mock, module_database_url, tmp_path_factory.mktemp("gw"), admin_token=TOKEN
            ) as gateway,
        ):
            yield gateway


@pytest_asyncio.fixture(loop_scope="module")
async def module_client(module_gw: LiveGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=module_gw.base_url, timeout=30) as c:
        yield c


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("spend", {"by": "colour"}, 400, "unknown dimension 'colour'"),
        ("spend", {"by": "model,model"}, 400, "named twice"),
        ("spend", {"since": "2026-11-02", "until": "2026-11-01"}, 400, "must be after"),
        ("spend", {"since": "3650d"}, 400, "at most 366 days"),
        ("spend", {"since": "yesterday"}, 400, "use a span like 24h"),
        ("spend", {"since": "2026-02-31"}, 400, "not a real date"),
        ("spend", {"since": "2026-11-01T08:30Z"}, 400, "whole UTC hour"),
        ("spend", {"granularity": "week"}, 400, "granularity must be one of"),
        ("spend", {"org": "nope"}, 404, "unknown org"),
        ("top", {"by": "tag"}, 400, "by must be one of"),
        ("top", {"n": "0"}, 400, "n must be a whole number"),
        ("top", {"granularity": "day"}, 400, "no granularity"),
        ("chargeback.csv", {"month": "2026-13"}, 400, "month must be YYYY-MM"),
        ("projection", {"month": "2999-01"}, 400, "has not begun"),
        ("projection", {"month": ""}, 400, "month must be YYYY-MM"),
        ("projection", {"org": "nope"}, 404, "unknown org"),
        ("chargeback.csv", {}, 400, "month must be YYYY-MM"),
        ("chargeback.csv", {"month": "2026-10", "by": "model"}, 400, "by must be one of"),
    ],
)
async def test_bad_input(
    module_client: httpx.AsyncClient, path: str, params: dict[str, str], status: int, message: str
) -> None:
    r = await module_client.get(f"/admin/analytics/{path}", params=params, headers=AUTH)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


@pytest.fixture
async def recent(gw: LiveGateway) -> list[LedgerRecord]:
    """The last 14 days for two real orgs, rolled up."""
    engine = gw.app.engine
    ids = [
        (await asyncio.to_thread(repo.ensure_org, engine, name))[0] for name in ("acme", "beta")
    ]
    rng = random.Random(11)
    now = datetime.now(UTC)
    out = [
        dataclasses.replace(
            random_record(rng, now - timedelta(seconds=rng.uniform(60, 14 * 86400))),
            org_id=rng.choice(ids),
        )
        for _ in range(300)
    ]
    async with LedgerWriter(engine, flush_interval=0.01) as writer:
        for record in out:
            writer.submit(record)
    await asyncio.to_thread(roll_up, engine, lag_ms=0)
    return out


async def test_overview_and_trends_equal_the_ledger(
    client: httpx.AsyncClient, recent: list[LedgerRecord]
) -> None:
    answer = await client.get("/admin/analytics/overview", params={"period": "7d"}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    start = datetime.fromisoformat(body["since"])
    before = start - timedelta(days=7)
    this = [r for r in recent if r.ts >= start]
    prior = [r for r in recent if before <= r.ts < start]
    cost = sum((r.cost_usd for r in this), Decimal(0))
    earlier = sum((r.cost_usd for r in prior), Decimal(0))
    assert body["requests"] == len(this) and Decimal(body["cost_usd"]) == cost
    assert Decimal(body["previous"]["cost_usd"]) == earlier
    assert body["previous"]["requests"] == len(prior)
    assert body["active_orgs"] == len({r.org_id for r in this})
    failed = sum(r.status in ("upstream_error", "degraded", "gateway_error") for r in this)
    rate = (Decimal(failed) / len(this) * 100).quantize(Decimal("0.1"))
    assert Decimal(body["error_rate_pct"]) == rate
    change = ((cost - earlier) / earlier * 100).quantize(Decimal("0.1"))
    assert Decimal(body["cost_change_pct"]) == change
    # Percentiles: the estimate from the raw rows' buckets, close to the exact figure.
    counts = histogram(r.latency_ms for r in this)
    ordered = sorted(r.latency_ms for r in this)
    for p in (50, 95, 99):
        estimate = quantile(counts, p / 100)
        assert estimate is not None and body[f"p{p}_latency_ms"] == round(estimate, 1)
        exact = ordered[math.ceil(Fraction(p, 100) * len(ordered)) - 1]
        assert abs(estimate - exact) / exact <= MAX_RELATIVE_ERROR
    assert body["latency_method"]["avg_latency_ms"] == "exact"
    assert "histograms" in body["latency_method"]["percentiles"]

    trends = await client.get(
        "/admin/analytics/trends", params={"period": "7d", "by": "org"}, headers=AUTH
    )
    rows = trends.json()["data"]
    for row in rows:
        now_cost = sum((r.cost_usd for r in this if r.org_id == row["org"]), Decimal(0))
        was = sum((r.cost_usd for r in prior if r.org_id == row["org"]), Decimal(0))
        assert (Decimal(row["cost_usd"]), Decimal(row["previous_cost_usd"])) == (now_cost, was)
        assert Decimal(row["change_usd"]) == now_cost - was
    moves = [abs(Decimal(row["change_usd"])) for row in rows]
    assert moves == sorted(moves, reverse=True) and len(rows) == 2


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("path", "params"),
    [("overview", {"period": "1y"}), ("trends", {"period": "week"}), ("trends", {"by": "tag"})],
)
async def test_bad_periods(
    module_client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    r = await module_client.get(f"/admin/analytics/{path}", params=params, headers=AUTH)
    assert r.status_code == 400 and "must be one of" in r.json()["error"]["message"]


async def test_a_chargeback_that_fails_after_its_header_is_cut_short_not_ended(
    gw: LiveGateway, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header line goes out before the month is summed; if the sum then fails, the
    response is cut off without its last chunk, so no client takes a header-only file for
    a month without usage."""
    from costwarden.admin import analytics_api
    from costwarden.core.errors import StorageError

    def failing(*_: object, **__: object) -> list[object]:
        raise StorageError("the database went away")

    monkeypatch.setattr(analytics_api, "spend", failing)
    params = {"month": "2026-10"}
    async with client.stream(
        "GET", "/admin/analytics/chargeback.csv", params=params, headers=AUTH
    ) as response:
        assert response.status_code == 200
        chunks = response.aiter_text()
        assert (await anext(chunks)).startswith("BillingPeriodStart,")
        with pytest.raises(httpx.RemoteProtocolError):
            async for _ in chunks:
                pass


# ------------------------------------------------------------------ the response cache

RATE = Decimal("0.0001")
REASON = "cheapest: openai:gpt-4o-mini, at most $0.0012 (skipped openai:gpt-4o: breaker open)"


@pytest.fixture
async def hits(gw: LiveGateway) -> list[LedgerRecord]:
    """Three days of two real orgs' traffic, a third of it response-cache hits (with what
    each saved), rolled up; the last minutes' rows after the watermark, read raw."""
    engine = gw.app.engine
    ids = [
        (await asyncio.to_thread(repo.ensure_org, engine, name))[0] for name in ("acme", "beta")
    ]
    rng = random.Random(16)
    now = datetime.now(UTC)

    def made(ts: datetime) -> LedgerRecord:
        record = dataclasses.replace(
            random_record(rng, ts), org_id=rng.choice(ids), route_reason=REASON
        )
        if rng.random() < 1 / 3:
            saved = Decimal(rng.randrange(1, 10**10)).scaleb(-12)
            record = dataclasses.replace(
                record, status="cached", cost_usd=Decimal(0), saved_usd=saved
            )
        return record

    rolled = [made(now - timedelta(seconds=rng.uniform(600, 3 * 86400))) for _ in range(300)]
    async with LedgerWriter(engine, flush_interval=0.01) as writer:
        for record in rolled:
            writer.submit(record)
    await asyncio.to_thread(roll_up, engine, lag_ms=0)
    with engine.connect() as conn:
        boundary = rolled_until(conn)  # from its hour on, the raw ledger is read
    assert boundary is not None
    now = datetime.now(UTC)
    fresh = [made(boundary + (now - boundary) * rng.random()) for _ in range(30)]
    async with LedgerWriter(engine, flush_interval=0.01) as writer:
        for record in fresh:
            writer.submit(record)
    return [*rolled, *fresh]


def _cache_figures(records: list[LedgerRecord]) -> dict[str, object]:
    """cache_hits, cache_hit_rate and saved_usd as the API must give them for ``records``."""
    hits = sum(r.status == "cached" for r in records)
    answered = sum(r.status in ("success", "cached") for r in records)
    return {
        "cache_hits": hits,
        "cache_hit_rate": str((Decimal(hits) / answered).quantize(RATE)) if answered else None,
        "saved_usd": sum((r.saved_usd for r in records), Decimal(0)),
    }


def _shown(body: dict[str, object]) -> dict[str, object]:
    return {
        "cache_hits": body["cache_hits"],
        "cache_hit_rate": body["cache_hit_rate"],
        "saved_usd": Decimal(str(body["saved_usd"])),
    }


async def test_response_cache_figures_per_org_and_platform_wide(
    gw: LiveGateway, client: httpx.AsyncClient, hits: list[LedgerRecord]
) -> None:
    ids = {name: (await asyncio.to_thread(repo.get_org_by_name, gw.app.engine, name))
           for name in ("acme", "beta")}  # fmt: skip
    per_org = {name: [r for r in hits if org is not None and r.org_id == org.id]
               for name, org in ids.items()}  # fmt: skip
    assert all(_cache_figures(rs)["cache_hits"] for rs in per_org.values())

    by_org = await client.get(
        "/admin/analytics/spend", params={"since": "7d", "by": "org"}, headers=AUTH
    )
    assert by_org.status_code == 200, by_org.text
    body = by_org.json()
    assert {row["org_name"]: _shown(row) for row in body["data"]} == {
        name: _cache_figures(rs) for name, rs in per_org.items()
    }
    assert _shown(body["totals"]) == _cache_figures(hits)
    # The prompt cache's savings are another figure (not computed: 0); cost is unchanged.
    assert body["totals"]["cache_savings_usd"] == "0"
    assert Decimal(body["totals"]["cost_usd"]) == sum((r.cost_usd for r in hits), Decimal(0))

    # One org's figures never hold the other's: filtered by org, or grouped finer.
    for name, records in per_org.items():
        only = await client.get(
            "/admin/analytics/spend", params={"since": "7d", "org": name, "by": "model"},
            headers=AUTH,
        )  # fmt: skip
        assert only.status_code == 200, only.text
        assert _shown(only.json()["totals"]) == _cache_figures(records)
        for row in only.json()["data"]:
            model = [r for r in records if (r.served_model or r.requested_model) == row["model"]]
            assert _shown(row) == _cache_figures(model)
    daily = await client.get(
        "/admin/analytics/spend",
        params={"since": "7d", "by": "org", "granularity": "day"}, headers=AUTH,
    )  # fmt: skip
    days = daily.json()["data"]
    assert sum(row["cache_hits"] for row in days) == _cache_figures(hits)["cache_hits"]
    assert sum(Decimal(row["saved_usd"]) for row in days) == _cache_figures(hits)["saved_usd"]

    top = await client.get(
        "/admin/analytics/top", params={"since": "7d", "by": "org", "n": "2"}, headers=AUTH
    )
    assert {row["org_name"]: _shown(row) for row in top.json()["data"]} == {
        name: _cache_figures(rs) for name, rs in per_org.items()
    }

    tagged = await client.get(
        "/admin/analytics/spend", params={"since": "7d", "by": "tag"}, headers=AUTH
    )
    assert tagged.status_code == 200, tagged.text
    for row in [*tagged.json()["data"], tagged.json()["totals"]]:
        assert (row["cache_hits"], row["cache_hit_rate"]) == (None, None)  # tags: no status
    # The totals of the tag groups: a row counts once per tag it carries.
    assert Decimal(tagged.json()["totals"]["saved_usd"]) == sum(
        (r.saved_usd * len(r.tags) for r in hits), Decimal(0)
    )

    overview = await client.get(
        "/admin/analytics/overview", params={"period": "7d"}, headers=AUTH
    )
    assert overview.status_code == 200, overview.text
    figures = overview.json()
    assert _shown(figures) == _cache_figures(hits)
    pct = Decimal(figures["cache_hits"]) / sum(r.status in ("success", "cached") for r in hits)
    assert figures["cache_hit_rate_pct"] == str((pct * 100).quantize(Decimal("0.1")))
