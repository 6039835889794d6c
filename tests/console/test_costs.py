"""The cost analytics page and its CSV: real requests through the gateway (the openai SDK)
and rows of other days and cache hits, shown exactly as the ledger holds them (today's cost,
the 30 days', the daily chart with its zero days, the cache's hit rate and savings, the top
orgs, the cost per model); an org's admin sees its own org's figures and projects, never
another org's; and the pure helpers."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import openai
import pytest

from costwarden.analytics.overview import CacheCounts
from costwarden.analytics.rollup import Totals, day_of
from costwarden.console.costs import (
    Day,
    average,
    csv_text,
    daily,
    daily_chart,
    day_names,
    money_text,
    share,
)
from costwarden.core.records import LedgerRecord
from costwarden.storage import repo
from costwarden.storage.analytics_read import SpendRow
from costwarden.storage.ledger import LedgerWriter
from tests.console.conftest import Orgs, Signed, sign_in
from tests.helpers import LiveGateway, ledger_row

MODEL = "gpt-4o-mini"


def _exact(html: str, testid: str) -> Decimal:
    found = re.search(rf'data-testid="{testid}" data-exact="([^"]*)"', html)
    assert found is not None, testid
    return Decimal(found.group(1))


def _chart(html: str, chart_id: str) -> dict[str, object]:
    found = re.search(
        rf'<script type="application/json" id="{chart_id}">(.*?)</script>', html, re.S
    )
    assert found is not None
    spec: dict[str, object] = json.loads(found.group(1))
    return spec


def _table(html: str, testid: str) -> str:
    found = re.search(rf'<table[^>]*data-testid="{testid}".*?</table>', html, re.S)
    assert found is not None, testid
    return found.group(0)


async def _requests(gw: LiveGateway, key: str, n: int) -> list[LedgerRecord]:
    """``n`` chat completions with ``key`` through the openai SDK, and their ledger rows."""
    ids = []
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=key, max_retries=0) as oa:
        for i in range(n):
            raw = await oa.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": f"hello {i}"}], max_tokens=20
            )
            assert raw.parse().choices[0].message.content
            ids.append(raw.headers["x-request-id"])
    return [await ledger_row(gw, request_id) for request_id in ids]


def _record(org_id: str, key_id: str, ts: datetime, **fields: object) -> LedgerRecord:
    record = LedgerRecord(
        request_id="req_" + uuid.uuid4().hex, ts=ts, endpoint="chat.completions",
        status="success", http_status=200, org_id=org_id, key_id=key_id, provider="openai",
        requested_model=MODEL, served_model=MODEL,
    )  # fmt: skip
    for name, value in fields.items():
        setattr(record, name, value)
    return record


async def _org_id(gw: LiveGateway, name: str) -> str:
    org = await asyncio.to_thread(repo.get_org_by_name, gw.app.engine, name)
    assert org is not None
    return org.id


@pytest.fixture
async def traffic(gw: LiveGateway, orgs: Orgs) -> dict[str, list[LedgerRecord]]:
    """Two acme requests and one of globex's through the gateway; and written directly: an
    acme request three days ago ($1.25) and a cache hit of acme's today (saved $0.5)."""
    acme = await _requests(gw, gw.key, 2)
    globex = await _requests(gw, orgs.globex_key, 1)
    now = datetime.now(UTC)
    acme_id = await _org_id(gw, "acme")
    written = [
        _record(acme_id, gw.key_id, now - timedelta(days=3), cost_usd=Decimal("1.25")),
        _record(
            acme_id, gw.key_id, now - timedelta(seconds=5), status="cached",
            saved_usd=Decimal("0.5"), served_model=None,
        ),
    ]  # fmt: skip
    async with LedgerWriter(gw.app.engine, flush_interval=0.01) as writer:
        for record in written:
            writer.submit(record)
    return {"acme": [*acme, *written], "globex": globex}


def _cost(records: list[LedgerRecord]) -> Decimal:
    return sum((r.cost_usd for r in records), Decimal(0))


