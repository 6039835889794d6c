"""Upstreams that misbehave on purpose: echoed credentials, huge or endless bodies, streams
that are not streams, CRLF framing, and what exactly the gateway forwards.

Each upstream here is a ``HostileUpstream`` whose answers the test writes; the gateway is a
real one on loopback, its clients raw HTTP or the official SDKs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
from aiohttp import web

from costwarden.core.records import LedgerRecord
from costwarden.storage.usage import ledger_rows
from tests.helpers import (
    ANTHROPIC_SECRET,
    OPENAI_SECRET,
    HostileUpstream,
    LiveGateway,
    anthropic_error,
    live_gateway,
    openai_error,
)

CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES: dict[str, Any] = {
    "model": "claude-haiku-4-5",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "hi"}],
}
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
BODIES = {"openai": CHAT, "anthropic": MESSAGES}
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
# A model whose price genai-prices knows, as a second route for the duplicate-key test.
NANO = """
[[routes]]
model = "gpt-4.1-nano"
deployments = ["openai:gpt-4.1-nano"]
"""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def gw(
    hostile: HostileUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[LiveGateway]:
    monkeypatch.setenv("COSTWARDEN_MAX_RESPONSE_BYTES", str(1_000_000))
    async with live_gateway(
        hostile, f"sqlite:///{tmp_path}/h.db", tmp_path, timeout=20.0, extra_toml=NANO
    ) as g:
        yield g


async def _raw(
    gw: LiveGateway, wire: str, body: dict[str, Any]
) -> tuple[int, bytes, dict[str, str]]:
    headers = {"authorization": f"Bearer {gw.key}", "content-type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            gw.base_url + PATHS[wire], data=orjson.dumps(body), headers=headers
        ) as r:
            return r.status, await r.read(), {k.lower(): v for k, v in r.headers.items()}


async def _row(gw: LiveGateway, request_id: str) -> LedgerRecord:
    await gw.app.ledger.flush()
    rows = await asyncio.to_thread(ledger_rows, gw.app.engine, [request_id])
    assert len(rows) == 1, rows
    return rows[0]


def _credential(request: web.Request) -> str:
    """The credential the gateway sent, as a careless upstream would quote it back."""
    auth = request.headers.get("authorization", "")
    return auth.removeprefix("Bearer ") or request.headers.get("x-api-key", "")


def _sse(*events: dict[str, Any] | str, event_names: bool = False, eol: str = "\n") -> bytes:
    out = []
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        head = f"event: {event['type']}{eol}" if event_names and isinstance(event, dict) else ""
        out.append(f"{head}data: {data}{eol}{eol}")
    return "".join(out).encode()


def _chunk(content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _openai_stream(*texts: str, eol: str = "\n") -> list[bytes]:
    """An OpenAI stream as its events: one per text, the finish, the usage, [DONE]."""
    usage = {**_chunk(), "choices": [], "usage": USAGE}
    events = [_chunk(t) for t in texts] + [_chunk(finish="stop"), usage]
    return [_sse(e, eol=eol) for e in events] + [_sse("[DONE]", eol=eol)]


def _completion(content: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": USAGE,
    }


def _message(content: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": content}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 4},
    }


def _anthropic_stream(text: str, eol: str = "\n") -> list[bytes]:
    message = {**_message(""), "content": [], "usage": {"input_tokens": 9, "output_tokens": 1}}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 4},
        },
        {"type": "message_stop"},
    ]
    return [_sse(e, event_names=True, eol=eol) for e in events]


async def _stream(request: web.Request, events: list[bytes], **headers: str) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream", **headers})
    await resp.prepare(request)
    for event in events:
        await resp.write(event)
    await resp.write_eof()
    return resp


# ---------------------------------------------------------------------------- credentials


def _echo_error(status: int) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        key = _credential(request)
        body = {
            "error": {"message": f"Incorrect API key provided: {key}", "type": "x", "key": key},
            "type": "error",
        }
        # Retry-After is the one upstream header passed on: a credential must not ride on it.
        return web.json_response(body, status=status, headers={"retry-after": key})

    return handler


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
@pytest.mark.parametrize("status", [400, 404, 422, 429])
async def test_credentials_echoed_in_upstream_errors_are_scrubbed(
    gw: LiveGateway, hostile: HostileUpstream, wire: str, status: int
) -> None:
    hostile.handler = _echo_error(status)
    got, raw, headers = await _raw(gw, wire, BODIES[wire])
    assert got == status
    secret = OPENAI_SECRET if wire == "openai" else ANTHROPIC_SECRET
    assert hostile.headers and secret in json.dumps(hostile.headers[-1])  # it was sent...
    assert secret.encode() not in raw and secret not in json.dumps(headers)  # ...not returned
    assert b"Incorrect API key provided: [redacted]" in raw
    assert "retry-after" not in headers


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_credentials_in_successful_answers_are_scrubbed(
    gw: LiveGateway, hostile: HostileUpstream, wire: str
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        # The provider's key, a JSON-escaped copy of it, and the client's own virtual key.
        said = f"{_credential(request)} / {gw.key}"
        answer = _completion(said) if wire == "openai" else _message(said)
        return web.json_response(answer)

    hostile.handler = handler
    status, raw, _ = await _raw(gw, wire, BODIES[wire])
    assert status == 200
    for secret in (OPENAI_SECRET, ANTHROPIC_SECRET, gw.key):
        assert secret.encode() not in raw
    assert b"[redacted] / cw-[redacted]" in raw


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_credentials_in_streamed_events_are_scrubbed(
    gw: LiveGateway, hostile: HostileUpstream, wire: str
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        said = f"your key is {_credential(request)}"
        events = _openai_stream(said) if wire == "openai" else _anthropic_stream(said)
        return await _stream(request, events)

    hostile.handler = handler
    status, raw, headers = await _raw(gw, wire, {**BODIES[wire], "stream": True})
    assert status == 200
    assert OPENAI_SECRET.encode() not in raw and ANTHROPIC_SECRET.encode() not in raw
    assert b"your key is [redacted]" in raw
    row = await _row(gw, headers["x-request-id"])
    assert row.status == "success" and not row.cost_estimated


# ---------------------------------------------------------------------------- size and shape


async def test_an_oversized_body_is_cut_off_with_502(
    gw: LiveGateway, hostile: HostileUpstream
) -> None:
    cut_off = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "application/json"})
        resp.content_length = 200 * 1024 * 1024
        await resp.prepare(request)
        try:
            for _ in range(200 * 16):  # 200 MiB in 64 KiB writes
                await resp.write(b" " * 65536)
        except (ConnectionError, RuntimeError):
            cut_off.set()
        except asyncio.CancelledError:  # aiohttp may cancel a handler whose client hung up
            cut_off.set()
            raise
        return resp

    hostile.handler = handler
    started = time.monotonic()
    status, raw, headers = await _raw(gw, "openai", CHAT)
    assert status == 502
    error = openai_error(orjson.loads(raw))
    assert error["type"] == "upstream_error" and "1000000 bytes" in error["message"]
    await asyncio.wait_for(cut_off.wait(), 5)  # the gateway hung up: the rest was never sent
    assert time.monotonic() - started < 5
    row = await _row(gw, headers["x-request-id"])
    assert (row.status, row.http_status) == ("upstream_error", 502)


async def test_a_stream_event_that_never_ends_is_cut_off(
    gw: LiveGateway, hostile: HostileUpstream
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        events = [b"data: " + b"x" * 65536 for _ in range(40)]  # 2.5 MiB, no blank line
        return await _stream(request, events)

    hostile.handler = handler
    status, raw, headers = await _raw(gw, "openai", {**CHAT, "stream": True})
    assert status == 200  # the stream had begun; it ends with an error event
    assert b"upstream stream broke" in raw and b"1000000 bytes" in raw
    assert len(raw) < 10_000
    row = await _row(gw, headers["x-request-id"])
    assert row.status == "upstream_error"


async def test_a_long_event_costs_linear_time(hostile: HostileUpstream, tmp_path: Path) -> None:
    """16 MiB arriving 4 KiB at a time before its event ends: one pass, not one per chunk
    (rescanning and copying the backlog each time took minutes)."""
    size = 16 * 1024 * 1024

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"pad": "')
        for _ in range(size // 4096):
            await resp.write(b"x" * 4096)
            await asyncio.sleep(0)  # let the gateway read each piece on its own
        await resp.write(b'"}\n\n')
        for event in _openai_stream("done"):
            await resp.write(event)
        await resp.write_eof()
        return resp

    hostile.handler = handler
    async with live_gateway(hostile, f"sqlite:///{tmp_path}/l.db", tmp_path, timeout=60) as gw:
        started = time.monotonic()
        status, raw, headers = await _raw(gw, "openai", {**CHAT, "stream": True})
        elapsed = time.monotonic() - started
        assert status == 200 and len(raw) > size and raw.endswith(b"data: [DONE]\n\n")
        assert elapsed < 10, elapsed  # about 1 s; the old splitter took 33 s
        row = await _row(gw, headers["x-request-id"])
        assert row.status == "success" and not row.cost_estimated


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_a_stream_request_answered_with_json_is_an_upstream_error(
    gw: LiveGateway, hostile: HostileUpstream, wire: str
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(_completion("hi") if wire == "openai" else _message("hi"))

    hostile.handler = handler
    status, raw, headers = await _raw(gw, wire, {**BODIES[wire], "stream": True})
    assert status == 502
    body = orjson.loads(raw)
    error = openai_error(body) if wire == "openai" else anthropic_error(body)
    assert "not an event stream" in error["message"]
    row = await _row(gw, headers["x-request-id"])
    assert (row.status, row.http_status) == ("upstream_error", 502)
    # The whole answer was generated upstream: billed for the usage it reported.
    assert (row.input_tokens, row.output_tokens) == (9, 4) and not row.cost_estimated


# ---------------------------------------------------------------------------- CRLF framing


def _paced(events: list[bytes], first: int, go: asyncio.Event) -> Handler:
    """Sends ``first`` events, waits for ``go``, then the rest."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for event in events[:first]:
            await resp.write(event)
        await asyncio.wait_for(go.wait(), 10)
        for event in events[first:]:
            await resp.write(event)
        await resp.write_eof()
        return resp

    return handler


