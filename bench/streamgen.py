#!/usr/bin/env python
"""A load generator for streamed chat completions: time to first token and to the end.

    python bench/streamgen.py --url http://127.0.0.1:8000/v1/chat/completions \\
        --body-file body.json [--header 'authorization: Bearer sk-...'] \\
        [--connections 16] [--duration 10] [--warmup 2]

``connections`` keep-alive HTTP/1.1 connections each send the body, read the SSE stream to
its end and send it again, for the warm-up and then the measured duration; no new request
starts after that, and the streams in flight are read to their end. Raw asyncio protocols on
uvloop, responses parsed by httptools (chunked encoding included), so a request costs the
generator little. It prints one JSON object: the figures of the measured streams (those
started within the measured duration), and the counts of the whole run.

Time to first token: from writing the request to receiving the first body bytes holding an
event with generated content (a non-empty ``"content"`` string; the role chunk has an empty
one). Total: to the end of the response. A stream counts as an error unless it is a 200
that carried content and ended with ``data: [DONE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import httptools
import uvloop

# The first event with generated content: `"content":"x` (or `"content": "x`, as some
# servers write their JSON), never `"content":""` nor `"content":null`.
_CONTENT = re.compile(rb'"content":\s?"[^"]')
_CARRY = 16  # bytes kept from the previous body piece: a match may straddle two
_DONE = b"data: [DONE]"
_DRAIN_S = 30.0  # how long the streams still in flight may take to end


class Run:
    """Shared state: the request, the clock, the figures."""

    def __init__(self, request: bytes, warmup_s: float, duration_s: float) -> None:
        self.request = request
        now = time.perf_counter()
        self.measure_from = now + warmup_s
        self.measure_to = self.measure_from + duration_s
        self.ttft: list[float] = []  # ms, measured streams
        self.total: list[float] = []
        self.completed_in_window = 0
        self.ok = 0  # 200 responses read to their end, warm-up and drain included
        self.sent = 0
        self.errors: dict[str, int] = {}
        self.in_flight = 0
        self.drained = asyncio.Event()

    @property
    def sending(self) -> bool:
        return time.perf_counter() < self.measure_to

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def finished(self, t0: float, first: float, end: float, problem: str | None) -> None:
        self.in_flight -= 1
        if problem:
            self.error(problem)
        elif self.measure_from <= t0 < self.measure_to:
            self.ttft.append((first - t0) * 1000.0)
            self.total.append((end - t0) * 1000.0)
        if self.measure_from <= end < self.measure_to and not problem:
            self.completed_in_window += 1
        if self.in_flight == 0 and not self.sending:
            self.drained.set()


class Conn(asyncio.Protocol):
    """One keep-alive connection sending the request again as each stream ends."""

    def __init__(self, run: Run, lost: asyncio.Future[None]) -> None:
        self.run = run
        self.lost = lost
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.busy = False
        self._reset()

    def _reset(self) -> None:
        self.t0 = self.first = 0.0
        self.status = 0
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.send()

    def send(self) -> None:
        if not self.run.sending or self.transport is None:
            self.close()
            return
        self._reset()
        self.busy = True
        self.run.in_flight += 1
        self.run.sent += 1
        self.t0 = time.perf_counter()
        self.transport.write(self.run.request)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if not self.first:
            if _CONTENT.search(self.tail + body):
                self.first = time.perf_counter()
        self.tail = (self.tail + body)[-_CARRY:]

    def on_message_complete(self) -> None:
        end = time.perf_counter()
        self.busy = False
        problem = None
        if self.status != 200:
            problem = f"status {self.status}"
        elif not self.first:
            problem = "no content"
        elif _DONE not in self.tail:
            problem = "no [DONE]"
        else:
            self.run.ok += 1
        self.run.finished(self.t0, self.first, end, problem)
        if self.parser.should_keep_alive():
            # Sent from the parser's callback: the next response cannot arrive before
            # this feed_data returns, so the parser is never re-entered.
            self.send()
        else:
            self.close()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail("bad response")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:
            self._fail("connection lost")
        self.transport = None
        if not self.lost.done():
            self.lost.set_result(None)

    def _fail(self, kind: str) -> None:
        if self.busy:
            self.busy = False
            self.run.finished(self.t0, 0.0, time.perf_counter(), kind)
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def client(run: Run, host: str, port: int) -> None:
    """One connection at a time, reconnecting while sending if the server closes it."""
    loop = asyncio.get_running_loop()
    while run.sending:
        lost: asyncio.Future[None] = loop.create_future()
        try:
            await loop.create_connection(functools.partial(Conn, run, lost), host, port)
        except OSError:
            run.error("connect")
            await asyncio.sleep(0.05)
            continue
        await lost


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    body = Path(args.body_file).read_bytes()
    head = [f"POST {url.path or '/'} HTTP/1.1", f"Host: {host}:{port}"]
    head += args.header
    head += [f"Content-Length: {len(body)}", "", ""]
    run = Run("\r\n".join(head).encode() + body, args.warmup, args.duration)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    tasks = [asyncio.create_task(client(run, host, port)) for _ in range(args.connections)]
    await asyncio.sleep(max(0.0, run.measure_to - time.perf_counter()))
    if run.in_flight:
        try:
            await asyncio.wait_for(run.drained.wait(), _DRAIN_S)
        except TimeoutError:
            run.error("still streaming at the end")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "connections": args.connections,
        "duration_s": args.duration,
        "streams": len(run.total),
        "streams_per_s": run.completed_in_window / args.duration,
        "ttft_ms": percentiles(run.ttft),
        "total_ms": percentiles(run.total),
        "ok_responses": run.ok,
        "sent": run.sent,
        "errors": run.errors,
        "cpu_share": cpu / wall if wall else 0.0,  # of one core: is the generator saturated?
    }


def percentiles(values: list[float]) -> dict[str, float]:
    """Nearest-rank p50, p90, p99 (NaN without samples)."""
    ordered = sorted(values)
    out = {}
    for q in (50, 90, 99):
        rank = math.ceil(q / 100 * len(ordered)) - 1
        out[f"p{q}"] = ordered[max(0, rank)] if ordered else float("nan")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", required=True, type=Path)
    parser.add_argument("--header", action="append", default=[], help="'name: value'")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.connections < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("connections and duration must be positive, warmup not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = uvloop.run(main_async(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