async def test_the_page_shows_the_ledger_exactly(
    admin: Signed, traffic: dict[str, list[LedgerRecord]]
) -> None:
    every = [*traffic["acme"], *traffic["globex"]]
    assert all(r.cost_usd > 0 for r in every if r.status == "success")
    page = await admin.client.get("/dashboard/costs")
    assert page.status_code == 200, page.text
    html = page.text
    today = day_of(datetime.now(UTC))
    assert _exact(html, "cost-today") == _cost([r for r in every if day_of(r.ts) == today])
    assert _exact(html, "cost-30d") == _cost(every)
    assert f'data-testid="requests-30d">{len(every)} requests' in html
    assert _exact(html, "avg-cost") == average(_cost(every), len(every))
    assert _exact(html, "cache-saved") == Decimal("0.5")
    # 1 hit among the 5 answered (4 successes and the hit)
    assert 'data-testid="cache-hit-rate">20.00 %' in html
    assert 'data-testid="cache-hits">1<' in html

    chart = _chart(html, "daily-chart")
    labels = chart["labels"]
    assert isinstance(labels, list) and len(labels) == 30 and labels[-1] == today
    data = chart["datasets"][0]["data"]  # type: ignore[index]
    by_day = dict(zip(labels, data, strict=True))
    three_ago = day_of(datetime.now(UTC) - timedelta(days=3))
    assert Decimal(by_day[three_ago]) == Decimal("1.25")
    assert by_day[day_of(datetime.now(UTC) - timedelta(days=10))] == "0"  # a zero day
    assert sum(Decimal(v) for v in data) == _cost(every)

    top = _table(html, "top-orgs")
    assert top.index("acme") < top.index("globex")  # acme costs more
    globex_id = traffic["globex"][0].org_id
    row = re.search(rf'data-key="{globex_id}".*?data-exact="([^"]+)"', top, re.S)
    assert row is not None and Decimal(row.group(1)) == _cost(traffic["globex"])
    models = _table(html, "cost-by-model")
    assert MODEL in models
    assert '<script src="/dashboard/static/vendor/chart-4.6.1.umd.min.js"' in html


async def test_the_csv_has_the_daily_rows(
    admin: Signed, traffic: dict[str, list[LedgerRecord]]
) -> None:
    r = await admin.client.get("/dashboard/costs.csv")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith('attachment; filename="costs-')
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 30
    every = [*traffic["acme"], *traffic["globex"]]
    assert sum(Decimal(row["cost_usd"]) for row in rows) == _cost(every)
    assert sum(int(row["requests"]) for row in rows) == len(every)
    three_ago = day_of(datetime.now(UTC) - timedelta(days=3))
    (that_day,) = [row for row in rows if row["day"] == three_ago]
    assert that_day["cost_usd"] == "1.25" and that_day["requests"] == "1"
    assert rows[-1]["cache_hits"] == "1" and rows[-1]["saved_usd"] == "0.5"


async def test_an_org_admin_sees_its_own_org_only(
    gw: LiveGateway, orgs: Orgs, traffic: dict[str, list[LedgerRecord]]
) -> None:
    globex_id = traffic["globex"][0].org_id
    assert globex_id is not None
    (globex_key,) = await asyncio.to_thread(repo.list_keys, gw.app.engine, "globex")
    signed = await sign_in(gw.base_url, orgs.acme_admin)
    try:
        page = await signed.client.get("/dashboard/costs")
        assert page.status_code == 200
        html = page.text
        for secret in ("globex", globex_id, globex_key.prefix, globex_key.id):
            assert secret not in html
        assert _exact(html, "cost-30d") == _cost(traffic["acme"])
        assert 'data-testid="top-orgs"' not in html
        projects = _table(html, "top-projects")
        assert ">web<" in projects  # live_gateway's key is of project "web"
        csv_text_ = (await signed.client.get("/dashboard/costs.csv")).text
        rows = list(csv.DictReader(io.StringIO(csv_text_)))
        assert sum(Decimal(row["cost_usd"]) for row in rows) == _cost(traffic["acme"])
        # a platform viewer sees every org
        viewer = await sign_in(gw.base_url, orgs.platform_viewer)
        try:
            seen = (await viewer.client.get("/dashboard/costs")).text
            assert "globex" in _table(seen, "top-orgs")
        finally:
            await viewer.client.aclose()
    finally:
        await signed.client.aclose()


