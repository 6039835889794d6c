"""The server's connection protocol: request heads are capped, slow heads and bodies time out,
and ordinary clients (keep-alive, large bodies sent promptly) are unaffected.

Raw sockets (asyncio streams) against a live gateway on loopback, whose uvicorn runs
``GuardedHttpToolsProtocol`` through ``uvicorn_config``; the timeouts are made short here.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from costwarden.app.server import GuardedHttpToolsProtocol, uvicorn_config
from costwarden.config.settings import ServerSettings
from costwarden.mock import MockServer
from costwarden.storage.usage import ledger_rows
from tests.helpers import LiveGateway, chat, live_gateway

HEAD_TIMEOUT = 0.5
BODY_TIMEOUT = 1.0
LIMITS = {
    "COSTWARDEN_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
    "COSTWARDEN_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
}
MAX_HEAD = ServerSettings().max_header_bytes
# Room for a loaded test machine; every bound below is still far from "never".
SLACK = 1.5
CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


# A context window that a several-MB prompt fits in, so that such a request gets through.
WIDE = '[[deployments]]\nid = "openai:gpt-4o-mini"\ncontext_window = 100000000\n'


@pytest.fixture
async def gw(mock: MockServer, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    url = f"sqlite:///{tmp_path}/costwarden.db"
    async with live_gateway(mock, url, tmp_path, env=LIMITS, extra_toml=WIDE) as gateway:
        yield gateway


@contextlib.asynccontextmanager
async def _connection(gw: LiveGateway) -> AsyncIterator[Stream]:
    host, port = gw.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()
        # The server may have reset the connection after answering: that is its business.
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _head(
    gw: LiveGateway,
    *,
    path: str = "/v1/chat/completions",
    length: int = len(CHAT),
    pad: int = 0,
) -> bytes:
    """A chat request's head; ``pad`` bytes of an extra header's value make it larger."""
    lines = [
        f"POST {path} HTTP/1.1",
        "host: 127.0.0.1",
        f"authorization: Bearer {gw.key}",
        "content-type: application/json",
        f"content-length: {length}",
    ]
    if pad:
        lines.append("x-pad: " + "a" * pad)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _padded_to(gw: LiveGateway, size: int) -> bytes:
    """A chat request's head exactly ``size`` bytes long."""
    bare = len(_head(gw, pad=1)) - 1
    head = _head(gw, pad=size - bare)
    assert len(head) == size
    return head


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


async def _closed(reader: asyncio.StreamReader) -> bool:
    """True when the server has closed its side: EOF (or a reset) with nothing more sent."""
    try:
        return await reader.read() == b""
    except ConnectionError:
        return True


async def _trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Send ``data`` a byte at a time, ``every`` seconds apart, until done or refused."""
    with contextlib.suppress(ConnectionError):
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)


async def _rows(gw: LiveGateway) -> list[Any]:
    await gw.app.ledger.flush()
    return await asyncio.to_thread(ledger_rows, gw.app.engine)


# ---------------------------------------------------------------- head size


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")],
)
async def test_a_70_kib_head_gets_431_and_the_connection_is_closed(
    gw: LiveGateway, path: str, shape: str
) -> None:
    async with _connection(gw) as (reader, writer):
        started = time.monotonic()
        writer.write(_head(gw, path=path, pad=70 * 1024) + CHAT)
        status, headers, body = await asyncio.wait_for(_response(reader), SLACK)
        assert status == 431
        assert headers["content-type"] == "application/json"
        assert headers["connection"] == "close"
        error = orjson.loads(body)["error"]
        assert error["type"] == "request_too_large"
        assert str(MAX_HEAD) in error["message"]
        if shape == "openai":
            assert error["code"] == "request_header_fields_too_large"
        else:
            assert orjson.loads(body)["type"] == "error"
        assert await asyncio.wait_for(_closed(reader), SLACK)
        assert time.monotonic() - started < SLACK
    assert gw.mock.state.requests == 0
    assert await _rows(gw) == []


async def test_a_1_mb_head_is_refused_at_once_and_others_are_served_meanwhile(
    gw: LiveGateway,
) -> None:
    async def huge() -> tuple[int, float]:
        async with _connection(gw) as (reader, writer):
            started = time.monotonic()
            writer.write(_head(gw, pad=1024 * 1024) + CHAT)
            status, _, _ = await asyncio.wait_for(_response(reader), SLACK)
            return status, time.monotonic() - started

    async def normal() -> tuple[int, float]:
        started = time.monotonic()
        status, _, _ = await chat(gw)
        return status, time.monotonic() - started

    (huge_status, huge_took), (status, took) = await asyncio.gather(huge(), normal())
    assert huge_status == 431
    assert huge_took < 0.5
    assert status == 200
    assert took < 0.5


async def test_the_cap_counts_the_head_exactly_even_with_the_body_in_the_same_read(
    gw: LiveGateway,
) -> None:
    async with _connection(gw) as (reader, writer):
        writer.write(_padded_to(gw, MAX_HEAD) + CHAT)
        status, _, _ = await asyncio.wait_for(_response(reader), SLACK)
        assert status == 200
    async with _connection(gw) as (reader, writer):
        writer.write(_padded_to(gw, MAX_HEAD + 1) + CHAT)
        status, _, _ = await asyncio.wait_for(_response(reader), SLACK)
        assert status == 431


async def test_keep_alive_requests_each_get_the_whole_head_budget(gw: LiveGateway) -> None:
    """Five 40 KiB heads on one connection (200 KiB in all), idle for longer than the head
    timeout between them: the budget and the deadline are per request, idling is
    keep-alive's business."""
    async with _connection(gw) as (reader, writer):
        for _ in range(5):
            writer.write(_head(gw, pad=40 * 1024) + CHAT)
            status, headers, body = await asyncio.wait_for(_response(reader), SLACK)
            assert status == 200, body
            assert headers.get("connection") != "close"
            await asyncio.sleep(HEAD_TIMEOUT * 1.5)
    assert gw.mock.state.requests == 5


