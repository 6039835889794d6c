"""``GET /admin/events`` against a live gateway (loopback, SQLite and PostgreSQL): the
request pipeline's events with the official SDKs as clients, kind and org filters, and bad
input (unknown kind 400, unknown org 404, no token 401) changing nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from costwarden.mock import MockServer
from costwarden.storage import repo
from tests.helpers import live_gateway, sse_frames

TOKEN = "adm-events-secret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
HI: Any = [{"role": "user", "content": "hi"}]


async def test_the_pipeline_raises_settled_and_refused_events(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    async with live_gateway(mock, database_url, tmp_path, admin_token=TOKEN) as gw:
        oa = openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0)
        an = anthropic.AsyncAnthropic(base_url=gw.base_url, api_key=gw.key, max_retries=0)
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as http:
            async with http.stream("GET", "/admin/events", headers=AUTH) as r:
                assert r.status_code == 200
                done = await oa.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=HI
                )
                stream = await an.messages.create(
                    model="claude-haiku-4-5", max_tokens=20, messages=HI, stream=True
                )
                async for _ in stream:
                    pass
                with pytest.raises(openai.NotFoundError):
                    await oa.chat.completions.create(model="no-such-model", messages=HI)
                settled, streamed, refused = await sse_frames(r.aiter_lines(), count=3)
        await oa.close()
        await an.close()
        assert settled["event"] == "request_settled"
        data = settled["data"]
        assert data["request_id"] == done.headers["x-request-id"]
        assert data["key_id"] == gw.key_id and data["org_id"]
        assert (data["status"], data["http_status"], data["provider"]) == ("success", 200, "openai")
        assert data["input_tokens"] > 0 and data["output_tokens"] > 0
        assert float(data["cost_usd"]) > 0 and isinstance(data["cost_usd"], str)
        assert streamed["event"] == "request_settled" and streamed["data"]["streamed"] is True
        assert refused["event"] == "request_refused"
        assert (refused["data"]["status"], refused["data"]["http_status"]) == ("client_error", 404)
        assert int(settled["id"]) < int(streamed["id"]) < int(refused["id"])
        # nothing secret in what the stream carried
        text = orjson.dumps([settled, streamed, refused]).decode()
        assert gw.key not in text


async def test_kind_and_org_filters(mock: MockServer, database_url: str, tmp_path: Path) -> None:
    async with live_gateway(mock, database_url, tmp_path, admin_token=TOKEN) as gw:
        other_key, _ = repo.create_key(gw.app.engine, org="other-org")
        oa = openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0)
        other = openai.AsyncOpenAI(base_url=gw.openai_url, api_key=other_key, max_retries=0)
        await asyncio.sleep(0)
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as http:
            query = "/admin/events?kind=request_settled,switch_changed&org=other-org"
            async with http.stream("GET", query, headers=AUTH) as r:
                assert r.status_code == 200
                await asyncio.to_thread(gw.app.keys.load)
                await oa.chat.completions.create(model="gpt-4o-mini", messages=HI)
                with pytest.raises(openai.NotFoundError):
                    await other.chat.completions.create(model="nope", messages=HI)
                await other.chat.completions.create(model="gpt-4o-mini", messages=HI)
                put = await http.put(
                    "/admin/switches",
                    json={"org": "other-org", "feature": "streaming", "enabled": False},
                    headers=AUTH,
                )
                assert put.status_code == 200, put.text
                settled, switched = await sse_frames(r.aiter_lines(), count=2)
        await oa.close()
        await other.close()
        assert settled["event"] == "request_settled"
        assert settled["data"]["org_id"] == switched["data"]["org_id"] != gw.app.keys.lookup(
            gw.key
        ).org_id  # type: ignore[union-attr]
        assert switched["event"] == "switch_changed"
        assert (switched["data"]["feature"], switched["data"]["enabled"]) == ("streaming", False)


@pytest.mark.parametrize(
    ("query", "headers", "status", "kind"),
    [
        ("?kind=no_such_kind", AUTH, 400, "invalid_request_error"),
        ("?kind=request_settled,bogus", AUTH, 400, "invalid_request_error"),
        ("?kind=", AUTH, 400, "invalid_request_error"),
        ("?kind=request_settled,%20switch_changed", AUTH, 400, "invalid_request_error"),
        ("?org=nobody", AUTH, 404, "not_found"),
        ("?org=%20", AUTH, 400, "invalid_request_error"),
        ("", {}, 401, "authentication_error"),
        ("", {**AUTH, "last-event-id": "12x"}, 400, "invalid_request_error"),
    ],
)
async def test_bad_input_is_refused(
    mock: MockServer,
    tmp_path: Path,
    query: str,
    headers: dict[str, str],
    status: int,
    kind: str,
) -> None:
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(mock, url, tmp_path, admin_token=TOKEN) as gw:
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as http:
            r = await http.get("/admin/events" + query, headers=headers)
        assert r.status_code == status, r.text
        assert r.json()["error"]["type"] == kind
        assert gw.app.events.subscribers == 0
