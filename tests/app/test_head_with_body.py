"""``HeadWithBody``: a response's head goes out with its body's first bytes, in one write,
and never waits past the loop turn it was written in.

uvicorn's own response cycle writes through it here, on a real event loop; the socket under
it is a recorder of write calls (what a socket write would receive, in order).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from costwarden.app.head_with_body import HeadWithBody

OK_HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class _Writes:
    """A transport that records each write call as one item."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.calls.append(bytes(data))

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.calls.append(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


def _cycle(
    writes: _Writes, *, expect_100_continue: bool = False
) -> tuple[RequestResponseCycle, HeadWithBody]:
    cycle = RequestResponseCycle(
        scope={"type": "http", "method": "POST", "path": "/", "http_version": "1.1"},
        transport=None,
        flow=FlowControl(writes),
        logger=None,
        access_logger=None,
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=expect_100_continue,
        keep_alive=True,
        on_response=lambda: None,
    )
    held = HeadWithBody(writes, cycle, asyncio.get_running_loop())  # type: ignore[arg-type]
    cycle.transport = held
    return cycle, held


def _start(length: int | None = 2) -> dict[str, Any]:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    return {"type": "http.response.start", "status": 200, "headers": headers}


async def test_a_unary_answer_is_one_write() -> None:
    writes = _Writes()
    cycle, _ = _cycle(writes)
    await cycle.send(_start())
    await cycle.send({"type": "http.response.body", "body": b"ok"})
    assert writes.calls == [OK_HEAD + b"ok"]
    await asyncio.sleep(0)  # the head's fallback callback runs and finds nothing held
    assert writes.calls == [OK_HEAD + b"ok"]
    assert cycle.response_complete


async def test_a_head_with_no_body_in_its_turn_goes_out_alone_at_the_turn_s_end() -> None:
    writes = _Writes()
    cycle, _ = _cycle(writes)
    await cycle.send(_start(None))  # a stream: chunked, first event not there yet
    assert writes.calls == []
    await asyncio.sleep(0)
    assert len(writes.calls) == 1 and writes.calls[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes.calls[0].endswith(b"transfer-encoding: chunked\r\n\r\n")
    await cycle.send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    assert writes.calls[1] == b"9\r\ndata: 1\n\n\r\n"


async def test_a_large_body_follows_the_head_in_the_same_call() -> None:
    writes = _Writes()
    cycle, _ = _cycle(writes)
    body = b"x" * (200 * 1024)
    await cycle.send(_start(len(body)))
    await cycle.send({"type": "http.response.body", "body": body})
    assert len(writes.calls) == 1
    assert writes.calls[0].endswith(b"\r\n\r\n" + body)


async def test_100_continue_is_sent_at_once_and_the_head_still_joins_the_body() -> None:
    writes = _Writes()
    cycle, _ = _cycle(writes, expect_100_continue=True)
    cycle.more_body = False
    cycle.message_event.set()
    message = await cycle.receive()
    assert message["type"] == "http.request"
    assert writes.calls == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    await cycle.send(_start())
    await cycle.send({"type": "http.response.body", "body": b"ok"})
    assert writes.calls == [b"HTTP/1.1 100 Continue\r\n\r\n", OK_HEAD + b"ok"]


async def test_close_sends_a_held_head_first() -> None:
    writes = _Writes()
    cycle, held = _cycle(writes)
    await cycle.send(_start(None))
    held.close()
    assert writes.calls[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes.closed
    await asyncio.sleep(0)
    assert len(writes.calls) == 1  # not sent twice


async def test_a_head_held_when_the_connection_drops_is_not_written() -> None:
    writes = _Writes()
    cycle, held = _cycle(writes)
    await cycle.send(_start(None))
    writes.closed = True  # the protocol closed the socket itself (connection lost)
    await asyncio.sleep(0)
    assert writes.calls == []


@pytest.mark.parametrize("name", ["is_closing", "get_extra_info"])
async def test_everything_else_is_the_transport_s(name: str) -> None:
    writes = _Writes()
    _, held = _cycle(writes)
    assert getattr(held, name) == getattr(writes, name)
