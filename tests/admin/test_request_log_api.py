"""The request log through the admin API: filtered search, newest first, in pages that rows
written meanwhile never shift; a cursor from another query is a 400; one record by id."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from costwarden.core.records import LedgerRecord
from costwarden.storage import repo
from costwarden.storage.ledger import LedgerWriter
from tests.admin.conftest import AUTH
from tests.helpers import LiveGateway
from tests.storage.conftest import random_record


async def _write(gw: LiveGateway, records: list[LedgerRecord]) -> None:
    async with LedgerWriter(gw.app.engine, flush_interval=0.01) as writer:
        for record in records:
            writer.submit(record)


@pytest.fixture
async def records(gw: LiveGateway) -> tuple[str, list[LedgerRecord]]:
    """(acme's id, 230 records of the last 20 hours for acme and beta)."""
    engine = gw.app.engine
    ids = [(await asyncio.to_thread(repo.ensure_org, engine, n))[0] for n in ("acme", "beta")]
    rng = random.Random(9)
    now = datetime.now(UTC)
    out = [
        dataclasses.replace(
            random_record(rng, now - timedelta(seconds=rng.uniform(60, 20 * 3600))),
            org_id=rng.choice(ids),
        )
        for _ in range(230)
    ]
    await _write(gw, out)
    return ids[0], out


async def _pages(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        answer = await client.get(
            "/admin/analytics/requests",
            params={**params, **({"cursor": cursor} if cursor else {})},
            headers=AUTH,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def _newest_first(records: list[LedgerRecord]) -> list[str]:
    ordered = sorted(records, key=lambda r: (r.ts, r.request_id), reverse=True)
    return [r.request_id for r in ordered]


async def test_search_pages_through_exactly_the_matching_records(
    gw: LiveGateway, client: httpx.AsyncClient, records: tuple[str, list[LedgerRecord]]
) -> None:
    acme, written = records
    pages = await _pages(client, {"limit": "50"})
    assert [len(p) for p in pages] == [50, 50, 50, 50, 30]
    assert [row["request_id"] for page in pages for row in page] == _newest_first(written)

    # Filters: an org by name, a model, a cost range.
    low, high = Decimal("0.002"), Decimal("0.006")
    wanted = [
        r for r in written
        if r.org_id == acme and (r.served_model or r.requested_model) == "claude-haiku-4-5"
        and low <= r.cost_usd <= high
    ]  # fmt: skip
    params = {"org": "acme", "model": "claude-haiku-4-5", "min_cost": "0.002",
              "max_cost": "0.006", "limit": "7"}  # fmt: skip
    found = [row["request_id"] for page in await _pages(client, params) for row in page]
    assert wanted and found == _newest_first(wanted)


async def test_rows_written_meanwhile_do_not_shift_the_pages(
    gw: LiveGateway, client: httpx.AsyncClient, records: tuple[str, list[LedgerRecord]]
) -> None:
    _, written = records
    tomorrow = f"{datetime.now(UTC) + timedelta(days=1):%Y-%m-%d}"  # a fixed end, past now
    first = await client.get(
        "/admin/analytics/requests", params={"limit": "100", "until": tomorrow}, headers=AUTH
    )
    body = first.json()
    rng = random.Random(3)
    await _write(gw, [random_record(rng, datetime.now(UTC)) for _ in range(20)])  # newer rows
    rest = await client.get(
        "/admin/analytics/requests",
        params={"limit": "500", "until": tomorrow, "cursor": body["next_cursor"]},
        headers=AUTH,
    )
    ids = [row["request_id"] for row in body["data"] + rest.json()["data"]]
    assert ids == _newest_first(written)


async def test_a_cursor_of_another_query_is_refused(
    client: httpx.AsyncClient, records: tuple[str, list[LedgerRecord]]
) -> None:
    page = await client.get("/admin/analytics/requests", params={"limit": "10"}, headers=AUTH)
    cursor = page.json()["next_cursor"]
    for params, message in [
        ({"limit": "10", "status": "success", "cursor": cursor}, "belongs to another query"),
        ({"cursor": "not-a-cursor"}, "not a cursor"),
        ({"cursor": cursor[:-4]}, "cursor"),
    ]:
        r = await client.get("/admin/analytics/requests", params=params, headers=AUTH)
        assert r.status_code == 400 and message in r.json()["error"]["message"], r.text


async def test_one_record_by_id(
    client: httpx.AsyncClient, records: tuple[str, list[LedgerRecord]]
) -> None:
    _, written = records
    r = await client.get(f"/admin/analytics/requests/{written[0].request_id}", headers=AUTH)
    assert r.status_code == 200
    assert (r.json()["cost_usd"], r.json()["org_id"]) == (
        format(written[0].cost_usd, "f"), written[0].org_id,
    )  # fmt: skip
    missing = await client.get("/admin/analytics/requests/req_nope", headers=AUTH)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"min_cost": "-1"}, "min_cost: a USD amount"),
        ({"min_cost": "5", "max_cost": "1"}, "must not be above"),
        ({"limit": "0"}, "limit must be a whole number"),
        ({"limit": "501"}, "limit must be a whole number"),
        ({"since": "2026-11-02", "until": "2026-11-01"}, "must be after"),
        ({"since": "800d"}, "at most 366 days"),
    ],
)
async def test_bad_search_input(
    client: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    r = await client.get("/admin/analytics/requests", params=params, headers=AUTH)
    assert r.status_code == 400 and message in r.json()["error"]["message"], r.text


async def test_route_reason_and_saved_usd_as_written(
    gw: LiveGateway, client: httpx.AsyncClient, records: tuple[str, list[LedgerRecord]]
) -> None:
    """A response-cache hit's record: its saving exact to the 12th place (as the cost), the
    route's reason as written (cut to 500 characters); found by status, within its org."""
    acme, written = records
    reason = "cache hit: openai:gpt-4o-mini, stored 42 s ago"
    now = datetime.now(UTC)
    hit = dataclasses.replace(
        written[0], request_id="req_hit_1", ts=now - timedelta(minutes=5), org_id=acme,
        status="cached", cost_usd=Decimal(0), saved_usd=Decimal("0.000000000001"),
        route_reason=reason,
    )  # fmt: skip
    beta = next(r.org_id for r in written if r.org_id != acme)
    other = dataclasses.replace(
        hit, request_id="req_hit_2", org_id=beta, saved_usd=Decimal("2.25"),
        route_reason="r" * 600,
    )  # fmt: skip
    await _write(gw, [hit, other])
    one = await client.get("/admin/analytics/requests/req_hit_1", headers=AUTH)
    assert one.status_code == 200, one.text
    body = one.json()
    assert (body["status"], body["route_reason"]) == ("cached", reason)
    assert body["saved_usd"] == "0.000000000001" and Decimal(body["cost_usd"]) == 0
    two = (await client.get("/admin/analytics/requests/req_hit_2", headers=AUTH)).json()
    assert two["route_reason"] == "r" * 500 and Decimal(two["saved_usd"]) == Decimal("2.25")
    plain = (await client.get(f"/admin/analytics/requests/{written[2].request_id}",
                              headers=AUTH)).json()  # fmt: skip
    assert (plain["route_reason"], Decimal(plain["saved_usd"])) == (None, 0)
    found = await client.get(
        "/admin/analytics/requests", params={"org": "acme", "status": "cached"}, headers=AUTH
    )
    assert [r["request_id"] for r in found.json()["data"]] == ["req_hit_1"]
