"""Budgets, rate limits and tiers through the admin API, against a live gateway.

Writes are live on the gateway serving them at once (no poll interval to wait for); bad input
is a 400 (or 404 for something unknown, 409 for a config-file tier or one in use) that
changes nothing;
the budget status shows spend equal to the ledger. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from costwarden.budgets.limits import LIMIT_NAMES, SCOPES, UNLIMITED, format_amount
from costwarden.mock import MockServer
from costwarden.storage import policy, repo
from costwarden.storage.counters import ADMITTED_STATUSES
from costwarden.storage.schema import org_tiers
from costwarden.storage.usage import ledger_rows
from tests.helpers import LiveGateway, live_gateway

TOKEN = "adm-secret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello budgets"}]}
CONFIG_TIER = """
[[tiers]]
name = "free"
org = { daily_usd = "1", requests_per_minute = 100 }
"""


@pytest.fixture
async def gw(mock: MockServer, database_url: str, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with live_gateway(
        mock, database_url, tmp_path, admin_token=TOKEN, extra_toml=CONFIG_TIER
    ) as gateway:
        yield gateway


@pytest.fixture
async def client(gw: LiveGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as c:
        yield c


async def _chat(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.post(
        "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"}
    )


def _assert_error(r: httpx.Response, status: int, kind: str | None = None) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    error = r.json()["error"]
    if kind is not None:
        assert error["type"] == kind, error
    message: str = error["message"]
    assert message
    return message


def _snapshot(gw: LiveGateway) -> tuple[Any, ...]:
    """Everything a policy write may change, in storage and in the running gateway."""
    engine = gw.app.engine
    with engine.connect() as conn:
        assigned = sorted(tuple(r) for r in conn.execute(sa.select(org_tiers)).all())
    return (
        policy.policy_version(engine),
        policy.list_limits(engine),
        policy.list_tiers(engine),
        assigned,
        gw.app.enforcer.book.version,
    )


async def _put(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.put("/admin/limits", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def _ledger_spend(gw: LiveGateway, org_id: str) -> tuple[int, int]:
    """(nano-dollars as the counters count them, admitted requests) of ``org_id``."""
    await gw.app.ledger.flush()
    rows = await asyncio.to_thread(ledger_rows, gw.app.engine, None, 100_000)
    mine = [r for r in rows if r.org_id == org_id and r.status in ADMITTED_STATUSES]
    nanos = sum(math.ceil(r.cost_usd * 1_000_000_000) for r in mine)
    return nanos, len(mine)


# ------------------------------------------------------------------------ auth


async def test_new_endpoints_require_the_token(client: httpx.AsyncClient, gw: LiveGateway) -> None:
    before = _snapshot(gw)
    limit = {"org": "acme", "scope": "org", "limits": {"daily_requests": 0}}
    for headers in ({}, {"authorization": "Bearer wrong"}):
        for method, path, body in [
            ("GET", "/admin/limits?org=acme", None),
            ("PUT", "/admin/limits", limit),
            ("DELETE", "/admin/limits", {"org": "acme", "scope": "org"}),
            ("GET", "/admin/budgets?org=acme", None),
            ("GET", "/admin/tiers", None),
            ("PUT", "/admin/tiers/pro", {"org": {"daily_usd": "1"}}),
            ("DELETE", "/admin/tiers/pro", None),
            ("PUT", "/admin/orgs/acme/tier", {"tier": "free"}),
        ]:
            r = await client.request(method, path, json=body, headers=headers)
            _assert_error(r, 401, "authentication_error")
    assert _snapshot(gw) == before
    assert (await _chat(client, gw.key)).status_code == 200


# ------------------------------------------------------------------------ limits


async def test_set_limits_then_budget_status_shows_the_spend(
    client: httpx.AsyncClient, gw: LiveGateway
) -> None:
    data = await _put(
        client,
        org="acme",
        scope="org",
        limits={"daily_usd": "5", "daily_requests": 100, "requests_per_hour": 50},
    )
    org = repo.get_org_by_name(gw.app.engine, "acme")
    assert org is not None
    assert data["org"] == "acme" and data["org_id"] == org.id
    assert [(x["limit_name"], x["limit"], x["mode"], x["kind"]) for x in data["limits"]] == [
        ("daily_usd", "5", "hard", "budget"),
        ("daily_requests", "100", "hard", "budget"),
        ("requests_per_hour", "50", "soft", "rate_limit"),
    ]
    assert {(x["scope"], x["scope_id"]) for x in data["limits"]} == {("org", org.id)}

    for _ in range(3):
        r = await _chat(client, gw.key)
        assert r.status_code == 200, r.text
        assert "x-costwarden-budget-remaining-usd" in r.headers  # enforced at once

    r = await client.get("/admin/budgets", params={"org": "acme"}, headers=AUTH)
    assert r.status_code == 200, r.text
    status = r.json()
    assert (status["org"], status["org_id"]) == ("acme", org.id)
    by_name = {x["limit_name"]: x for x in status["limits"]}
    assert set(by_name) == {"daily_usd", "daily_requests", "requests_per_hour"}
    nanos, requests = await _ledger_spend(gw, org.id)
    assert requests == 3 and nanos > 0
    usd = by_name["daily_usd"]
    assert usd["spent"] == format_amount("usd", nanos), (usd, nanos)
    assert usd["reserved"] == "0"
    assert Decimal(usd["remaining"]) == 5 - Decimal(nanos) / 10**9
    assert usd["resets_at"].endswith("T00:00:00Z") and usd["source"] == "override"
    assert usd["percent_used"] == str(
        (Decimal(nanos) * 100 / (5 * 10**9)).quantize(Decimal("0.01"))
    )
    assert (by_name["daily_requests"]["spent"], by_name["daily_requests"]["remaining"]) == (
        "3",
        "97",
    )
    hourly = by_name["requests_per_hour"]
    assert (hourly["spent"], hourly["remaining"], hourly["kind"]) == ("3", "47", "rate_limit")
    assert hourly["resets_at"] is None

    listed = (await client.get("/admin/limits", params={"org": "acme"}, headers=AUTH)).json()
    assert listed["org_id"] == org.id
    assert sorted(x["limit_name"] for x in listed["limits"]) == sorted(by_name)


async def test_limit_changes_are_live_at_once(client: httpx.AsyncClient, gw: LiveGateway) -> None:
    assert (await _chat(client, gw.key)).status_code == 200
    await _put(client, org="acme", scope="key", scope_id=gw.key_id, limits={"requests_per_hour": 0})
    refused = await _chat(client, gw.key)  # no poll interval to wait for
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["scope"] == "key"

    r = await client.request(
        "DELETE",
        "/admin/limits",
        json={"org": "acme", "scope": "key", "scope_id": gw.key_id, "limits": ["daily_usd"]},
        headers=AUTH,
    )
    assert r.status_code == 200 and r.json() == {"deleted": 0}
    assert (await _chat(client, gw.key)).status_code == 429  # that one was not set

    r = await client.request(
        "DELETE",
        "/admin/limits",
        json={"org": "acme", "scope": "key", "scope_id": gw.key_id},
        headers=AUTH,
    )
    assert r.status_code == 200 and r.json() == {"deleted": 1}
    assert (await _chat(client, gw.key)).status_code == 200
    assert policy.list_limits(gw.app.engine) == []


async def test_platform_limit_and_listing(client: httpx.AsyncClient, gw: LiveGateway) -> None:
    other, record = await asyncio.to_thread(repo.create_key, gw.app.engine, org="beta")
    gw.app.keys.apply([record])
    await _put(client, org=None, scope="platform", limits={"daily_requests": 2})
    await _put(client, org="beta", scope="user", scope_id="alice", limits={"daily_usd": "-1"})
    await _put(client, org="acme", scope="tag", scope_id=" team = search ", limits={"daily_usd": 1})
    assert (await _chat(client, gw.key)).status_code == 200
    assert (await _chat(client, other)).status_code == 200
    refused = await _chat(client, gw.key)
    assert refused.status_code == 402 and refused.json()["error"]["scope"] == "platform"

    acme = (await client.get("/admin/limits", params={"org": "acme"}, headers=AUTH)).json()
    assert [(x["org"], x["scope"], x["scope_id"], x["limit"]) for x in acme["limits"]] == [
        (None, "platform", None, "2"),
        ("acme", "tag", "team=search", "1"),
    ]
    everyone = (await client.get("/admin/limits", headers=AUTH)).json()
    assert everyone["org"] is None and everyone["org_id"] is None
    assert {(x["org"], x["scope"], x["limit"]) for x in everyone["limits"]} == {
        (None, "platform", "2"),
        ("acme", "tag", "1"),
        ("beta", "user", "-1"),
    }
    (beta_user,) = [x for x in everyone["limits"] if x["org"] == "beta"]
    assert beta_user["scope_id"] == "alice" and beta_user["limit_name"] == "daily_usd"
    stored = {lim.scope: lim for lim in policy.list_limits(gw.app.engine)}
    assert stored["user"].amount == UNLIMITED

    budgets = (await client.get("/admin/budgets", params={"org": "beta"}, headers=AUTH)).json()
    platform = next(x for x in budgets["limits"] if x["scope"] == "platform")
    assert (platform["spent"], platform["remaining"], platform["percent_used"]) == (
        "2",
        "0",
        "100.00",
    )


async def test_mode_is_kept_unless_given(client: httpx.AsyncClient, gw: LiveGateway) -> None:
    await _put(client, org="acme", scope="org", limits={"daily_usd": "2"}, mode="soft")
    data = await _put(client, org="acme", scope="org", limits={"daily_usd": "3"})
    assert [(x["limit"], x["mode"]) for x in data["limits"]] == [("3", "soft")]
    data = await _put(client, org="acme", scope="org", limits={"daily_usd": "3"}, mode="hard")
    assert data["limits"][0]["mode"] == "hard"


async def test_exact_usd_amounts(client: httpx.AsyncClient, gw: LiveGateway) -> None:
    # A JSON number with more digits than a double holds is taken exactly, not rounded.
    r = await client.put(
        "/admin/limits",
        content=b'{"org": "acme", "scope": "org", "limits": {"daily_usd": 1234567.123456789}}',
        headers={**AUTH, "content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["limits"][0]["limit"] == "1234567.123456789"
    (stored,) = policy.list_limits(gw.app.engine)
    assert stored.amount == 1_234_567_123_456_789


def _bad_limit_bodies(beta_key: str, key_id: str) -> list[tuple[Any, int, str]]:
    org = {"org": "acme", "scope": "org"}
    return [
        ({**org, "limits": {"daily_usd": "-5"}}, 400, "zero or positive"),
        ({**org, "limits": {"daily_usd": -5}}, 400, "zero or positive"),
        ({**org, "limits": {"daily_usd": "five"}}, 400, "not a number"),
        ({**org, "limits": {"daily_usd": "0.0000000001"}}, 400, "9 decimal places"),
        ({**org, "limits": {"daily_usd": "1e400"}}, 400, "too large"),
        ({**org, "limits": {"daily_usd": "1e999999"}}, 400, "too large"),
        ({**org, "limits": {"daily_tokens": "1e99999999999"}}, 400, "too large"),
        ({**org, "limits": {"daily_tokens": 9007199254740992}}, 400, "too large"),
        ({**org, "limits": {"daily_requests": 1.5}}, 400, "whole number"),
        ({**org, "limits": {"daily_requests": True}}, 400, "expected a number"),
        ({**org, "limits": {"daily_requests": None}}, 400, "expected a number"),
        ({**org, "limits": {"weekly_usd": 5}}, 400, "unknown limit 'weekly_usd'"),
        # One bad entry and nothing is set, not even the good one before it.
        ({**org, "limits": {"daily_usd": "1", "weekly_usd": 5}}, 400, "weekly_usd"),
        ({**org, "limits": {"daily_usd": "1", "requests_per_hour": -2}}, 400, "requests_per"),
        ({**org, "limits": {}}, 400, "'limits' is required"),
        ({**org, "limits": [["daily_usd", 1]]}, 400, "'limits' is required"),
        (org, 400, "'limits' is required"),
        ({**org, "limits": {"daily_usd": 1}, "mode": "medium"}, 400, "'mode'"),
        ({**org, "limits": {"daily_usd": 1}, "limit": 3}, 400, "unknown field(s) 'limit'"),
        ({"org": "nope", "scope": "org", "limits": {"daily_usd": 1}}, 404, "nope"),
        ({"org": 5, "scope": "org", "limits": {"daily_usd": 1}}, 400, "'org'"),
        ({"org": "acme", "limits": {"daily_usd": 1}}, 400, "'scope' is required"),
        ({"org": "acme", "scope": "galaxy", "limits": {"daily_usd": 1}}, 400, "galaxy"),
        ({"org": "acme", "scope": "org", "scope_id": 7, "limits": {"x": 1}}, 400, "scope_id"),
        (
            {"org": "acme", "scope": "project", "scope_id": "nope", "limits": {"daily_usd": 1}},
            404,
            "no project 'nope'",
        ),
        (
            {"org": "acme", "scope": "project", "limits": {"daily_usd": 1}},
            400,
            "must name a project",
        ),
        (
            {"org": "acme", "scope": "key", "scope_id": beta_key, "limits": {"daily_usd": 1}},
            404,
            beta_key,
        ),
        (
            {"org": "acme", "scope": "key", "scope_id": "key_000000000000", "limits": {"x": 1}},
            400,  # the unknown limit name is found first, before any lookup
            "unknown limit",
        ),
        (
            {
                "org": "acme",
                "scope": "key",
                "scope_id": "key_000000000000",
                "limits": {"daily_usd": 1},
            },
            404,
            "key_000000000000",
        ),
        (
            {"org": "acme", "scope": "tag", "scope_id": "team", "limits": {"daily_usd": 1}},
            400,
            "name=value",
        ),
        (
            {"org": "acme", "scope": "user", "scope_id": "  ", "limits": {"daily_usd": 1}},
            400,
            "must not be empty",
        ),
        (
            {"org": "acme", "scope": "platform", "limits": {"daily_usd": 1}},
            400,
            "give no org",
        ),
        ({"scope": "org", "limits": {"daily_usd": 1}}, 400, "an org is required"),
        (
            {"org": "acme", "scope": "org", "scope_id": key_id, "limits": {"daily_usd": 1}},
            400,
            "org scope",
        ),
        ([1, 2], 400, "JSON object"),
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "not valid JSON"),
    ]


async def test_bad_limits_are_refused_and_change_nothing(
    client: httpx.AsyncClient, gw: LiveGateway
) -> None:
    _, beta = await asyncio.to_thread(repo.create_key, gw.app.engine, org="beta")
    await _put(client, org="acme", scope="org", limits={"daily_usd": "7"})  # something to keep
    before = _snapshot(gw)
    for body, status, needle in _bad_limit_bodies(beta.id, gw.key_id):
        if isinstance(body, bytes):
            r = await client.put("/admin/limits", content=body, headers=AUTH)
        else:
            r = await client.put("/admin/limits", json=body, headers=AUTH)
        kind = "not_found" if status == 404 else "invalid_request_error"
        message = _assert_error(r, status, kind)
        assert needle in message, (body, message)
        assert _snapshot(gw) == before, body
    assert (await _chat(client, gw.key)).status_code == 200


async def test_bad_clears_are_refused_and_change_nothing(
    client: httpx.AsyncClient, gw: LiveGateway
) -> None:
    await _put(client, org="acme", scope="org", limits={"daily_usd": "7", "daily_requests": 9})
    before = _snapshot(gw)
    for body, status, needle in [
        ({"org": "acme", "scope": "org", "limits": ["daily_usd", "weekly_usd"]}, 400, "weekly"),
        ({"org": "acme", "scope": "org", "limits": "daily_usd"}, 400, "list of limit names"),
        ({"org": "acme", "scope": "org", "limits": []}, 400, "no limits named"),
        ({"org": "nope", "scope": "org"}, 404, "nope"),
        ({"org": "acme", "scope": "project", "scope_id": "nope"}, 404, "nope"),
        ({"org": "acme", "scope": "platform"}, 400, "give no org"),
        ({"org": "acme"}, 400, "'scope'"),
        ({"org": "acme", "scope": "org", "mode": "hard"}, 400, "unknown field"),
    ]:
        r = await client.request("DELETE", "/admin/limits", json=body, headers=AUTH)
        message = _assert_error(r, status)
        assert needle in message, (body, message)
        assert _snapshot(gw) == before, body
    r = await client.request("DELETE", "/admin/limits", content=b"{", headers=AUTH)
    _assert_error(r, 400, "invalid_request_error")
    assert _snapshot(gw) == before


async def test_unknown_org_in_queries(client: httpx.AsyncClient) -> None:
    for path in ("/admin/limits", "/admin/budgets"):
        r = await client.get(path, params={"org": "nope"}, headers=AUTH)
        assert "nope" in _assert_error(r, 404, "not_found")
    _assert_error(await client.get("/admin/budgets", headers=AUTH), 400, "invalid_request_error")


# ------------------------------------------------------------------------ tiers


async def test_tiers_lifecycle_and_live_assignment(
    client: httpx.AsyncClient, gw: LiveGateway
) -> None:
    listed = (await client.get("/admin/tiers", headers=AUTH)).json()["data"]
    assert listed == [
        {
            "name": "free",
            "source": "config",
            "limits": {"org": {"daily_usd": "1", "requests_per_minute": "100"}},
        }
    ]
    r = await client.put(
        "/admin/tiers/pro",
        json={"org": {"monthly_usd": "500"}, "key": {"requests_per_minute": 1}},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "name": "pro",
        "source": "api",
        "limits": {"org": {"monthly_usd": "500"}, "key": {"requests_per_minute": "1"}},
    }
    names = [t["name"] for t in (await client.get("/admin/tiers", headers=AUTH)).json()["data"]]
    assert names == ["free", "pro"]

    r = await client.put("/admin/orgs/acme/tier", json={"tier": "pro"}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"org": "acme", "tier": "pro"}, r.text
    assert (await _chat(client, gw.key)).status_code == 200
    refused = await _chat(client, gw.key)  # the tier's key default: 1 per minute, live at once
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["scope"] == "key"
    status = (await client.get("/admin/budgets", params={"org": "acme"}, headers=AUTH)).json()
    assert [(x["limit_name"], x["source"]) for x in status["limits"]] == [
        ("monthly_usd", "tier pro")
    ]

    # An org on a tier keeps it from being deleted: the request conflicts with it.
    r = await client.delete("/admin/tiers/pro", headers=AUTH)
    assert "acme" in _assert_error(r, 409, "conflict")
    r = await client.put("/admin/orgs/acme/tier", json={"tier": "free"}, headers=AUTH)
    assert r.status_code == 200, r.text  # config tiers are known tiers
    assert (await _chat(client, gw.key)).status_code == 200
    r = await client.put("/admin/orgs/acme/tier", json={"tier": None}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"org": "acme", "tier": None}
    r = await client.delete("/admin/tiers/pro", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"deleted": "pro"}
    _assert_error(await client.delete("/admin/tiers/pro", headers=AUTH), 404, "not_found")
    assert policy.list_tiers(gw.app.engine) == []


async def test_bad_tier_writes_are_refused_and_change_nothing(
    client: httpx.AsyncClient, gw: LiveGateway
) -> None:
    await client.put("/admin/tiers/pro", json={"org": {"daily_usd": "2"}}, headers=AUTH)
    await client.put("/admin/orgs/acme/tier", json={"tier": "pro"}, headers=AUTH)
    before = _snapshot(gw)
    cases: list[tuple[str, str, Any, int, str]] = [
        ("PUT", "/admin/tiers/free", {"org": {"daily_usd": "9"}}, 409, "config file"),
        ("DELETE", "/admin/tiers/free", None, 409, "config file"),
        ("PUT", "/admin/tiers/pro", {"org": {"weekly_usd": 5}}, 400, "weekly_usd"),
        ("PUT", "/admin/tiers/pro", {"platform": {"daily_usd": 5}}, 400, "platform"),
        ("PUT", "/admin/tiers/pro", {"org": {"daily_usd": "-5"}}, 400, "zero or positive"),
        ("PUT", "/admin/tiers/pro", {"key": {"daily_tokens": "1e999999"}}, 400, "too large"),
        ("PUT", "/admin/tiers/pro", {"org": "daily_usd=5"}, 400, "must be a table"),
        ("PUT", "/admin/tiers/pro", [1], 400, "JSON object"),
        ("PUT", "/admin/tiers/%20", {"org": {"daily_usd": 1}}, 400, "must not be empty"),
        ("DELETE", "/admin/tiers/nope", None, 404, "nope"),
        ("PUT", "/admin/orgs/acme/tier", {"tier": "nope"}, 404, "unknown tier 'nope'"),
        ("PUT", "/admin/orgs/acme/tier", {"tier": 5}, 400, "'tier'"),
        ("PUT", "/admin/orgs/acme/tier", {}, 400, "'tier' is required"),
        ("PUT", "/admin/orgs/acme/tier", {"tier": "free", "x": 1}, 400, "unknown field"),
        ("PUT", "/admin/orgs/nope/tier", {"tier": "free"}, 404, "nope"),
    ]
    for method, path, body, status, needle in cases:
        r = await client.request(method, path, json=body, headers=AUTH)
        message = _assert_error(r, status)
        assert needle in message, (method, path, body, message)
        assert _snapshot(gw) == before, (method, path, body)
    r = await client.put("/admin/tiers/pro", content=b"{oops", headers=AUTH)
    _assert_error(r, 400, "invalid_request_error")
    assert _snapshot(gw) == before


async def test_new_paths_are_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/admin/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths["/admin/limits"]) == {"get", "put", "delete"}
    assert set(paths["/admin/budgets"]) == {"get"}
    assert set(paths["/admin/tiers"]) == {"get"}
    assert set(paths["/admin/tiers/{name}"]) == {"put", "delete"}
    assert set(paths["/admin/orgs/{name}/tier"]) == {"put"}
    put = paths["/admin/limits"]["put"]["requestBody"]["content"]["application/json"]["schema"]
    # One branch per scope; each takes exactly the known limit names.
    assert [b["properties"]["scope"]["const"] for b in put["oneOf"]] == list(SCOPES)
    for branch in put["oneOf"]:
        limits = branch["properties"]["limits"]
        assert limits["additionalProperties"] is False
        assert set(limits["properties"]) == set(LIMIT_NAMES)
    for ref in ("Limit", "LimitStatus", "Tier"):
        assert ref in spec["components"]["schemas"]
