"""The gateway's upstream HTTP client against scripted raw servers on loopback.

Each server is a few lines of asyncio that answers exactly the bytes a test needs, so the
client meets the cases a real provider or a network produces: keep-alive, chunked and
unsized bodies, idle connections closed under it, bodies cut short, silence, garbage, TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from costwarden.gateway.upstream import UpstreamClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-test"}


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0

        self.tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            with contextlib.suppress(ConnectionError):
                await self.handler(reader, writer)
        finally:
            writer.close()
            self.tasks.discard(task)


@contextlib.asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(handler)
    srv = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=tls)
    server.port = srv.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        srv.close()
        for task in list(server.tasks):  # handlers still sleeping on a silent connection
            task.cancel()
        await asyncio.gather(*server.tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let the closed transports finish closing


async def read_request(reader: asyncio.StreamReader, server: Server) -> bytes | None:
    """One request (head and content-length body), or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    request = head + await reader.readexactly(length)
    server.requests.append(request)
    return request


def answer(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + b"".join(extra)
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


def url(server: Server, scheme: str = "http", host: str = "127.0.0.1") -> str:
    return f"{scheme}://{host}:{server.port}/v1/chat/completions"


async def post(client: UpstreamClient, target: str, body: bytes = b"{}", timeout: float = 5.0):
    return await client.post(target, HEADERS.items(), body, timeout=timeout, connect_timeout=2.0)


async def test_keep_alive_reuses_one_connection_and_sends_a_clean_head() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader, server) is not None:
            writer.write(answer(b'{"n":%d}' % len(server.requests)))

    async with serving(handler) as server:
        client = UpstreamClient()
        for n in range(1, 6):
            resp = await post(client, url(server), b'{"q":"hello"}')
            assert resp.status == 200 and resp.headers["content-type"] == "application/json"
            assert await resp.read() == b'{"n":%d}' % n
            resp.release()
        await client.close()
    assert server.connections == 1
    head, body = server.requests[0].split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert sorted(lines[1:]) == sorted(
        [
            b"host: 127.0.0.1:%d" % server.port,
            b"content-type: application/json",
            b"authorization: Bearer sk-test",
            b"content-length: 13",
        ]
    )
    assert body == b'{"q":"hello"}'


async def test_chunked_and_unsized_bodies() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (b"data: one\n\n", b"data: two\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
        await writer.drain()

    async with serving(handler) as server:
        client = UpstreamClient()
        resp = await post(client, url(server))
        assert [c async for c in resp.chunks()] == [b"data: one\n\n", b"data: two\n\n"]
        resp.release()
        resp = await post(client, url(server))
        assert await resp.read() == b"until the end"
        resp.release()
        await client.close()
    assert server.connections == 1


async def test_idle_connection_closed_by_the_server_is_retried_once() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, server)
        writer.write(answer(b"first"))  # keep-alive promised, then dropped while idle
        await writer.drain()

    async with serving(handler) as server:
        client = UpstreamClient()
        resp = await post(client, url(server))
        assert await resp.read() == b"first"
        resp.release()
        await asyncio.sleep(0.05)
        resp = await post(client, url(server))
        assert await resp.read() == b"first"
        resp.release()
        await client.close()
    assert server.connections == 2 and len(server.requests) == 2


async def test_body_cut_short_is_a_connection_error_and_the_connection_is_dropped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()

    async with serving(handler) as server:
        client = UpstreamClient()
        resp = await post(client, url(server))
        with pytest.raises(ConnectionError):
            await resp.read()
        resp.release()
        assert not any(client._idle.values())  # a broken connection is never reused
        await client.close()


async def test_silence_ends_at_the_deadline() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, server)
        await asyncio.sleep(10)

    async with serving(handler) as server:
        client = UpstreamClient()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await post(client, url(server), timeout=0.3)
        assert 0.25 < loop.time() - started < 2.0
        await client.close()


async def test_deadline_covers_a_stream_that_stalls() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(10)

    async with serving(handler) as server:
        client = UpstreamClient()
        resp = await post(client, url(server), timeout=0.3)
        received = []
        with pytest.raises(TimeoutError):
            async for chunk in resp.chunks():
                received.append(chunk)
        assert received == [b"hello"]
        resp.close()
        await client.close()


async def test_refused_and_garbage_are_os_errors() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, server)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    client = UpstreamClient()
    async with serving(handler) as server:
        garbage = url(server)
        with pytest.raises(ConnectionError):
            await post(client, garbage)
    with pytest.raises(OSError):
        await post(client, garbage)  # nothing listens there any more
    with pytest.raises(ValueError):
        await client.post(garbage, [("x-evil", "a\r\nhost: b")], b"", timeout=1, connect_timeout=1)
    await client.close()


async def test_large_stream_arrives_whole_through_flow_control() -> None:
    total = 4 * 1024 * 1024

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        block = bytes(range(256)) * 256
        for _ in range(total // len(block)):
            writer.write(block)
            await writer.drain()

    async with serving(handler) as server:
        client = UpstreamClient()
        resp = await post(client, url(server))
        size = 0
        async for chunk in resp.chunks():
            size += len(chunk)
            await asyncio.sleep(0.001)  # a slow reader: reading must pause, not buffer 4 MiB
        assert size == total
        resp.release()
        await client.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: no certificate for the TLS test")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_with_hostname_check(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader, server) is not None:
            writer.write(answer(b"secure"))

    async with serving(handler, tls=server_tls) as server:
        client = UpstreamClient(tls=ssl.create_default_context(cafile=str(cert)))
        for _ in range(2):
            resp = await post(client, url(server, "https", "localhost"))
            assert await resp.read() == b"secure"
            resp.release()
        assert server.connections == 1
        with pytest.raises(ssl.SSLError):  # the certificate does not name 127.0.0.1
            await post(client, url(server, "https", "127.0.0.1"))
        await client.close()
        untrusting = UpstreamClient()  # the system's trust store does not know our CA
        with pytest.raises(ssl.SSLError):
            await post(untrusting, url(server, "https", "localhost"))
        await untrusting.close()
