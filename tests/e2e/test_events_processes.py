"""Events across two real gateway processes on PostgreSQL + Redis (``costwarden serve`` x 2).

- an event raised in one reaches an SSE client of the other in < 100 ms at the 99th
  percentile (request_settled events of traffic through the first);
- a client that disconnects, misses 500 events and reconnects to the *other* process with
  ``Last-Event-ID`` receives exactly those 500, in order, and nothing else;
- a client that stops reading delays no one else, and is cut off with a last frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from costwarden.mock import MockServer
from tests.e2e.event_streams import (
    ADMIN_TOKEN,
    REDIS_URL,
    chat,
    connected,
    frames,
    gateways,
    percentile,
    take,
)

HI: Any = [{"role": "user", "content": "hi"}]
EVENTS = 8000


async def _requests(client: openai.AsyncOpenAI, count: int, concurrency: int = 8) -> list[str]:
    """``count`` chat completions; their request ids."""
    ids: list[str] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=HI
            )
            ids.append(raw.headers["x-request-id"])

    await asyncio.gather(*(one() for _ in range(count)))
    return ids


async def test_events_cross_processes_fast_and_resume_on_the_other(
    mock: MockServer, tmp_path: Path, shared_stack: str
) -> None:
    async with gateways(mock.base_url, shared_stack, REDIS_URL, tmp_path) as gw:
        one, two = gw.urls
        # Closed however the test ends: a client left to the collector warns from a closed
        # loop, which fails whichever test runs then.
        async with (
            openai.AsyncOpenAI(base_url=one + "/v1", api_key=gw.key, max_retries=0) as c1,
            openai.AsyncOpenAI(base_url=two + "/v1", api_key=gw.key, max_retries=0) as c1b,
            aiohttp.ClientSession() as http,
        ):
            # -- latency: raised in one, read from two
            on_two = await connected(frames(http, two, query="?kind=request_settled"))
            sent = await _requests(c1, 300, concurrency=4)
            got = await take(on_two, 300)
            assert sorted(f.data["request_id"] for f in got) == sorted(sent)
            ids = [f.id or 0 for f in got]
            assert ids == sorted(ids)
            delays = [(f.received - f.data["ts"]) * 1000 for f in got]
            p50, p99 = percentile(delays, 0.5), percentile(delays, 0.99)
            print(f"event from process 1 to an SSE client of process 2: p50 {p50:.1f} ms, "
                  f"p99 {p99:.1f} ms, max {max(delays):.1f} ms over {len(delays)} events")
            assert p99 < 100

            # -- resume: read one from process 1, go away, miss 500, come back to process 2
            first = await connected(frames(http, one))
            await _requests(c1, 1)
            (seen,) = await take(first, 1)
            await first.close()
            missed = await _requests(c1, 250) + await _requests(c1b, 250)
            assert seen.id is not None
            back = await connected(frames(http, two, after=seen.id))
            replay = await take(back, 500)
            assert [f.id for f in replay] == list(range(seen.id + 1, seen.id + 501))
            assert sorted(f.data["request_id"] for f in replay) == sorted(missed)
            with pytest.raises(TimeoutError):
                await take(back, 1, within=0.5)  # nothing twice, nothing else
            await back.close()
            await on_two.close()


async def test_a_client_that_stops_reading_delays_no_one(
    mock: MockServer, tmp_path: Path, shared_stack: str
) -> None:
    extra = "[events]\nclient_queue = 300\n"
    async with (
        gateways(mock.base_url, shared_stack, REDIS_URL, tmp_path, extra) as gw,
        contextlib.AsyncExitStack() as stack,
    ):
        one, two = gw.urls
        port = int(two.rsplit(":", 1)[1])
        # A client with a tiny receive buffer that never reads (closed however the test
        # ends: left to the collector, its warning would fail whichever test runs then).
        slow = socket.socket()
        stack.callback(slow.close)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", port))
        slow.sendall(
            f"GET /admin/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN_TOKEN}"
            "\r\n\r\n".encode()
        )
        async with aiohttp.ClientSession() as http:
            on_two = await connected(frames(http, two))
            # Enough to fill the slow client's socket buffers (the kernel lets a send
            # buffer grow to 4 MiB) and then its queue of 300.
            gate = asyncio.Semaphore(16)

            async def one_chat() -> None:
                async with gate:
                    await chat(http, one, gw.key)

            await asyncio.gather(*(one_chat() for _ in range(EVENTS)))
            got = await take(on_two, EVENTS, within=60)
            delays = [(f.received - f.data["ts"]) * 1000 for f in got]
            p99 = percentile(delays, 0.99)
            print(f"with a client that does not read: p99 {p99:.1f} ms over {len(got)} events")
            # A client that held the others up would show as seconds (its queue of 300 and
            # socket buffers filling first); 16 requests in flight on two cores put the p99
            # of everyone else at 93-109 ms on 2026-12-03, and at 157 ms on a slower machine
            # the same afternoon (the suite as a whole ran 38 % longer there).
            assert p99 < 400
            assert [f.id for f in got] == sorted(f.id or 0 for f in got)
            await on_two.close()
        # The slow client, reading at last: some events, then the cut-off frame.
        slow.settimeout(10)
        received = b""
        # Until the cut-off frame has arrived whole (its blank line), not just its first bytes.
        while b"\n\n" not in received.partition(b"event: stream_cut")[2]:
            chunk = slow.recv(65536)
            assert chunk, received[-500:]
            received += chunk
        assert received.count(b"event: request_settled") < EVENTS
        assert b'"last_event_id"' in received.split(b"event: stream_cut", 1)[1]
