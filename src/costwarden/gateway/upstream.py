"""The gateway's HTTP/1.1 client to providers: pooled keep-alive connections on asyncio.

Why not aiohttp or httpx: the client is most of a relay's cost. Measured on the benchmark
machine (docs/benchmarks.md, "Choosing the server and the client"), a bare pass-through at
64 connections cost 134 µs of CPU per request with aiohttp's client, 1,717 µs with httpx's
and 66 µs with this one; at one connection it answered in 0.31 ms against aiohttp's 0.42 ms.
A provider call needs little of what those clients offer, so this one does only that:

- HTTP/1.1 over TCP or TLS, one pool of idle keep-alive connections per origin (most
  recently used first, at most ``max_idle`` per origin, closed after ``idle_timeout``);
- bodies by content-length, chunked transfer coding (decoded by ``httptools``) or until the
  server closes;
- streamed bodies with flow control (reading pauses while ``_HIGH_WATER`` bytes wait);
- a connect timeout and one deadline for the whole exchange, body or stream included;
- a cap on the body bytes received and not yet read (``max_response_bytes``): a body read
  whole cannot pass it, a streamed one is held to it by flow control; past it the
  connection is cut and the read raises :class:`ResponseTooLarge`;
- one retry when a *reused* connection turns out closed before the server answered a single
  byte: the server dropped an idle connection as the request went out, so it never saw it.

Where a connection goes and with what TLS is the :class:`~costwarden.gateway.egress.Egress`'s
decision, made once per origin (the app builds it at start from the proxy variables and the
providers' TLS settings): directly, through an HTTP proxy's ``CONNECT`` tunnel for an https
origin, or to the proxy in absolute form for an http one. With no proxy configured a request
pays one attribute test for it; the plan is looked up only when a connection is made.

It sends no ``accept-encoding`` (providers then answer uncompressed) and follows no
redirects. Failures surface as built-in exceptions: ``TimeoutError`` when the deadline
passes, ``OSError`` (``ConnectionError``, ``ssl.SSLError``, DNS errors, the egress module's
``ProxyError``) when the connection cannot be made, breaks or carries something that is not
HTTP; the request path turns them into its 502/504 errors (gateway/transport.py).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import cast

import httptools

from costwarden.gateway.egress import Egress, Origin, Plan, split_url, tunnel

logger = logging.getLogger(__name__)

_HIGH_WATER = 256 * 1024  # streamed body bytes waiting for the reader before reading pauses


class ResponseTooLarge(ConnectionError):
    """The upstream sent more body than ``max_response_bytes`` before it was read."""
_LARGE_BODY = 64 * 1024  # above this, head and body are written without joining them


def _head(target: bytes, host: bytes, headers: Iterable[tuple[str, str]], length: int) -> bytes:
    lines = [b"POST ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    for name, value in headers:
        line = f"{name}: {value}\r\n"
        # A line break in a value would let it smuggle headers (or a request) upstream.
        if line.count("\n") != 1 or "\r" in line[:-2]:
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(line.encode("latin-1"))
    lines.append(b"content-length: %d\r\n\r\n" % length)
    return b"".join(lines)


class _Connection(asyncio.Protocol):
    """One TCP/TLS connection; carries one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without deriving from it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response.done:  # bytes nobody asked for: not to be trusted
            self.abort()
            return
        response.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response.fail(ConnectionError(f"upstream sent a malformed response ({exc})"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None and not response.done:
            if response.until_close and response.status:
                response.finish()  # a body without length ends when the connection does
            elif isinstance(exc, ssl.SSLError):  # e.g. the server demanded a client certificate
                response.fail(exc)
            else:
                response.fail(ConnectionError("upstream closed the connection"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        status = self.parser.get_status_code()
        headers = response.headers
        response.keep_alive = self.parser.should_keep_alive()
        response.until_close = (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and status not in (204, 304)
        )
        response.status = status
        if response.deadline is not None:
            response.headers_in()
        response.wake()

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response.feed(body)

    def on_message_complete(self) -> None:
        assert self.response is not None
        self.response.finish()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Response:
    """An upstream response: status and headers at once, the body read or streamed."""

    def __init__(
        self,
        conn: _Connection,
        client: UpstreamClient,
        origin: Origin,
        deadline: float,
        first_byte_deadline: float | None = None,
        limit: int = 1 << 62,
    ):
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = False
        self.until_close = False
        self.answered = False  # any byte came back
        self.done = False
        self._conn = conn
        self._client = client
        self._origin = origin
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._limit = limit
        self._streaming = False
        self._paused = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False
        loop = asyncio.get_running_loop()
        # Until the headers are in, the earlier of the two deadlines; then the whole one.
        self.deadline: float | None = None
        if first_byte_deadline is not None and first_byte_deadline < deadline:
            self.deadline = deadline
            deadline = first_byte_deadline
        self._timer: asyncio.TimerHandle | None = loop.call_at(deadline, self._expire)

    # fed by the connection

    def headers_in(self) -> None:
        """The first-byte deadline is met: the exchange is now bound by the whole deadline."""
        deadline, self.deadline = self.deadline, None
        if self._timer is not None and deadline is not None:
            self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(deadline, self._expire)

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > self._limit:
            self._chunks.clear()
            self.fail(ResponseTooLarge(f"{self._limit} bytes"))
            self._conn.abort()
            return
        if self._streaming and self._buffered > _HIGH_WATER and not self._paused:
            transport = self._conn.transport
            if transport is not None:
                transport.pause_reading()
                self._paused = True
        self.wake()

    def finish(self) -> None:
        self.done = True
        self._stop_timer()
        self.wake()

    def fail(self, exc: BaseException) -> None:
        if self.done:
            return
        self.done = True
        self._error = exc
        self._stop_timer()
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _expire(self) -> None:
        self._timer = None
        self.fail(TimeoutError("upstream did not answer in time"))
        self._conn.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # read by the request path

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def start(self) -> None:
        """Wait for the status line and headers."""
        while not self.status and not self.done:
            await self._wait()
        if not self.status:
            assert self._error is not None
            raise self._error

    async def read(self) -> bytes:
        """The whole body."""
        while not self.done:
            await self._wait()
        if self._error is not None:
            raise self._error
        body = b"".join(self._chunks)
        self._chunks.clear()
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: everything received since the last step, joined."""
        self._streaming = True
        while True:
            if self._chunks:
                data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                if self._paused:
                    self._paused = False
                    if self._conn.transport is not None and not self._conn.closed:
                        self._conn.transport.resume_reading()
                yield data
            elif self.done:
                if self._error is not None:
                    raise self._error
                return
            else:
                await self._wait()

    def release(self) -> None:
        """Hand the connection back for reuse if the exchange completed, else close it."""
        if self._released:
            return
        self._released = True
        self._stop_timer()
        conn = self._conn
        conn.response = None
        if self.done and self._error is None and self.keep_alive and not conn.closed:
            self._client._put_back(self._origin, conn)
        else:
            conn.abort()

    close = release  # before the end of the body, releasing *is* closing


class UpstreamClient:
    """Pools connections per origin; belongs to one event loop.

    ``egress`` decides how each origin is reached (default: directly, the system's trust);
    ``tls`` is the context of an https origin the egress has none for (default: the
    system's trust store).
    """

    def __init__(
        self,
        *,
        max_idle: int = 512,
        idle_timeout: float = 30.0,
        tls: ssl.SSLContext | None = None,
        max_response_bytes: int = 64 * 1024 * 1024,
        egress: Egress | None = None,
    ) -> None:
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.max_response_bytes = max_response_bytes
        self._idle: dict[Origin, list[_Connection]] = {}
        self._ssl = tls
        self._closed = False
        self.egress = egress or Egress()
        self._proxied = self.egress.proxied  # the only egress test a request pays unproxied
        self._plans: dict[Origin, Plan] = self.egress.plans()

    async def post(
        self,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        *,
        timeout: float,
        connect_timeout: float,
        first_byte_timeout: float | None = None,
    ) -> Response:
        """Send ``body`` and return once the response headers are in.

        ``timeout`` bounds the whole exchange, body or stream included: past it the
        connection is cut and the pending read raises TimeoutError. ``first_byte_timeout``
        bounds the wait for the response headers (connecting included).
        """
        if self._closed:
            raise ConnectionError("the upstream client is closed")
        origin, target, host = split_url(url)
        if self._proxied:
            proxy = self._plan(origin).proxy
            if proxy is not None and origin.scheme == "http":  # to the proxy, in absolute form
                target = b"http://" + host + target
                if proxy.authorization is not None:
                    auth = ("proxy-authorization", proxy.authorization)
                    headers = itertools.chain(headers, (auth,))
        head = _head(target, host, headers, len(body))
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + timeout
        first_byte = start + first_byte_timeout if first_byte_timeout is not None else None
        while True:
            conn = self._take_idle(origin, loop.time())
            if conn is None:
                remaining = (
                    min(deadline, first_byte if first_byte is not None else deadline) - loop.time()
                )
                conn = await self._connect(origin, min(connect_timeout, remaining))
            response = Response(
                conn, self, origin, deadline, first_byte, self.max_response_bytes
            )
            conn.response = response
            transport = conn.transport
            assert transport is not None
            if len(body) > _LARGE_BODY:
                transport.writelines((head, body))
            else:
                transport.write(head + body)
            try:
                await response.start()
            except ConnectionError:
                response.release()
                if conn.reused and not response.answered and loop.time() < deadline:
                    continue  # the server had dropped this idle connection: it saw nothing
                raise
            except BaseException:
                response.release()  # cancelled or timed out: the connection is not reusable
                raise
            return response

    async def close(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
        self._idle.clear()

    def _take_idle(self, origin: Origin, now: float) -> _Connection | None:
        conns = self._idle.get(origin)
        while conns:
            conn = conns.pop()
            if not conn.closed and now - conn.idle_since < self.idle_timeout:
                conn.reused = True
                return conn
            conn.abort()
        return None

    def _put_back(self, origin: Origin, conn: _Connection) -> None:
        conns = self._idle.setdefault(origin, [])
        if self._closed or len(conns) >= self.max_idle:
            conn.abort()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        conns.append(conn)

    def _plan(self, origin: Origin) -> Plan:
        plan = self._plans.get(origin)
        if plan is None:
            plan = self._plans[origin] = self.egress.plan(origin)
        return plan

    async def _connect(self, origin: Origin, timeout: float) -> _Connection:
        """A new connection to ``origin``; ``timeout`` bounds all of it: TCP, a proxy's
        CONNECT exchange and the TLS handshake."""
        if timeout <= 0:
            raise TimeoutError("upstream did not answer in time")
        plan = self._plan(origin)
        https = origin.scheme == "https"
        tls = (plan.tls or self._tls()) if https else None
        proxy = plan.proxy
        if proxy is not None and tls is not None:
            conn = _Connection()
            try:
                transport = await asyncio.wait_for(tunnel(proxy, origin, conn, tls), timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"connecting to {origin.host}:{origin.port} through the proxy {proxy} timed out"
                ) from None
            conn.connection_made(transport)
            return conn
        loop = asyncio.get_running_loop()
        host, port = (origin.host, origin.port) if proxy is None else (proxy.host, proxy.port)
        connect = loop.create_connection(
            _Connection, host, port, ssl=tls, server_hostname=origin.host if tls else None
        )
        try:
            _, conn = await asyncio.wait_for(connect, timeout)
        except TimeoutError:
            raise TimeoutError(f"connecting to {host}:{port} timed out") from None
        return conn

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl
