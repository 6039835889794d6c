"""``HeadWithBody``: a response's head goes out with its body's first bytes, in one write,
and never waits past the loop turn it was written in.

uvicorn's own response cycle writes through it here, on a real event loop; the socket under
it is a recorder of write calls (what a socket write would receive, in order).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from costwarden.app.head_with_body import HeadWithBody
from tests.app.cycles import Writes, uvicorn_cycle

OK_HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def _cycle(
    writes: Writes, *, expect_100_continue: bool = False
) -> tuple[RequestResponseCycle, HeadWithBody]:
    cycle = uvicorn_cycle(writes, expect_100_continue=expect_100_continue)
    held = HeadWithBody(writes, cycle, asyncio.get_running_loop())  # type: ignore[arg-type]
    cycle.transport = held
    return cycle, held


def _start(length: int | None = 2) -> dict[str, Any]:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    return {"type": "http.response.start", "status": 200, "headers": headers}


async def test_a_unary_answer_is_one_write() -> None:
    writes = Writes()
    cycle, _ = _cycle(writes)
    await cycle.send(_start())
    await cycle.send({"type": "http.response.body", "body": b"ok"})
    assert writes.calls == [OK_HEAD + b"ok"]
    await asyncio.sleep(0)  # the head's fallback callback runs and finds nothing held
    assert writes.calls == [OK_HEAD + b"ok"]
    assert cycle.response_complete


async def test_a_head_with_no_body_in_its_turn_goes_out_alone_at_the_turn_s_end() -> None:
    writes = Writes()
    cycle, _ = _cycle(writes)
    await cycle.send(_start(None))  # a stream: chunked, first event not there yet
    assert writes.calls == []
    await asyncio.sleep(0)
    assert len(writes.calls) == 1 and writes.calls[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes.calls[0].endswith(b"transfer-encoding: chunked\r\n\r\n")
    await cycle.send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    assert writes.calls[1] == b"9\r\ndata: 1\n\n\r\n"


async def test_a_large_body_follows_the_head_in_the_same_call() -> None:
    writes = Writes()
    cycle, _ = _cycle(writes)
    body = b"x" * (200 * 1024)
    await cycle.send(_start(len(body)))
    await cycle.send({"type": "http.response.body", "body": body})
    assert len(writes.calls) == 1
    assert writes.calls[0].endswith(b"\r\n\r\n" + body)


async def test_100_continue_is_sent_at_once_and_the_head_still_joins_the_body() -> None:
    writes = Writes()
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
    writes = Writes()
    cycle, held = _cycle(writes)
    await cycle.send(_start(None))
    held.close()
    assert writes.calls[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes.closed
    await asyncio.sleep(0)
    assert len(writes.calls) == 1  # not sent twice


async def test_a_head_held_when_the_connection_drops_is_not_written() -> None:
    writes = Writes()
    cycle, held = _cycle(writes)
    await cycle.send(_start(None))
    writes.closed = True  # the protocol closed the socket itself (connection lost)
    await asyncio.sleep(0)
    assert writes.calls == []


@pytest.mark.parametrize("name", ["is_closing", "get_extra_info"])
async def test_everything_else_is_the_transport_s(name: str) -> None:
    writes = Writes()
    _, held = _cycle(writes)
    assert getattr(held, name) == getattr(writes, name)
