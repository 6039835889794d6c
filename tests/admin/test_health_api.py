"""Deployment health, breaker resets and the live event stream through the admin API.

Health and resets run in-process (httpx.ASGITransport against create_app, SQLite and
PostgreSQL); the event stream needs a real server (ASGITransport collects whole bodies and
an event stream never ends), so it runs against a live gateway on loopback, and once as a
real ``costwarden serve`` process that must still stop promptly on SIGTERM with a stream open.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from costwarden.admin import events_api
from costwarden.app.factory import CostwardenApp, create_app
from costwarden.config.settings import load_settings
from costwarden.mock import MockServer
from costwarden.routing.breaker import CLOSED, OPEN
from costwarden.storage.audit import audit_entries
from tests.helpers import (
    PROVIDER_ENV,
    FakeClock,
    free_port,
    gateway_toml,
    live_gateway,
    spawn_gateway,
    sse_frames,
    stop_gateway,
    wait_healthy,
)

TOKEN = "adm-health-secret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
T0 = 1_800_000_000.0
MINI = "openai:gpt-4o-mini"
SLASHED = "openai:meta-llama/llama-3-8b"  # model names may contain "/"
EXTRA = f"""
[[routes]]
model = "llama"
deployments = ["{SLASHED}"]

[[deployments]]
id = "{SLASHED}"
price = {{ input_mtok = "1", output_mtok = "1" }}
"""
DEPLOYMENTS = sorted([MINI, "openai:text-embedding-3-small", "anthropic:claude-haiku-4-5", SLASHED])


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[CostwardenApp]:
    config = tmp_path / "costwarden.toml"
    config.write_text(gateway_toml("http://127.0.0.1:9", database_url, extra=EXTRA))
    env = {**os.environ, **PROVIDER_ENV, "COSTWARDEN_ADMIN_TOKEN": TOKEN}
    gateway = create_app(load_settings(config, env=env), clock=FakeClock(T0))
    await gateway.startup()
    try:
        yield gateway
    finally:
        await gateway.shutdown()


@pytest.fixture
async def client(app: CostwardenApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        yield c


def _trip(app: CostwardenApp, deployment: str = MINI) -> None:
    for _ in range(app.breakers.policy.failure_threshold):
        app.breakers.failure(deployment, "status 503")
    assert app.breakers.state(deployment) == OPEN


def _error(r: httpx.Response, status: int, kind: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    error = r.json()["error"]
    assert error["type"] == kind, error
    message: str = error["message"]
    assert message
    return message


def _reset_path(deployment: str) -> str:
    return f"/admin/breakers/{deployment.replace('/', '%2F')}/reset"


# --------------------------------------------------------------------------- health


async def test_health_lists_every_deployment(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/health/deployments", headers=AUTH)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["deployment"] for d in data] == DEPLOYMENTS
    for entry in data:
        assert entry["state"] == CLOSED
        assert entry["error_rate"] == 0.0 and entry["requests_in_window"] == 0
        assert entry["opened_at"] is None and entry["retry_at"] is None
        assert set(entry) >= {
            "last_success_at",
            "last_failure_at",
            "consecutive_failures",
        }


async def test_health_shows_an_open_breaker(client: httpx.AsyncClient, app: CostwardenApp) -> None:
    app.breakers.success(MINI)
    _trip(app)
    data = (await client.get("/admin/health/deployments", headers=AUTH)).json()["data"]
    mini = next(d for d in data if d["deployment"] == MINI)
    assert mini["state"] == OPEN
    assert mini["consecutive_failures"] == 5 and mini["requests_in_window"] == 6
    assert mini["error_rate"] == pytest.approx(5 / 6)
    assert mini["opened_at"] == "2027-01-15T08:00:00+00:00"
    assert mini["retry_at"] == "2027-01-15T08:01:00+00:00"
    assert mini["last_success_at"] == mini["last_failure_at"] == "2027-01-15T08:00:00+00:00"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/health/deployments"),
        ("POST", f"/admin/breakers/{MINI}/reset"),
        ("GET", "/admin/events"),
    ],
)
async def test_the_token_is_required(
    client: httpx.AsyncClient, app: CostwardenApp, method: str, path: str
) -> None:
    _trip(app)
    for headers in ({}, {"authorization": "Bearer wrong"}):
        r = await client.request(method, path, headers=headers)
        _error(r, 401, "authentication_error")
    assert app.breakers.state(MINI) == OPEN


# --------------------------------------------------------------------------- reset


async def test_reset_closes_and_is_audited(client: httpx.AsyncClient, app: CostwardenApp) -> None:
    _trip(app)
    r = await client.post(f"/admin/breakers/{MINI}/reset", headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["deployment"] == MINI and body["state"] == CLOSED
    assert body["reason"] == "reset by admin-api" and body["consecutive_failures"] == 0
    assert app.breakers.state(MINI) == CLOSED
    (entry,) = await asyncio.to_thread(audit_entries, app.engine, action="breaker.reset")
    assert (entry.actor, entry.target) == ("admin-api", MINI)
    assert entry.old_value["state"] == OPEN and entry.new_value == {"state": CLOSED}


async def test_reset_names_its_actor_and_takes_ids_with_slashes(
    client: httpx.AsyncClient, app: CostwardenApp
) -> None:
    _trip(app, SLASHED)
    r = await client.post(_reset_path(SLASHED), json={"actor": "cli:bob"}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["deployment"] == SLASHED
    assert app.breakers.state(SLASHED) == CLOSED
    (entry,) = await asyncio.to_thread(audit_entries, app.engine, action="breaker.reset")
    assert (entry.actor, entry.target) == ("cli:bob", SLASHED)


async def test_reset_of_a_closed_breaker_is_fine(client: httpx.AsyncClient) -> None:
    r = await client.post(f"/admin/breakers/{MINI}/reset", headers=AUTH)
    assert r.status_code == 200 and r.json()["state"] == CLOSED


async def test_reset_of_an_unknown_deployment_is_404(
    client: httpx.AsyncClient, app: CostwardenApp
) -> None:
    for deployment in ("openai:nope", "nothing", "openai:gpt-4o-mini/extra"):
        r = await client.post(_reset_path(deployment), headers=AUTH)
        message = _error(r, 404, "not_found")
        assert deployment in message and MINI in message
    assert await asyncio.to_thread(audit_entries, app.engine, action="breaker.reset") == []


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1]", b'{"actor": 5}', b'{"actor": ""}', b'{"who": "x"}'],
    ids=["bad-json", "not-object", "actor-number", "actor-empty", "unknown-field"],
)
async def test_bad_reset_bodies_change_nothing(
    client: httpx.AsyncClient, app: CostwardenApp, body: bytes
) -> None:
    _trip(app)
    r = await client.post(
        f"/admin/breakers/{MINI}/reset",
        content=body,
        headers={**AUTH, "content-type": "application/json"},
    )
    _error(r, 400, "invalid_request_error")
    assert app.breakers.state(MINI) == OPEN
    assert await asyncio.to_thread(audit_entries, app.engine, action="breaker.reset") == []


async def test_reset_wants_post(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/admin/breakers/{MINI}/reset", headers=AUTH)
    assert r.status_code == 405


async def test_paths_are_documented(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/admin/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths["/admin/health/deployments"]) == {"get"}
    assert set(paths["/admin/breakers/{deployment}/reset"]) == {"post"}
    assert set(paths["/admin/events"]) == {"get"}
    assert "DeploymentHealth" in spec["components"]["schemas"]


async def test_bad_last_event_id_is_400(client: httpx.AsyncClient) -> None:
    value: str | bytes
    for value in ("abc", "-1", "1.5", "²".encode("latin-1"), "9" * 30):
        r = await client.get("/admin/events", headers={**AUTH, "last-event-id": value})
        _error(r, 400, "invalid_request_error")


# --------------------------------------------------------------------------- events (SSE)


async def test_event_stream_delivers_and_resumes(
    mock: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_api, "HEARTBEAT_SECONDS", 0.2)
    url = f"sqlite:///{tmp_path}/cw.db"
    # Without alerts: an open breaker would also raise an alert_changed event in between.
    no_alerts = "[alerts]\nenabled = false\n"
    async with live_gateway(mock, url, tmp_path, admin_token=TOKEN, extra_toml=no_alerts) as gw:
        app = gw.app
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as http:
            async with http.stream("GET", "/admin/events", headers=AUTH) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                assert r.headers["cache-control"] == "no-cache"
                lines = r.aiter_lines()
                assert await anext(lines) == ": connected"
                _trip(app)
                (first,) = await sse_frames(lines, count=1, seconds=5)
                assert first["event"] == "breaker_changed"
                assert first["data"]["deployment"] == MINI
                assert (first["data"]["from"], first["data"]["to"]) == (CLOSED, OPEN)
                # silence: heartbeats keep the connection alive
                async with asyncio.timeout(2):
                    while (line := await anext(lines)) != ": heartbeat":
                        assert not line.startswith("id:"), line
            # while nobody listens, more happens
            await app.breakers.reset(MINI, actor="ops")
            _trip(app, "anthropic:claude-haiku-4-5")
            resume = {**AUTH, "last-event-id": first["id"]}
            async with http.stream("GET", "/admin/events", headers=resume) as r:
                missed = await sse_frames(r.aiter_lines(), count=2, seconds=5)
        assert [int(f["id"]) for f in missed] == [int(first["id"]) + 1, int(first["id"]) + 2]
        assert [(f["data"]["deployment"], f["data"]["to"]) for f in missed] == [
            (MINI, CLOSED),
            ("anthropic:claude-haiku-4-5", OPEN),
        ]
        assert missed[0]["data"]["reason"] == "reset by ops"
        await asyncio.sleep(0.3)  # the server notices the disconnects
        assert app.events.subscribers == 0


async def test_sigterm_with_an_event_stream_open(mock: MockServer, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "costwarden.toml"
    config.write_text(gateway_toml(mock.base_url, f"sqlite:///{tmp_path}/cw.db", port=port))
    log = tmp_path / "gateway.log"
    proc = spawn_gateway(config, log, env={"COSTWARDEN_ADMIN_TOKEN": TOKEN})
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(base, proc, log)
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            async with http.stream("GET", "/admin/events", headers=AUTH) as r:
                lines = r.aiter_lines()
                assert await anext(lines) == ": connected"
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(10):
                    async for _ in lines:  # the server ends the stream
                        pass
        code = await asyncio.to_thread(proc.wait, 10)
        assert time.monotonic() - started < 10
        assert code in (0, -signal.SIGTERM), log.read_text()
    finally:
        stop_gateway(proc)
