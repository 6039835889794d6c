"""Alert rules through the admin API: set, list, delete, the errors of each, and the lines a
rule sets reaching the request path (a live gateway raises its crossings at them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from costwarden.mock import MockServer
from costwarden.storage.alert_rules import list_rules
from tests.admin.conftest import AUTH, TOKEN
from tests.helpers import (
    PRICEY,
    T0,
    FakeClock,
    LiveGateway,
    configure_mock,
    live_gateway,
    set_limits,
)
from tests.helpers import chat as _chat


@pytest.fixture
async def gw(mock: MockServer, database_url: str, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    tier = '[[tiers]]\nname = "pro"\n[tiers.user]\ndaily_tokens = 1000\n'
    async with live_gateway(
        mock, database_url, tmp_path, admin_token=TOKEN, extra_toml=tier
    ) as gateway:
        yield gateway


async def test_set_list_and_delete(gw: LiveGateway, client: httpx.AsyncClient) -> None:
    put = await client.put(
        "/admin/alert-rules",
        json={"org": "acme", "scope": "org", "limit": "daily_usd", "thresholds": [90, 30, 60]},
        headers=AUTH,
    )
    assert put.status_code == 200, put.text
    rule = put.json()
    assert (rule["org"], rule["scope"], rule["limit"], rule["thresholds"]) == (
        "acme", "org", "daily_usd", [30, 60, 90],
    )  # fmt: skip
    tier = await client.put(
        "/admin/alert-rules", json={"scope": "user", "tier": "pro", "thresholds": [75]},
        headers=AUTH,
    )  # fmt: skip
    assert tier.status_code == 200 and tier.json()["tier"] == "pro"
    every = await client.put(
        "/admin/alert-rules", json={"org": "acme", "scope": "user", "thresholds": [40]},
        headers=AUTH,
    )  # fmt: skip
    assert every.status_code == 200 and every.json()["scope_id"] is None
    listed = (await client.get("/admin/alert-rules", headers=AUTH)).json()["data"]
    assert [r["id"] for r in listed] == [rule["id"], tier.json()["id"], every.json()["id"]]
    by_org = await client.get("/admin/alert-rules", params={"org": "acme"}, headers=AUTH)
    assert len(by_org.json()["data"]) == 3
    unknown = await client.get("/admin/alert-rules", params={"org": "nope"}, headers=AUTH)
    assert unknown.status_code == 404
    # This process loaded the rules at once: its book gives the org's daily USD its lines.
    assert {r.lines for r in gw.app.enforcer.book.alert_rules} == {(30, 60, 90), (75,), (40,)}
    gone = await client.delete(f"/admin/alert-rules/{rule['id']}", headers=AUTH)
    assert gone.status_code == 200 and gone.json() == {"deleted": rule["id"]}
    again = await client.delete(f"/admin/alert-rules/{rule['id']}", headers=AUTH)
    assert again.status_code == 404
    assert len(gw.app.enforcer.book.alert_rules) == 2
    assert (await client.get("/admin/alert-rules")).status_code == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"org": "acme", "scope": "org", "thresholds": [0]}, "outside (0, 1000] %"),
        ({"org": "acme", "scope": "org", "thresholds": [1001]}, "outside (0, 1000] %"),
        ({"org": "acme", "scope": "org", "thresholds": [12.5]}, "not a whole percent"),
        ({"org": "acme", "scope": "org", "thresholds": []}, "at least one"),
        ({"org": "acme", "scope": "org"}, "'thresholds' is required"),
        ({"org": "nope", "scope": "org", "thresholds": [50]}, "unknown org"),
        ({"org": "acme", "scope": "project", "scope_id": "nope", "thresholds": [50]},
         "has no project"),
        ({"org": "acme", "scope": "key", "scope_id": "key_000000000000", "thresholds": [50]},
         "has no key"),
        ({"scope": "user", "tier": "gold", "thresholds": [50]}, "unknown tier"),
        ({"scope": "user", "tier": "pro", "org": "acme", "thresholds": [50]}, "give no org"),
        ({"org": "acme", "scope": "org", "limit": "weekly", "thresholds": [50]},
         "unknown limit"),
        ({"org": "acme", "scope": "galaxy", "thresholds": [50]}, "'scope' is required"),
        ({"org": "acme", "scope": "org", "thresholds": [50], "extra": 1}, "extra"),
    ],
)
async def test_bad_rules_are_400_and_store_nothing(
    gw: LiveGateway, client: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    r = await client.put("/admin/alert-rules", json=body, headers=AUTH)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"]
    assert await asyncio.to_thread(list_rules, gw.app.engine) == []


async def test_a_live_gateway_crosses_the_lines_a_rule_sets(
    mock: MockServer, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    await configure_mock(mock, output_tokens=1000)  # about $1 a request with PRICEY
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(
        mock, url, tmp_path, extra_toml=PRICEY, clock=clock, admin_token=TOKEN
    ) as gw:
        await set_limits(gw, daily_usd="4.5")
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
            r = await client.put(
                "/admin/alert-rules",
                json={"org": "acme", "scope": "org", "thresholds": [30, 60, 90]},
                headers=AUTH,
            )
            assert r.status_code == 200, r.text
        subscription = gw.app.events.subscribe(kinds=frozenset({"limit_threshold_crossed"}))
        for _ in range(4):  # about $1, $2, $3, $4 of $4.5: 22, 44, 67, 89 %
            status, _, _ = await _chat(gw)
            assert status == 200
        got = []
        while (event := await subscription.get(timeout=2)) is not None:
            got.append(event.payload.threshold_pct)
        subscription.close()
    assert got == [30, 60]