async def test_signed_out_the_csv_sends_to_sign_in(gw: LiveGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.base_url) as c:
        r = await c.get("/dashboard/costs.csv")
        assert r.status_code == 303 and "/dashboard/sign-in" in r.headers["location"]


# ------------------------------------------------------------------ pure helpers


def test_day_names_end_today_and_span_30_days() -> None:
    now = datetime(2026, 3, 1, 0, 30, tzinfo=UTC)
    days = day_names(now)
    assert len(days) == 30 and days[-1] == "2026-03-01" and days[0] == "2026-01-31"
    assert day_names(now, 3) == ["2026-02-27", "2026-02-28", "2026-03-01"]


def _row(day: str, status: str, requests: int, cost: str, saved: str = "0") -> SpendRow:
    totals = Totals(requests=requests, cost_usd=Decimal(cost), saved_usd=Decimal(saved))
    return SpendRow(day, (status,), totals)


def test_daily_fills_zero_days_and_counts_the_cache() -> None:
    days = ["2026-01-01", "2026-01-02", "2026-01-03"]
    rows = [
        _row("2026-01-01", "success", 3, "0.1"),
        _row("2026-01-01", "cached", 1, "0", "0.05"),
        _row("2026-01-03", "blocked", 2, "0"),
        _row("2025-12-31", "success", 9, "9"),  # outside: left out
    ]
    out = daily(rows, days)
    assert [d.day for d in out] == days
    assert out[0].requests == 4 and out[0].cost == Decimal("0.1")
    assert out[0].saved == Decimal("0.05")
    assert (out[0].cache.hits, out[0].cache.answered) == (1, 4)
    assert out[1].requests == 0 and out[1].cost == 0
    assert (out[2].cache.hits, out[2].cache.answered) == (0, 0)
    spec = daily_chart(out)
    assert spec["labels"] == days
    assert spec["datasets"][0]["data"] == ["0.1", "0", "0"]


@pytest.mark.parametrize(
    ("cost", "requests", "expected"),
    [
        (Decimal("1"), 3, Decimal("0.333333333")),
        (Decimal("0.5"), 2, Decimal("0.250000000")),
        (Decimal("1"), 0, None),
    ],
)
def test_average(cost: Decimal, requests: int, expected: Decimal | None) -> None:
    assert average(cost, requests) == expected


@pytest.mark.parametrize(
    ("part", "whole", "expected"),
    [("1", "3", "33.3"), ("0", "5", "0.0"), ("2", "2", "100.0"), ("1", "0", None)],
)
def test_share(part: str, whole: str, expected: str | None) -> None:
    got = share(Decimal(part), Decimal(whole))
    assert (None if got is None else str(got)) == expected


def test_money_text_and_csv_are_exact() -> None:
    assert money_text(Decimal("1.2500")) == "1.25"
    assert money_text(Decimal("0.0000001")) == "0.0000001"
    assert money_text(Decimal("100")) == "100"
    assert money_text(Decimal(0)) == "0"
    day = Day("2026-01-01", 4, Decimal("0.000000123"), Decimal("0.5"), CacheCounts(1, 4))
    lines = csv_text([day, Day("2026-01-02")]).splitlines()
    assert lines[0] == "day,requests,cost_usd,saved_usd,cache_hits,cache_hit_rate"
    assert lines[1] == "2026-01-01,4,0.000000123,0.5,1,0.2500"
    assert lines[2] == "2026-01-02,0,0,0,0,"
