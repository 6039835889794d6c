"""What every admin route shares (admin/common.py), against a live gateway on loopback.

A body nested too deeply is a 400 and one too large a 413, both JSON and both changing
nothing; an undeclared method is a JSON 405 naming every method of the path in ``Allow``;
a database that stops answering turns every admin route that needs it into a JSON 503 with
``Retry-After`` and one warning line (no traceback, nothing of the URL), and the API works
again once the database is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from costwarden.admin.common import MAX_BODY_BYTES, MAX_JSON_DEPTH
from costwarden.alerts.rules import threshold_alert
from costwarden.core.event_kinds import LimitThresholdCrossed
from costwarden.mock import MockServer
from costwarden.storage import alerts as store_alerts
from costwarden.storage import policy, repo
from tests.helpers import LiveGateway, assert_admin_error, database_down, live_gateway

TOKEN = "adm-secret"
AUTH = {"authorization": f"Bearer {TOKEN}"}

# Every admin write that takes a JSON body: (method, path).
WRITES = [
    ("POST", "/admin/keys"),
    ("PUT", "/admin/limits"),
    ("DELETE", "/admin/limits"),
    ("PUT", "/admin/tiers/pro"),
    ("PUT", "/admin/orgs/acme/tier"),
    ("PUT", "/admin/switches"),
    ("PUT", "/admin/routes/gpt-4o-mini/fallbacks"),
    ("POST", "/admin/breakers/openai:gpt-4o-mini/reset"),
]


@pytest.fixture
async def gw(mock: MockServer, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(mock, url, tmp_path, admin_token=TOKEN) as gateway:
        yield gateway


@pytest.fixture
async def client(gw: LiveGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as c:
        yield c


async def _state(gw: LiveGateway) -> tuple[Any, ...]:
    """Everything an admin write could change."""
    engine = gw.app.engine
    return (
        await asyncio.to_thread(repo.list_orgs, engine),
        await asyncio.to_thread(repo.list_keys, engine),
        await asyncio.to_thread(policy.list_limits, engine),
        await asyncio.to_thread(policy.list_tiers, engine),
        gw.app.switches.version,
        gw.app.route_table.fallbacks("gpt-4o-mini"),
    )


# ------------------------------------------------------------------------ nesting


@pytest.mark.parametrize(("method", "path"), WRITES)
async def test_deeply_nested_body_is_400(
    client: httpx.AsyncClient, gw: LiveGateway, method: str, path: str
) -> None:
    before = await _state(gw)
    for body in (
        b"[" * 1000 + b"]" * 1000,
        b'{"limits": {"daily_usd": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
        b"{" + b'"a": {' * (MAX_JSON_DEPTH + 1) + b"}" * (MAX_JSON_DEPTH + 2),
    ):
        r = await client.request(method, path, content=body, headers=AUTH)
        message = assert_admin_error(r, 400, "invalid_request_error")
        assert "nested" in message, message
    assert await _state(gw) == before


async def test_nesting_up_to_the_limit_parses(client: httpx.AsyncClient) -> None:
    # Exactly MAX_JSON_DEPTH levels (brackets in strings do not count) is read and refused
    # for its content, not for its depth.
    inner = b'"[[[{{{"'
    for _ in range(MAX_JSON_DEPTH - 1):
        inner = b"[" + inner + b"]"
    r = await client.put("/admin/limits", content=b'{"limits": ' + inner + b"}", headers=AUTH)
    message = assert_admin_error(r, 400, "invalid_request_error")
    assert "nested" not in message, message


async def test_decimal_amounts_stay_exact(client: httpx.AsyncClient, gw: LiveGateway) -> None:
    body = b'{"org": "acme", "scope": "org", "limits": {"daily_usd": 0.100000001}}'
    r = await client.put("/admin/limits", content=body, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["limits"][0]["limit"] == "0.100000001"
    (stored,) = await asyncio.to_thread(policy.list_limits, gw.app.engine)
    assert stored.amount == 100_000_001


# ------------------------------------------------------------------------ size


def _padded(size: int) -> bytes:
    """A valid PUT /admin/limits body of exactly ``size`` bytes (whitespace padding)."""
    body = b'{"org": "acme", "scope": "org", "limits": {"daily_usd": "7"}}'
    return body[:-1] + b" " * (size - len(body)) + b"}"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_over_the_cap_is_413(
    client: httpx.AsyncClient, gw: LiveGateway, chunked: bool
) -> None:
    before = await _state(gw)
    body = _padded(MAX_BODY_BYTES + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    content: Any = chunks() if chunked else body
    r = await client.put("/admin/limits", content=content, headers=AUTH)
    message = assert_admin_error(r, 413, "request_too_large")
    assert str(MAX_BODY_BYTES) in message
    assert await _state(gw) == before


async def test_body_at_the_cap_is_read(client: httpx.AsyncClient, gw: LiveGateway) -> None:
    r = await client.put("/admin/limits", content=_padded(MAX_BODY_BYTES), headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["limits"][0]["limit"] == "7"


async def test_declared_length_over_the_cap_is_413_unread(gw: LiveGateway) -> None:
    # Refused on the Content-Length header alone, while the client is still sending.
    host, port = gw.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /admin/keys HTTP/1.1\r\nhost: x\r\n"
            + f"authorization: Bearer {TOKEN}\r\n".encode()
            + f"content-length: {MAX_BODY_BYTES + 1}\r\n\r\n{{".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert b"content-type: application/json" in head.lower(), head


# ------------------------------------------------------------------------ 405


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/admin/keys", {"GET", "HEAD", "POST"}),
        ("TRACE", "/admin/tiers", {"GET", "HEAD"}),
        ("PATCH", "/admin/limits", {"GET", "HEAD", "PUT", "DELETE"}),
        ("GET", "/admin/tiers/pro", {"PUT", "DELETE"}),
        ("GET", "/admin/breakers/openai:gpt-4o-mini/reset", {"POST"}),
        ("POST", "/admin/switches", {"GET", "HEAD", "PUT"}),
    ],
)
async def test_405_is_json_and_names_every_allowed_method(
    client: httpx.AsyncClient, method: str, path: str, allowed: set[str]
) -> None:
    r = await client.request(method, path, headers=AUTH)
    message = assert_admin_error(r, 405, "invalid_request_error")
    assert method in message and path in message
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed


# ------------------------------------------------------------------------ database outage

# Every admin route that reads or writes the database, with a request it would serve.
DATABASE_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/admin/orgs", None),
    ("GET", "/admin/keys", None),
    ("GET", "/admin/keys?org=acme", None),
    ("POST", "/admin/keys", {"org": "acme", "name": "outage"}),
    ("POST", "/admin/keys/{key_id}/revoke", None),
    ("GET", "/admin/usage", None),
    ("GET", "/admin/usage?org=acme&since=1d", None),
    ("GET", "/admin/limits?org=acme", None),
    ("PUT", "/admin/limits", {"org": "acme", "scope": "org", "limits": {"daily_usd": "9"}}),
    ("DELETE", "/admin/limits", {"org": "acme", "scope": "org"}),
    ("GET", "/admin/budgets?org=acme", None),
    ("GET", "/admin/tiers", None),
    ("PUT", "/admin/tiers/pro", {"org": {"daily_usd": "3"}}),
    ("DELETE", "/admin/tiers/pro", None),
    ("PUT", "/admin/orgs/acme/tier", {"tier": "basic"}),
    ("GET", "/admin/switches", None),
    ("PUT", "/admin/switches", {"org": "acme", "feature": "embeddings", "enabled": False}),
    ("GET", "/admin/audit", None),
    ("PUT", "/admin/routes/gpt-4o-mini/fallbacks", {"fallbacks": ["claude-haiku-4-5"]}),
    ("POST", "/admin/breakers/openai:gpt-4o-mini/reset", {"actor": "ops"}),
    ("GET", "/admin/alerts", None),
    ("POST", "/admin/alerts/{alert_id}/resolve", None),
    ("GET", "/admin/escalations", None),
    ("PUT", "/admin/keys/{key_id}/options", {"session_clean_stop": True}),
]


async def test_database_outage_is_503_on_every_route_then_recovers(
    mock: MockServer, pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        live_gateway(mock, pg_url, tmp_path, admin_token=TOKEN) as gw,
        httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client,
    ):
        made = (await client.post("/admin/keys", json={"org": "acme"}, headers=AUTH)).json()
        r = await client.put("/admin/tiers/basic", json={"org": {"daily_usd": "1"}}, headers=AUTH)
        assert r.status_code == 200, r.text
        alert = await asyncio.to_thread(
            store_alerts.raise_alert,
            gw.app.engine,
            threshold_alert(
                LimitThresholdCrossed(
                    org_id=made["org_id"], scope="org", scope_id=made["org_id"], window="day",
                    metric="usd", threshold_pct=50, used="1", limit="2", window_key="until:1",
                )
            ),
        )  # fmt: skip
        assert alert is not None
        routes = [
            (method, path.format(key_id=made["id"], alert_id=alert.id), body)
            for method, path, body in DATABASE_ROUTES
        ]
        database = pg_url.rsplit("/", 1)[1]
        caplog.set_level(logging.WARNING)
        with database_down(pg_url):
            for method, path, body in routes:
                caplog.clear()
                r = await client.request(method, path, json=body, headers=AUTH)
                message = assert_admin_error(r, 503, "service_unavailable")
                assert (method, path, int(r.headers["retry-after"])) == (method, path, 5)
                assert database not in r.text and database not in message
                admin_lines = [
                    rec for rec in caplog.records if rec.name.startswith("costwarden.admin")
                ]
                assert len(admin_lines) == 1, (method, path, admin_lines)
                (line,) = admin_lines
                text = line.getMessage()
                assert line.levelno == logging.WARNING and line.exc_info is None, text
                assert "\n" not in text and "Traceback" not in caplog.text
                assert database not in text and "postgresql" not in text, text
                assert path.split("?")[0] in text and "503" in text, text
        # Back: every route answers again (the pool replaces its dead connections).
        for method, path, body in routes:
            r = await client.request(method, path, json=body, headers=AUTH)
            assert r.status_code in (200, 201), (method, path, r.status_code, r.text)


async def test_values_postgresql_cannot_hold_are_400(
    mock: MockServer, pg_url: str, tmp_path: Path
) -> None:
    # PostgreSQL text cannot hold NUL: such a value is the client's mistake, answered as one
    # (not a 500, nor the 503 of an outage), and nothing changes.
    async with (
        live_gateway(mock, pg_url, tmp_path, admin_token=TOKEN) as gw,
        httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client,
    ):
        before = await _state(gw)
        for method, path, body in [
            ("GET", "/admin/keys?org=a%00b", None),
            ("GET", "/admin/usage?org=a%00b", None),
            ("DELETE", "/admin/tiers/a%00b", None),
            ("PUT", "/admin/orgs/a%00b/tier", {"tier": None}),
            ("GET", "/admin/audit?action=switch.set%00", None),
            (
                "PUT",
                "/admin/limits",
                {"org": "acme", "scope": "user", "scope_id": "u\x00", "limits": {"daily_usd": 1}},
            ),
        ]:
            r = await client.request(method, path, json=body, headers=AUTH)
            assert_admin_error(r, 400, "invalid_request_error")
        assert await _state(gw) == before