async def test_pipelined_requests_split_across_reads_are_all_served(gw: LiveGateway) -> None:
    """Three requests in one stream, cut into 37-byte reads: heads and bodies span reads
    and share them, and every deadline armed on the way is cancelled in time."""
    data = (_head(gw) + CHAT) * 3
    async with _connection(gw) as (reader, writer):
        for i in range(0, len(data), 37):
            writer.write(data[i : i + 37])
            await writer.drain()
            await asyncio.sleep(0.001)
        for _ in range(3):
            status, _, _ = await asyncio.wait_for(_response(reader), SLACK)
            assert status == 200
        await asyncio.sleep(BODY_TIMEOUT + 0.2)
        writer.write(_head(gw) + CHAT)  # still open: no deadline fired meanwhile
        status, _, _ = await asyncio.wait_for(_response(reader), SLACK)
        assert status == 200
    assert gw.mock.state.requests == 4


async def test_a_large_body_sent_promptly_is_served(gw: LiveGateway) -> None:
    message = {"role": "user", "content": "x" * (6 * 1024 * 1024)}
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [message]})
    async with _connection(gw) as (reader, writer):
        writer.write(_head(gw, length=len(body)) + body)
        status, _, answer = await asyncio.wait_for(_response(reader), 10)
        assert status == 200, answer[:300]
    assert gw.mock.state.requests == 1


# ---------------------------------------------------------------- slow heads


async def test_a_new_connection_that_sends_nothing_is_closed(gw: LiveGateway) -> None:
    async with _connection(gw) as (reader, _):
        started = time.monotonic()
        assert await asyncio.wait_for(_closed(reader), HEAD_TIMEOUT + SLACK)
        assert time.monotonic() - started >= HEAD_TIMEOUT * 0.9


@pytest.mark.parametrize("after_a_request", [False, True])
async def test_a_head_sent_a_byte_at_a_time_gets_408(
    gw: LiveGateway, after_a_request: bool
) -> None:
    async with _connection(gw) as (reader, writer):
        if after_a_request:  # the deadline of a kept-alive connection's next head
            writer.write(_head(gw) + CHAT)
            status, _, _ = await asyncio.wait_for(_response(reader), SLACK)
            assert status == 200
        started = time.monotonic()
        sender = asyncio.create_task(_trickle(writer, _head(gw) + CHAT, HEAD_TIMEOUT / 10))
        try:
            status, headers, body = await asyncio.wait_for(
                _response(reader), HEAD_TIMEOUT + SLACK
            )
            took = time.monotonic() - started
            assert status == 408
            assert headers["connection"] == "close"
            assert orjson.loads(body)["error"]["code"] == "request_timeout"
            assert HEAD_TIMEOUT * 0.9 <= took < HEAD_TIMEOUT + SLACK
            assert await asyncio.wait_for(_closed(reader), SLACK)
        finally:
            sender.cancel()
    assert gw.mock.state.requests == int(after_a_request)


# ---------------------------------------------------------------- slow bodies


async def test_a_body_that_never_arrives_gets_408_and_nothing_is_forwarded_or_billed(
    gw: LiveGateway,
) -> None:
    async with _connection(gw) as (reader, writer):
        started = time.monotonic()
        writer.write(_head(gw, length=len(CHAT) + 100) + CHAT)
        status, _, body = await asyncio.wait_for(_response(reader), BODY_TIMEOUT + SLACK)
        took = time.monotonic() - started
        assert status == 408
        assert "body" in orjson.loads(body)["error"]["message"]
        assert BODY_TIMEOUT * 0.9 <= took < BODY_TIMEOUT + SLACK
        assert await asyncio.wait_for(_closed(reader), SLACK)
    assert gw.mock.state.requests == 0
    assert await _rows(gw) == []


