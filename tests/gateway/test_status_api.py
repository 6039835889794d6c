"""``/v1/costwarden/status``, its event stream and the banner's script, on a live gateway:
the proxy's 401 for a key it refuses, ``disabled`` with the operator's message within a
second of the kill switch (on the stream too), ``degraded`` for an open breaker and for a
budget nearly spent, and nothing of one org in another's status or stream."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from costwarden.gateway import status_api
from costwarden.mock import MockServer
from costwarden.storage import repo
from tests.helpers import PRICEY, LiveGateway, chat, configure_mock, live_gateway, set_limits

TOKEN = "adm-status"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
STATUS = "/v1/costwarden/status"
EVENTS = "/v1/costwarden/status/events"
SCRIPT = Path(status_api.__file__).parent.parent / "static" / "costwarden-banner.js"


@pytest.fixture
async def gw(mock: MockServer, database_url: str, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with live_gateway(
        mock, database_url, tmp_path, admin_token=TOKEN, extra_toml=PRICEY
    ) as live:
        yield live


async def _get(gw: LiveGateway, path: str, key: str | None) -> tuple[int, Any, dict[str, str]]:
    headers = {} if key is None else {"authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.base_url + path, headers=headers) as r:
            raw = await r.read()
            hdrs = {k.lower(): v for k, v in r.headers.items()}
            is_json = hdrs.get("content-type", "").startswith("application/json")
            body = orjson.loads(raw) if is_json else raw
            return r.status, body, hdrs


async def _status(gw: LiveGateway, key: str | None = None) -> dict[str, Any]:
    status, body, _ = await _get(gw, STATUS, key or gw.key)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def _switch(gw: LiveGateway, **body: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.put(gw.base_url + "/admin/switches", json=body, headers=ADMIN) as r:
            assert r.status == 200, await r.text()


def _other_key(gw: LiveGateway) -> str:
    key, record = repo.create_key(gw.app.engine, org="beta", project="app")
    gw.app.keys.apply([record])
    return key


class Stream:
    """A status stream read frame by frame (comments included, as ``None``)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 1.0) -> dict[str, Any] | None:
        lines: list[bytes] = []
        async with asyncio.timeout(timeout):
            while True:
                line = await self.response.content.readline()
                assert line, "the stream ended"
                if line == b"\n":
                    break
                lines.append(line.rstrip(b"\n"))
        if all(line.startswith(b":") for line in lines):
            return None
        assert lines[0] == b"event: status", lines
        assert lines[1].startswith(b"data: ")
        data: dict[str, Any] = orjson.loads(lines[1][6:])
        return data

    async def status(self, timeout: float = 1.0) -> dict[str, Any]:
        while True:
            frame = await self.next(timeout)
            if frame is not None:
                return frame

    async def nothing_for(self, seconds: float) -> None:
        try:
            frame = await self.next(seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame {frame!r}")


@asynccontextmanager
async def _stream(gw: LiveGateway, key: str | None = None) -> AsyncIterator[Stream]:
    async with aiohttp.ClientSession() as http:
        headers = {"x-api-key": key or gw.key}
        async with http.get(gw.base_url + EVENTS, headers=headers) as r:
            assert r.status == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            yield Stream(r)


# ---------------------------------------------------------------------- authentication


async def test_no_or_unknown_key_gets_the_proxys_401(gw: LiveGateway) -> None:
    for key in (None, "sk-cw-not-a-key"):
        proxy_status, proxy_body = await _chat_with(gw, key)
        for path in (STATUS, EVENTS):
            status, body, headers = await _get(gw, path, key)
            assert (status, body) == (proxy_status, proxy_body)
            assert status == 401 and body["error"]["type"] == "authentication_error"
            assert headers["content-type"] == "application/json"


async def _chat_with(gw: LiveGateway, key: str | None) -> tuple[int, dict[str, Any]]:
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    headers = {} if key is None else {"authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http:
        url = gw.openai_url + "/chat/completions"
        async with http.post(url, json=payload, headers=headers) as r:
            return r.status, orjson.loads(await r.read())


async def test_a_revoked_key_gets_the_proxys_401(gw: LiveGateway) -> None:
    gw.app.keys.apply([repo.revoke_key(gw.app.engine, gw.key_id)])
    proxy_status, proxy_body, _ = await chat(gw)
    status, body, _ = await _get(gw, STATUS, gw.key)
    assert (status, body) == (proxy_status, proxy_body) == (401, proxy_body)
    assert "revoked" in body["error"]["message"]


# ---------------------------------------------------------------------- the status


async def test_ok_then_the_kill_switch_disables_live(gw: LiveGateway) -> None:
    first = await _status(gw)
    assert first["status"] == "ok" and first["message"] is None and first["budget"] is None
    assert first["checked_at"].endswith("Z")
    async with _stream(gw) as stream:
        assert (await stream.status())["status"] == "ok"
        await _switch(gw, org="acme", feature="ai", enabled=False, message="Back at 3 pm.")
        live = await stream.status(timeout=1.0)
        assert (live["status"], live["message"]) == ("disabled", "Back at 3 pm.")
        assert (await _status(gw))["status"] == "disabled"
        await _switch(gw, org="acme", feature="ai", enabled=True)
        assert (await stream.status(timeout=1.0))["status"] == "ok"


async def test_a_feature_off_is_degraded_with_its_message(gw: LiveGateway) -> None:
    await _switch(gw, org="acme", feature="streaming", enabled=False, message="No streaming.")
    body = await _status(gw)
    assert (body["status"], body["message"], body["reasons"]) == (
        "degraded", "No streaming.", ["feature_off"],
    )  # fmt: skip


async def test_an_open_breaker_is_degraded(gw: LiveGateway) -> None:
    breakers = gw.app.breakers
    deployment = breakers.deployments[0]
    async with _stream(gw) as stream:
        assert (await stream.status())["status"] == "ok"
        for _ in range(5):
            breakers.failure(deployment, "test: upstream down")
        assert breakers.state(deployment) != "closed"
        live = await stream.status(timeout=1.0)
        assert (live["status"], live["message"], live["reasons"]) == (
            "degraded", None, ["breaker_open"],
        )  # fmt: skip
        body = await _status(gw)
        assert body["status"] == "degraded"
        assert deployment not in orjson.dumps(body).decode()  # which one is not told
        await breakers.reset(deployment, actor="test")
        assert (await stream.status(timeout=1.0))["status"] == "ok"


async def test_a_budget_nearly_spent_is_degraded_with_its_figures(
    gw: LiveGateway, mock: MockServer
) -> None:
    await configure_mock(mock, output_tokens=100)  # $0.1 a call at PRICEY's prices
    await set_limits(gw, "org", daily_usd="1")
    body = await _status(gw)
    assert body["status"] == "ok"
    budget = body["budget"]
    assert (budget["scope"], budget["window"], Decimal(budget["limit"])) == (
        "org", "day", Decimal(1),
    )  # fmt: skip
    assert Decimal(budget["percent_used"]) == 0 and budget["resets_at"].endswith("Z")
    async with _stream(gw) as stream:
        assert (await stream.status())["status"] == "ok"
        hi = [{"role": "user", "content": "hi"}]
        ask = {"model": "gpt-4o-mini", "max_tokens": 100, "messages": hi}
        for _ in range(9):
            status, _, _ = await chat(gw, ask)
            assert status == 200
        body = await _status(gw)
        assert (body["status"], body["reasons"]) == ("degraded", ["budget_near_limit"])
        assert Decimal(body["budget"]["percent_used"]) >= 90
        assert Decimal(body["budget"]["remaining"]) < Decimal("0.1")
        seen = await stream.status(timeout=1.0)  # the 90 % crossing, live
        while seen["status"] != "degraded":
            seen = await stream.status(timeout=1.0)
        assert seen["budget"]["percent_used"] >= "90"


# ---------------------------------------------------------------------- tenants


async def test_another_orgs_switch_is_neither_seen_nor_streamed(gw: LiveGateway) -> None:
    beta = await asyncio.to_thread(_other_key, gw)
    async with _stream(gw) as acme_stream, _stream(gw, beta) as beta_stream:
        assert (await acme_stream.status())["status"] == "ok"
        assert (await beta_stream.status())["status"] == "ok"
        await _switch(gw, org="acme", feature="ai", enabled=False, message="acme only")
        assert (await acme_stream.status())["status"] == "disabled"
        await beta_stream.nothing_for(1.0)
        body = await _status(gw, beta)
        assert (body["status"], body["message"]) == ("ok", None)
        assert "acme" not in orjson.dumps(body).decode()


async def test_a_closed_stream_ends_its_subscription(gw: LiveGateway) -> None:
    bus = gw.app.events
    before = len(bus._subscribers)  # the status streams subscribe in the background
    async with _stream(gw) as stream:
        await stream.status()
        assert len(bus._subscribers) == before + 1
    for _ in range(100):
        if len(bus._subscribers) == before:
            break
        await asyncio.sleep(0.02)
    assert len(bus._subscribers) == before


async def test_keep_alive_comments(gw: LiveGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_api, "KEEPALIVE_SECONDS", 0.2)
    async with _stream(gw) as stream:
        assert (await stream.next())["status"] == "ok"  # type: ignore[index]
        assert await stream.next(timeout=1.0) is None


# ---------------------------------------------------------------------- the component


async def test_the_banner_script_is_served(gw: LiveGateway) -> None:
    status, body, headers = await _get(gw, "/v1/costwarden/banner.js", None)
    assert status == 200
    assert headers["content-type"].startswith("text/javascript")
    assert "max-age" in headers["cache-control"] and headers["etag"]
    assert body == SCRIPT.read_bytes()
    assert b'customElements.define("costwarden-banner"' in body


async def test_cors_preflight_and_head(gw: LiveGateway) -> None:
    async with aiohttp.ClientSession() as http:
        headers = {"authorization": f"Bearer {gw.key}"}
        async with http.head(gw.base_url + EVENTS, headers=headers) as r:
            assert r.status == 200
            assert r.headers["content-type"].startswith("text/event-stream")
        async with http.options(
            gw.base_url + EVENTS,
            headers={
                "origin": "https://app.example",
                "access-control-request-headers": "authorization",
            },
        ) as r:
            assert r.status == 204
            assert r.headers["access-control-allow-origin"] == "*"
            assert "authorization" in r.headers["access-control-allow-headers"]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_banner_script_parses() -> None:
    node = shutil.which("node")
    assert node is not None
    done = subprocess.run([node, "--check", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