@pytest.mark.parametrize("eol", ["\r\n", "\r"])
async def test_crlf_framed_openai_stream_is_relayed_event_by_event(
    gw: LiveGateway, hostile: HostileUpstream, eol: str
) -> None:
    go = asyncio.Event()
    hostile.handler = _paced(_openai_stream("Hel", "lo", eol=eol), 1, go)
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as c:
        stream = await c.chat.completions.create(
            **CHAT, stream=True, stream_options={"include_usage": True}
        )
        first = await asyncio.wait_for(anext(aiter(stream)), 5)  # before the upstream ends
        assert first.choices[0].delta.content == "Hel"
        go.set()
        rest = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in rest if c.choices)
    assert text == "lo" and rest[-1].usage is not None and rest[-1].usage.completion_tokens == 4
    row = await _row(gw, stream.response.headers["x-request-id"])
    assert (row.status, row.output_tokens, row.cost_estimated) == ("success", 4, False)


async def test_crlf_framed_anthropic_stream_is_relayed_event_by_event(
    gw: LiveGateway, hostile: HostileUpstream
) -> None:
    go = asyncio.Event()
    hostile.handler = _paced(_anthropic_stream("Hello", eol="\r\n"), 3, go)
    async with anthropic.AsyncAnthropic(base_url=gw.base_url, api_key=gw.key, max_retries=0) as a:
        async with a.messages.stream(**MESSAGES) as s:
            events = aiter(s)
            kinds = [(await asyncio.wait_for(anext(events), 5)).type for _ in range(2)]
            assert kinds == ["message_start", "content_block_start"]
            go.set()
            final = await s.get_final_message()
            request_id = s.response.headers["x-request-id"]
    assert final.content[0].type == "text" and final.content[0].text == "Hello"
    assert final.usage.output_tokens == 4
    row = await _row(gw, request_id)
    assert (row.status, row.output_tokens, row.cost_estimated) == ("success", 4, False)


