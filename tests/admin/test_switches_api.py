"""Kill switch, toggles and audit log through the admin API (httpx's ASGI transport).

A write is live in the gateway serving it at once (its SwitchBoard reloads), audited with the
actor ``admin-api``; switching everything off needs ``"confirm": "disable-all"``; bad input is
a 400 (404 for an unknown org) that changes nothing. SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from costwarden.app.factory import CostwardenApp, create_app
from costwarden.config.settings import load_settings
from costwarden.storage import repo
from costwarden.storage.audit import audit_entries
from costwarden.storage.switches import FEATURES, list_switches, switches_version
from tests.helpers import PROVIDER_ENV, gateway_toml

TOKEN = "adm-secret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MOCK_URL = "http://127.0.0.1:9"  # nothing listens there; these tests never call upstream
DEFAULT_MESSAGE = "AI features are temporarily disabled by the operator."


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[CostwardenApp]:
    settings = load_settings(
        text=gateway_toml(MOCK_URL, database_url),
        env={**PROVIDER_ENV, "COSTWARDEN_ADMIN_TOKEN": TOKEN},
    )
    gateway = create_app(settings)
    await gateway.startup()
    try:
        repo.ensure_org(gateway.engine, "acme")
        repo.ensure_org(gateway.engine, "beta")
        yield gateway
    finally:
        await gateway.shutdown()


@pytest.fixture
async def client(app: CostwardenApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=10) as c:
        yield c


def _org_id(app: CostwardenApp, name: str) -> str:
    record = repo.get_org_by_name(app.engine, name)
    assert record is not None
    return record.id


def _error(r: httpx.Response, status: int, kind: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    error = r.json()["error"]
    assert error["type"] == kind, error
    message: str = error["message"]
    assert message
    return message


def _snapshot(app: CostwardenApp) -> tuple[Any, ...]:
    """Everything a switch write may change: storage and the running gateway's view."""
    return (
        list_switches(app.engine),
        audit_entries(app.engine, limit=1000),
        app.switches.version,
        app.switches.switches,
    )


async def _put(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.put("/admin/switches", json=body, headers=AUTH)


# --------------------------------------------------------------------------- auth


async def test_switch_routes_require_the_token(
    client: httpx.AsyncClient, app: CostwardenApp
) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}):
        for method, path, body in (
            ("GET", "/admin/switches", None),
            ("PUT", "/admin/switches", {"org": "acme", "feature": "ai", "enabled": False}),
            ("GET", "/admin/audit", None),
        ):
            r = await client.request(method, path, json=body, headers=headers)
            message = _error(r, 401, "authentication_error")
            assert TOKEN not in message
    assert list_switches(app.engine) == [] and audit_entries(app.engine) == []


# --------------------------------------------------------------------------- writes


async def test_org_switch_is_live_at_once_and_audited(
    client: httpx.AsyncClient, app: CostwardenApp
) -> None:
    acme, beta = _org_id(app, "acme"), _org_id(app, "beta")
    r = await _put(client, org="acme", feature="ai", enabled=False, message="acme paused")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == f"org:{acme}:ai"
    assert (body["org"], body["org_id"], body["scope"]) == ("acme", acme, "org")
    assert (body["feature"], body["enabled"], body["message"]) == ("ai", False, "acme paused")
    assert (body["updated_by"], body["version"]) == ("admin-api", 1)

    # No poll interval to wait for: this gateway applied it before answering.
    refusal = app.switches.refusal(acme, "chat.completions", False)
    assert refusal is not None and refusal.message == "acme paused" and refusal.status == 503
    assert app.switches.refusal(beta, "chat.completions", False) is None

    listed = (await client.get("/admin/switches", headers=AUTH)).json()
    assert listed["version"] == 1
    assert [(s["org"], s["feature"], s["enabled"]) for s in listed["switches"]] == [
        ("acme", "ai", False)
    ]

    r = await _put(client, org="acme", feature="ai", enabled=True)
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["message"] is None
    assert app.switches.refusal(acme, "chat.completions", False) is None

    audit = (await client.get("/admin/audit", headers=AUTH)).json()["data"]
    # (only the switches' entries: a background job may audit an alert meanwhile)
    audit = [e for e in audit if e["action"].startswith("switch.")]
    assert [(e["actor"], e["action"], e["target"]) for e in audit] == [
        ("admin-api", "switch.set", f"org:{acme}:ai"),
        ("admin-api", "switch.set", f"org:{acme}:ai"),
    ]
    assert audit[0]["old_value"] == {"enabled": False, "message": "acme paused"}
    assert audit[0]["new_value"] == {"enabled": True, "message": None}
    assert audit[1]["old_value"] is None
    assert audit[1]["new_value"] == {"enabled": False, "message": "acme paused"}


async def test_feature_toggles(client: httpx.AsyncClient, app: CostwardenApp) -> None:
    acme = _org_id(app, "acme")
    assert (await _put(client, org=None, feature="streaming", enabled=False)).status_code == 200
    assert (await _put(client, feature="embeddings", enabled=False)).status_code == 200
    refusal = app.switches.refusal(acme, "chat.completions", True)
    assert refusal is not None and refusal.message == DEFAULT_MESSAGE
    assert app.switches.refusal(acme, "chat.completions", False) is None
    assert app.switches.refusal(None, "embeddings", False) is not None
    assert app.switches.refusal(None, "messages", False) is None