async def test_a_trickled_body_cannot_extend_the_deadline(gw: LiveGateway) -> None:
    """A byte every 50 ms keeps the connection busy, but the body is due as a whole."""
    async with _connection(gw) as (reader, writer):
        started = time.monotonic()
        writer.write(_head(gw, length=len(CHAT)))
        sender = asyncio.create_task(_trickle(writer, CHAT, 0.05))  # takes ~5 s
        try:
            status, _, _ = await asyncio.wait_for(_response(reader), BODY_TIMEOUT + SLACK)
            assert status == 408
            assert time.monotonic() - started < BODY_TIMEOUT + SLACK
        finally:
            sender.cancel()
    assert gw.mock.state.requests == 0
    assert await _rows(gw) == []


async def test_a_client_gone_mid_body_is_not_forwarded_or_billed(gw: LiveGateway) -> None:
    """The part that arrived is a whole JSON request, but the client announced more and
    hung up: nothing may go upstream and nothing is billed."""
    async with _connection(gw) as (_, writer):
        writer.write(_head(gw, length=len(CHAT) + 100) + CHAT)
        await writer.drain()
        await asyncio.sleep(0.3)  # the app has read what came
    await asyncio.sleep(0.3)  # and learns that the client is gone
    assert gw.mock.state.requests == 0
    assert await _rows(gw) == []
    # The gateway is fine afterwards.
    status, _, _ = await chat(gw)
    assert status == 200


# ---------------------------------------------------------------- wiring


async def test_the_gateway_runs_the_guarded_protocol_with_the_settings(
    gw: LiveGateway,
) -> None:
    config = uvicorn_config(gw.app, gw.app.settings)
    protocol = config.http
    assert isinstance(protocol, type) and issubclass(protocol, GuardedHttpToolsProtocol)
    assert protocol.max_header_bytes == MAX_HEAD
    assert (protocol.header_timeout, protocol.body_timeout) == (HEAD_TIMEOUT, BODY_TIMEOUT)
    assert config.ws == "none"


async def test_uvicorn_internals_the_protocol_relies_on() -> None:
    """GuardedHttpToolsProtocol subclasses uvicorn's httptools protocol and reads its state.
    pyproject.toml pins uvicorn's range; when a new uvicorn is allowed, this says what of
    it must still hold (read src/costwarden/server.py again if it does not)."""
    # uvicorn builds the protocol with these keywords, and the parser looks the callbacks
    # up on the instance, so the subclass's overrides are the ones called.
    params = list(inspect.signature(HttpToolsProtocol.__init__).parameters)
    assert params == ["self", "config", "server_state", "app_state", "_loop"]
    init = inspect.getsource(HttpToolsProtocol.__init__)
    assert "httptools.HttpRequestParser(self)" in init
    # data_received only feeds the parser, so feeding a read in two parts is the same.
    feed = inspect.getsource(HttpToolsProtocol.data_received)
    assert "self.parser.feed_data(data)" in feed
    # The request target is accumulated in self.url (the route of an error's shape).
    assert "self.url += url" in inspect.getsource(HttpToolsProtocol.on_url)
    # The end of a head is recognised by the new cycle uvicorn makes for it, and whether its
    # body came whole with it by the cycle's more_body, which the end of the message clears.
    assert "self.cycle = RequestResponseCycle(" in inspect.getsource(
        HttpToolsProtocol.on_headers_complete
    )
    assert "self.cycle.more_body = False" in inspect.getsource(
        HttpToolsProtocol.on_message_complete
    )
    # HeadWithBody takes a cycle's first write after response_started is set for its head;
    # the interim 100 Continue is written by receive() before the response starts.
    send = inspect.getsource(RequestResponseCycle.send)
    started = send.index("self.response_started = True")
    assert started < send.index('self.transport.write(b"".join(content))')
    assert send.count("self.transport.write(") == 3  # the head, a chunk, a body
    receive = inspect.getsource(RequestResponseCycle.receive)
    assert "if self.waiting_for_100_continue" in receive
    # A cycle's state: what tells "a response is under way" and "the client is gone".
    cycle = RequestResponseCycle(
        scope={"type": "http", "method": "POST"},
        transport=None,
        flow=FlowControl(None),
        logger=None,
        access_logger=None,
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=True,
        on_response=lambda: None,
    )
    assert (cycle.response_started, cycle.response_complete, cycle.disconnected) == (
        False,
        False,
        False,
    )
    assert cycle.more_body is True
    cycle.disconnected = True
    cycle.message_event.set()
    assert await cycle.receive() == {"type": "http.disconnect"}
    assert cycle.flow.read_paused is False
    # The protocol keeps these on itself.
    protocol = GuardedHttpToolsProtocol(
        config=uvicorn.Config(lambda: None),
        server_state=uvicorn.server.ServerState(),
        app_state={},
    )
    for name in ("loop", "cycle", "flow", "transport", "client"):
        assert hasattr(protocol, name), name