# ---------------------------------------------------------------------------- what is forwarded


async def test_a_duplicated_key_is_forwarded_as_billed(
    gw: LiveGateway, hostile: HostileUpstream
) -> None:
    """``model`` twice: billed as the last (nano) and forwarded with only that one, so an
    upstream reading the first key cannot serve the dearer model at nano's price."""

    def first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            out.setdefault(key, value)
        return out

    async def handler(request: web.Request) -> web.StreamResponse:
        read = json.loads(await request.read(), object_pairs_hook=first_wins)
        return web.json_response({**_completion("hi"), "model": read["model"]})

    hostile.handler = handler
    body = (
        b'{"model": "gpt-4o-mini", "max_tokens": 4000, "model": "gpt-4.1-nano",'
        b' "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}'
    )
    headers = {"authorization": f"Bearer {gw.key}", "content-type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.openai_url + "/chat/completions", data=body, headers=headers) as r:
            assert r.status == 200
            request_id = r.headers["x-request-id"]
    forwarded = hostile.bodies[-1]
    assert forwarded.count(b'"model"') == 1 and forwarded.count(b'"max_tokens"') == 1
    assert json.loads(forwarded)["model"] == "gpt-4.1-nano"
    assert json.loads(forwarded)["max_tokens"] == 5
    row = await _row(gw, request_id)
    assert (row.requested_model, row.served_model) == ("gpt-4.1-nano", "gpt-4.1-nano")