async def test_everything_off_needs_the_confirmation(
    client: httpx.AsyncClient, app: CostwardenApp
) -> None:
    acme = _org_id(app, "acme")
    before = _snapshot(app)
    for extra in ({}, {"confirm": "yes"}, {"confirm": True}, {"confirm": "DISABLE-ALL"}):
        r = await _put(client, org=None, feature="ai", enabled=False, **extra)
        message = _error(r, 400, "invalid_request_error")
        assert "disable-all" in message
    assert _snapshot(app) == before
    assert app.switches.refusal(acme, "messages", False) is None

    r = await _put(
        client, org=None, feature="ai", enabled=False, message="all off", confirm="disable-all"
    )
    assert r.status_code == 200, r.text
    for org_id in (acme, None):
        for endpoint in ("chat.completions", "embeddings", "messages"):
            refusal = app.switches.refusal(org_id, endpoint, False)
            assert refusal is not None and refusal.message == "all off"
    # Switching it back on needs no confirmation.
    assert (await _put(client, org=None, feature="ai", enabled=True)).status_code == 200
    assert app.switches.refusal(acme, "messages", False) is None


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"org": "acme", "feature": "ai", "enabled": False, "reason": "x"}, 400, "'reason'"),
        ({"org": "nope", "feature": "ai", "enabled": False}, 404, "unknown org 'nope'"),
        ({"org": "acme", "feature": "chat", "enabled": False}, 400, ", ".join(FEATURES)),
        ({"org": "acme", "enabled": False}, 400, "'feature' is required"),
        ({"org": "acme", "feature": "ai"}, 400, "'enabled' is required"),
        ({"org": "acme", "feature": "ai", "enabled": "false"}, 400, "'enabled'"),
        ({"org": "acme", "feature": "ai", "enabled": 0}, 400, "'enabled'"),
        ({"org": 5, "feature": "ai", "enabled": False}, 400, "'org'"),
        ({"org": "acme", "feature": "ai", "enabled": False, "message": 1}, 400, "'message'"),
        ({"org": "acme", "feature": "ai", "enabled": False, "message": "a\nb"}, 400, "control"),
        ({"org": "acme", "feature": "ai", "enabled": False, "confirm": "x"}, 400, "'confirm'"),
        (["not", "an", "object"], 400, "JSON object"),
    ],
)
async def test_bad_input_changes_nothing(
    client: httpx.AsyncClient, app: CostwardenApp, body: Any, status: int, needle: str
) -> None:
    await _put(client, org="beta", feature="messages", enabled=False)
    before = _snapshot(app)
    r = await client.put("/admin/switches", json=body, headers=AUTH)
    message = _error(r, status, "not_found" if status == 404 else "invalid_request_error")
    assert needle in message, message
    assert _snapshot(app) == before
    assert switches_version(app.engine) == 1


async def test_body_that_is_not_json(client: httpx.AsyncClient, app: CostwardenApp) -> None:
    r = await client.put("/admin/switches", content=b"{nope", headers=AUTH)
    assert "not valid JSON" in _error(r, 400, "invalid_request_error")
    assert list_switches(app.engine) == []


# --------------------------------------------------------------------------- audit


async def test_audit_limit_and_action(client: httpx.AsyncClient, app: CostwardenApp) -> None:
    for i in range(3):
        await _put(client, org="acme", feature="messages", enabled=i % 2 == 1, message=f"m{i}")
    r = await client.get("/admin/audit", params={"limit": 2}, headers=AUTH)
    data = r.json()["data"]
    assert [e["new_value"] for e in data] == [
        {"enabled": False, "message": "m2"},
        {"enabled": True, "message": "m1"},
    ]
    r = await client.get("/admin/audit", params={"action": "switch.set"}, headers=AUTH)
    assert len(r.json()["data"]) == 3
    r = await client.get("/admin/audit", params={"action": "breaker.reset"}, headers=AUTH)
    assert r.json()["data"] == []
    for bad in ("0", "abc", "1001", "-5"):
        r = await client.get("/admin/audit", params={"limit": bad}, headers=AUTH)
        assert "limit" in _error(r, 400, "invalid_request_error")


async def test_switch_paths_are_documented(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/admin/openapi.json")).json()
    assert set(spec["paths"]["/admin/switches"]) == {"get", "put"}
    assert set(spec["paths"]["/admin/audit"]) == {"get"}
    put = spec["paths"]["/admin/switches"]["put"]["requestBody"]["content"]["application/json"]
    for branch in put["schema"]["anyOf"]:
        fields = {"org", "feature", "enabled", "message", "confirm"}
        assert set(branch["properties"]) == fields and branch["additionalProperties"] is False
    assert spec["components"]["schemas"]["Switch"]["properties"]["feature"]["enum"] == list(
        FEATURES
    )
