"""Egress: proxies from the environment and TLS per provider, on loopback only.

The upstream is the bundled mock behind a TLS-terminating forwarder (:class:`TlsFront`, a
certificate from a test CA made by trustme), and the proxy is a small HTTP CONNECT proxy
written here (:class:`ConnectProxy`): both count what reached them, so a test can tell that
a request went through the tunnel, or around it, or never got past a handshake. End-to-end
tests run a live gateway with the official ``openai`` SDK as the client.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import logging
import re
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import openai
import pytest
import trustme

from costwarden.config.settings import load_settings
from costwarden.core.errors import ConfigError
from costwarden.gateway.egress import (
    Egress,
    NoProxy,
    ProviderTls,
    ProxyError,
    parse_proxy,
    split_url,
)
from costwarden.gateway.transport import transport_failure
from costwarden.gateway.upstream import UpstreamClient
from costwarden.mock import MockServer
from costwarden.storage.usage import ledger_rows
from tests.helpers import LiveGateway, live_gateway, openai_error

CONNECT_TIMEOUT = 2.0  # the TLS provider's connect_timeout in the gateway tests
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "REQUEST_METHOD")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# --------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    server: trustme.LeafCert
    ca_file: Path  # the CA that signed the server's certificate
    wrong_ca_file: Path  # another CA
    client_cert: Path  # a client certificate from ``ca`` (mutual TLS)
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, wrong = trustme.CA(), trustme.CA()
    client = ca.issue_cert("costwarden-gateway.test")
    files = Pki(
        ca,
        ca.issue_cert("localhost", "127.0.0.1", "::1"),
        folder / "ca.pem",
        folder / "wrong-ca.pem",
        folder / "client.pem",
        folder / "client-key.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca_file))
    wrong.cert_pem.write_to_path(str(files.wrong_ca_file))
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    client.private_key_pem.write_to_path(str(files.client_key))
    return files


def server_context(pki: Pki, *, client_certs: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    pki.server.configure_cert(ctx)
    if client_certs:  # mutual TLS: a client certificate from the test CA is required
        pki.ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


# --------------------------------------------------------------------- loopback servers


class Listener:
    """An asyncio server on 127.0.0.1; on exit its open connections are cut, and their
    handlers end as their reads do (cancelling them would make Python 3.11's stream callback
    log an error)."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
                await self.handle(reader, writer)
        finally:
            writer.close()
            self._tasks.discard(task)
            self._writers.discard(writer)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        assert not self._tasks, "a connection handler did not end"
        await asyncio.sleep(0.01)  # let the closed transports finish closing


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def _splice(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
) -> None:
    """Both ways between the accepted stream and a new connection to ``host:port``."""
    up_reader, up_writer = await asyncio.open_connection(host, port)
    try:
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    finally:
        up_writer.close()


class TlsFront(Listener):
    """TLS in front of the plaintext mock: counts connections and failed handshakes.

    TLS runs over memory BIOs, as in a server built on OpenSSL's own I/O: a failed handshake
    still sends its alert (asyncio's TLS transport closes without it), so the client sees
    what a real server's refusal looks like -- e.g. TLS 1.3's "certificate required".
    """

    def __init__(self, target_port: int, ctx: ssl.SSLContext) -> None:
        super().__init__()
        self.target_port = target_port
        self.ctx = ctx
        self.failed: list[str] = []  # why each failed handshake failed (the server's view)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.ctx.wrap_bio(incoming, outgoing, server_side=True)

        async def flush() -> None:
            if data := outgoing.read():
                writer.write(data)
                await writer.drain()

        async def fill() -> bool:
            data = await reader.read(65536)
            if data:
                incoming.write(data)
            else:
                incoming.write_eof()
            return bool(data)

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await flush()
                if not await fill():
                    self.failed.append("the client went away during the handshake")
                    return
            except ssl.SSLError as exc:
                await flush()  # the alert that tells the client why
                self.failed.append(str(exc))
                return
        await flush()
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def to_mock() -> None:
            while True:
                try:
                    data = tls.read(65536)
                except ssl.SSLWantReadError:
                    await flush()
                    if await fill():
                        continue
                    break
                except ssl.SSLZeroReturnError:
                    break
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def from_mock() -> None:
            while data := await up_reader.read(65536):
                tls.write(data)
                await flush()

        try:
            await asyncio.gather(to_mock(), from_mock())
        finally:
            up_writer.close()


class ConnectProxy(Listener):
    """An HTTP CONNECT proxy: optionally demands a Proxy-Authorization, or refuses with a
    fixed answer; counts the tunnels it opened and keeps every request's head."""

    def __init__(self, *, require: str | None = None, refuse: bytes | None = None) -> None:
        super().__init__()
        self.require = require
        self.refuse = refuse
        self.tunnels = 0
        self.targets: list[str] = []
        self.authorizations: list[str | None] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request, *lines = head.split("\r\n")
        method, target, _ = request.split(" ", 2)
        headers = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in lines if line)
        )
        self.targets.append(target)
        self.authorizations.append(headers.get("proxy-authorization"))
        if self.refuse is not None:
            writer.write(self.refuse)
            return
        if self.require is not None and headers.get("proxy-authorization") != self.require:
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'proxy-authenticate: Basic realm="corp"\r\ncontent-length: 0\r\n\r\n'
            )
            return
        assert method == "CONNECT", head
        host, _, port = target.rpartition(":")
        self.tunnels += 1
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await _splice(reader, writer, host.strip("[]"), int(port))


class Scripted(Listener):
    """Runs ``script`` on each connection."""

    def __init__(self, script: Handler) -> None:
        super().__init__()
        self.script = script

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.script(reader, writer)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --------------------------------------------------------------------- the environment


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No proxy variable from the machine's environment; the test sets its own."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    yield monkeypatch


@pytest.fixture
async def front(mock: MockServer, pki: Pki) -> AsyncIterator[TlsFront]:
    async with TlsFront(mock.port, server_context(pki)) as server:
        yield server


@contextlib.asynccontextmanager
async def tls_gateway(
    mock: MockServer, tmp_path: Path, front: TlsFront, **tls: object
) -> AsyncIterator[LiveGateway]:
    """A live gateway whose route ``secure`` goes to provider ``securelab`` on the TLS front,
    with these TLS settings; the environment's proxy variables as the test set them."""
    options = "\n".join(
        f"{name} = {str(value).lower() if isinstance(value, bool) else repr(str(value))}"
        for name, value in tls.items()
    )
    extra = f"""
[[providers]]
name = "securelab"
type = "openai"
base_url = "https://localhost:{front.port}/v1"
api_key_env = "CW_TEST_OPENAI_KEY"
connect_timeout = {CONNECT_TIMEOUT}
{options}

[[routes]]
model = "secure"
deployments = ["securelab:gpt-4o-mini"]
"""
    database = f"sqlite:///{tmp_path / f'gw-{uuid.uuid4().hex[:6]}.db'}"
    async with live_gateway(mock, database, tmp_path, extra_toml=extra) as gw:
        yield gw


async def ask(gw: LiveGateway) -> tuple[int, str, str]:
    """(status, x-request-id or '', error message or '') of one chat call to ``secure``."""
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as oa:
        try:
            raw = await oa.chat.completions.with_raw_response.create(
                model="secure", messages=[{"role": "user", "content": "hello over TLS"}]
            )
        except openai.APIStatusError as exc:
            return exc.status_code, "", openai_error(exc.response.json())["message"]
        assert raw.parse().choices[0].message.content
        return raw.status_code, raw.headers["x-request-id"], ""


async def billed(gw: LiveGateway, request_id: str) -> None:
    """The request's ledger row: a success served by securelab, priced above zero."""
    await gw.app.ledger.flush()
    [row] = await asyncio.to_thread(ledger_rows, gw.app.engine, [request_id])
    assert (row.status, row.provider, row.served_model) == ("success", "securelab", "gpt-4o-mini")
    assert row.input_tokens > 0 and row.cost_usd > 0


# --------------------------------------------------------------------- end to end


async def test_https_proxy_tunnels_to_the_tls_upstream_and_the_call_is_billed(
    environ: pytest.MonkeyPatch, mock: MockServer, tmp_path: Path, pki: Pki, front: TlsFront
) -> None:
    async with ConnectProxy() as proxy:
        environ.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        async with tls_gateway(mock, tmp_path, front, ca_bundle=pki.ca_file) as gw:
            calls_before = mock.state.requests
            for _ in range(2):
                status, request_id, error = await ask(gw)
                assert (status, error) == (200, "")
                await billed(gw, request_id)
    # One tunnel, kept alive for both calls, to the origin by name (TLS checked against it).
    assert (proxy.tunnels, proxy.targets) == (1, [f"localhost:{front.port}"])
    assert (front.connections, front.failed) == (1, [])
    assert mock.state.requests - calls_before == 2


async def test_no_proxy_covering_the_host_goes_around_the_proxy(
    environ: pytest.MonkeyPatch, mock: MockServer, tmp_path: Path, pki: Pki, front: TlsFront
) -> None:
    async with ConnectProxy() as proxy:
        environ.setenv("https_proxy", f"http://127.0.0.1:{proxy.port}")
        environ.setenv("NO_PROXY", "example.com, .LOCALHOST")
        async with tls_gateway(mock, tmp_path, front, ca_bundle=pki.ca_file) as gw:
            status, request_id, _ = await ask(gw)
            assert status == 200
            await billed(gw, request_id)
    assert (proxy.connections, proxy.tunnels) == (0, 0)
    assert front.connections == 1


async def test_proxy_credentials_are_sent_and_never_logged(
    environ: pytest.MonkeyPatch,
    mock: MockServer,
    tmp_path: Path,
    pki: Pki,
    front: TlsFront,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "s3cr@t-Proxy-PASS"
    expected = basic("alice", password)
    async with ConnectProxy(require=expected) as proxy:
        url = f"http://alice:s3cr%40t-Proxy-PASS@127.0.0.1:{proxy.port}"
        environ.setenv("HTTPS_PROXY", url)
        async with tls_gateway(mock, tmp_path, front, ca_bundle=pki.ca_file) as gw:
            status, request_id, _ = await ask(gw)
            assert status == 200
            await billed(gw, request_id)
            assert password in gw.app.secrets()  # redacted by the log filter besides
    assert proxy.authorizations == [expected] and proxy.tunnels == 1
    logged = caplog.text
    assert f"through the proxy http://127.0.0.1:{proxy.port}, with credentials" in logged
    for secret in (password, "s3cr%40t-Proxy-PASS", expected.removeprefix("Basic "), url):
        assert secret not in logged


async def test_a_proxy_answering_407_is_a_quick_clear_502_without_the_credentials(
    environ: pytest.MonkeyPatch,
    mock: MockServer,
    tmp_path: Path,
    pki: Pki,
    front: TlsFront,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with ConnectProxy(require=basic("alice", "right")) as proxy:
        environ.setenv("HTTPS_PROXY", f"http://alice:WRONG-pass@127.0.0.1:{proxy.port}")
        async with tls_gateway(mock, tmp_path, front, ca_bundle=pki.ca_file) as gw:
            started = time.perf_counter()
            status, _, message = await ask(gw)
            elapsed = time.perf_counter() - started
    assert status == 502
    assert message == (
        f"upstream securelab connection failed (proxy http://127.0.0.1:{proxy.port} refused "
        f"the tunnel to localhost:{front.port}: 407 Proxy Authentication Required)"
    )
    assert elapsed < CONNECT_TIMEOUT  # an answer, not a hang (retries included)
    assert proxy.tunnels == 0 and front.connections == 0
    assert proxy.connections <= 3  # the route's 1 + 2 tries, each refused at once
    assert "WRONG-pass" not in caplog.text and "WRONG-pass" not in message


@pytest.mark.parametrize("through_proxy", [False, True], ids=["direct", "tunnel"])
async def test_a_certificate_from_another_ca_is_a_quick_502_naming_the_provider(
    environ: pytest.MonkeyPatch,
    mock: MockServer,
    tmp_path: Path,
    pki: Pki,
    front: TlsFront,
    through_proxy: bool,
) -> None:
    async with ConnectProxy() as proxy:
        if through_proxy:
            environ.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        async with tls_gateway(mock, tmp_path, front, ca_bundle=pki.wrong_ca_file) as gw:
            calls_before = mock.state.requests
            started = time.perf_counter()
            status, _, message = await ask(gw)
            elapsed = time.perf_counter() - started
    assert status == 502
    assert message.startswith("upstream securelab connection failed (certificate verify failed")
    assert elapsed < CONNECT_TIMEOUT, elapsed
    # No request got through; each try (1 + the route's 2 retries) was one refused handshake.
    assert mock.state.requests == calls_before
    assert front.connections == len(front.failed) <= 3
    assert proxy.tunnels == (front.connections if through_proxy else 0)


async def test_mutual_tls_needs_the_client_certificate(
    environ: pytest.MonkeyPatch, mock: MockServer, tmp_path: Path, pki: Pki
) -> None:
    async with TlsFront(mock.port, server_context(pki, client_certs=True)) as front:
        async with tls_gateway(mock, tmp_path, front, ca_bundle=pki.ca_file) as gw:
            status, _, message = await ask(gw)
        assert status == 502
        assert message.startswith("upstream securelab connection failed (TLS error: ")
        assert "certificate" in message
        assert front.failed and mock.state.requests == 0
        refused = front.connections
        async with tls_gateway(
            mock,
            tmp_path,
            front,
            ca_bundle=pki.ca_file,
            client_cert=pki.client_cert,
            client_key=pki.client_key,
        ) as gw:
            status, request_id, error = await ask(gw)
            assert (status, error) == (200, "")
            await billed(gw, request_id)
        assert front.connections == refused + 1 and len(front.failed) == refused


async def test_tls_verify_false_accepts_any_certificate_and_warns_at_start(
    environ: pytest.MonkeyPatch,
    mock: MockServer,
    tmp_path: Path,
    front: TlsFront,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with tls_gateway(mock, tmp_path, front, tls_verify=False) as gw:
        status, _, _ = await ask(gw)
    assert status == 200  # the test CA is in no trust store: nothing was checked
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "provider 'securelab': tls_verify = false: its certificate is not checked" in warnings


# --------------------------------------------------------------------- the client alone


async def _post(client: UpstreamClient, url: str, connect_timeout: float = 2.0) -> bytes:
    resp = await client.post(
        url, [("content-type", "application/json")], b"{}", timeout=5.0,
        connect_timeout=connect_timeout,
    )  # fmt: skip
    try:
        return await resp.read()
    finally:
        resp.release()


async def test_an_http_origin_goes_to_the_proxy_in_absolute_form() -> None:
    heads: list[bytes] = []

    async def forward_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)  # the body, b"{}"
            heads.append(head)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nproxied")

    async with Scripted(forward_proxy) as proxy:
        egress = Egress({"http": f"http://bob:pw@127.0.0.1:{proxy.port}"})
        client = UpstreamClient(egress=egress)
        for _ in range(2):
            assert await _post(client, "http://upstream.test:8080/v1/chat/completions") == (
                b"proxied"
            )
        # Never resolved, never connected: the name went to the proxy, over one connection.
        assert await _post(client, "http://other.test/v1/x?y=1") == b"proxied"
        await client.close()
    assert proxy.connections == 2
    lines = heads[0].decode().split("\r\n")
    assert lines[0] == "POST http://upstream.test:8080/v1/chat/completions HTTP/1.1"
    assert "host: upstream.test:8080" in lines
    assert f"proxy-authorization: {basic('bob', 'pw')}" in lines
    assert heads[2].decode().startswith("POST http://other.test/v1/x?y=1 HTTP/1.1\r\n")


@pytest.mark.parametrize("stage", ["CONNECT", "TLS handshake"])
async def test_the_connect_timeout_covers_the_proxy_exchange_and_the_handshake(
    stage: str,
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if stage == "TLS handshake":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await reader.read()  # silent until the client gives up

    async with Scripted(silent) as proxy:
        client = UpstreamClient(egress=Egress({"https": f"127.0.0.1:{proxy.port}"}))
        started = time.perf_counter()
        with pytest.raises(TimeoutError, match="through the proxy http://127.0.0.1:"):
            await _post(client, "https://api.test/v1/chat/completions", connect_timeout=0.3)
        assert time.perf_counter() - started < 1.0
        await client.close()


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", "refused the tunnel to api.test:443: 403 Forbidden"),
        (b"HTTP/1.0 502 Bad Gateway\r\n\r\n", "refused the tunnel to api.test:443: 502 Bad"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "answered CONNECT with something that is not HTTP"),
        (b"HTTP/1.1 200 OK\r\n\r\nEXTRA", "sent data after its answer to CONNECT"),
        (b"", "closed the connection before answering CONNECT"),
    ],
)
async def test_a_refused_or_broken_connect_is_a_proxy_error(answer: bytes, match: str) -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()

    async with Scripted(refuse) as proxy:
        client = UpstreamClient(egress=Egress({"https": f"http://127.0.0.1:{proxy.port}"}))
        with pytest.raises(ProxyError, match=match):
            await _post(client, "https://api.test/v1/chat/completions")
        await client.close()


async def test_an_unreachable_proxy_is_named() -> None:
    async with Scripted(lambda r, w: asyncio.sleep(0)) as gone:
        port = gone.port
    client = UpstreamClient(egress=Egress({"https": f"http://127.0.0.1:{port}"}))
    with pytest.raises(ProxyError, match=rf"proxy http://127.0.0.1:{port} could not be reached"):
        await _post(client, "https://api.test/v1/chat/completions")
    await client.close()


async def _through_tunnel(pki: Pki) -> tuple[bytes, int, str]:
    """A call through a CONNECT proxy to a TLS server checked against the test CA."""

    names: list[str | None] = []  # the server names the client sent (SNI)
    ctx = server_context(pki)
    ctx.sni_callback = lambda _obj, name, _ctx: names.append(name)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await writer.start_tls(ctx)
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)
            body = b"tunnelled " + str(names[-1]).encode() + b" " + head.split(b" ")[1]
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)

    async with Scripted(answer) as origin, ConnectProxy() as proxy:
        tls = ProviderTls("p", f"https://localhost:{origin.port}", ca_bundle=str(pki.ca_file))
        egress = Egress({"https": f"http://127.0.0.1:{proxy.port}"}, [tls])
        client = UpstreamClient(egress=egress)
        body = await _post(client, f"https://localhost:{origin.port}/v1/chat/completions")
        await client.close()
        return body, proxy.tunnels, proxy.targets[0]


async def test_the_tunnel_checks_the_origin_by_name(pki: Pki) -> None:
    body, tunnels, target = await _through_tunnel(pki)
    assert body == b"tunnelled localhost /v1/chat/completions"  # SNI: the origin's name
    assert tunnels == 1 and target.startswith("localhost:")


def test_the_tunnel_works_under_uvloop(pki: Pki) -> None:
    uvloop = pytest.importorskip("uvloop")  # the loop the gateway serves on
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        body, tunnels, _ = pool.submit(uvloop.run, _through_tunnel(pki)).result(timeout=30)
    assert body == b"tunnelled localhost /v1/chat/completions" and tunnels == 1


# --------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypass"),
    [
        ("", "api.openai.com", 443, False),
        ("*", "api.openai.com", 443, True),
        ("example.com, *", "api.openai.com", 443, True),
        ("openai.com", "api.openai.com", 443, True),  # a suffix on a label boundary
        ("openai.com", "openai.com", 443, True),
        ("openai.com", "notopenai.com", 443, False),
        (".openai.com", "api.openai.com", 443, True),  # leading dot: the same
        (".openai.com", "openai.com", 443, True),
        ("*.openai.com", "api.openai.com", 443, True),
        ("OpenAI.COM", "API.openai.com.", 443, True),  # case and a trailing dot ignored
        ("api.openai.com", "openai.com", 443, False),  # a parent is not covered
        ("internal:8443", "internal", 8443, True),  # a port: only that port
        ("internal:8443", "internal", 443, False),
        ("localhost", "127.0.0.1", 443, False),  # no name is resolved
        ("127.0.0.1", "127.0.0.1", 443, True),
        ("127.0.0.1", "127.0.0.10", 443, False),  # addresses compare whole, not as suffixes
        ("0.0.1", "127.0.0.1", 443, False),
        ("10.0.0.0/8", "10.20.30.40", 443, True),  # CIDR, as curl reads it
        ("10.0.0.0/8", "11.0.0.1", 443, False),
        ("10.0.0.0/8", "ten.example", 443, False),
        ("::1", "::1", 443, True),
        ("[::1]", "0:0::1", 443, True),  # IPv6 in its normal form
        ("[::1]:8443", "::1", 8443, True),
        ("[::1]:8443", "::1", 443, False),
        ("fd00::/8", "fd12::5", 443, True),
        (" , ,", "api.openai.com", 443, False),  # empty entries ignored
        ("example.com,localhost", "localhost", 9000, True),
    ],
)
def test_no_proxy_table(no_proxy: str, host: str, port: int, bypass: bool) -> None:
    assert NoProxy(no_proxy).matches(host, port) is bypass


def test_proxy_urls_are_parsed_and_shown_without_credentials() -> None:
    bare = parse_proxy("proxy.corp:3128", "https_proxy")  # no scheme: http, as curl reads it
    assert (str(bare), bare.authorization) == ("http://proxy.corp:3128", None)
    assert str(parse_proxy("http://proxy.corp", "https_proxy")) == "http://proxy.corp:80"
    assert str(parse_proxy("http://[fd00::1]:3128/", "https_proxy")) == "http://[fd00::1]:3128"
    secret = parse_proxy("http://us%40er:p%3Ass@proxy.corp:3128", "https_proxy")
    assert secret.authorization == basic("us@er", "p:ss")
    assert "p:ss" not in repr(secret) and "p:ss" not in str(secret)
    egress = Egress({"https": "http://us%40er:p%3Ass@proxy.corp:3128", "no": "localhost"})
    assert egress.describe() == [
        "egress: https origins through the proxy http://proxy.corp:3128, with credentials",
        "egress: no proxy for localhost",
    ]
    assert set(egress.secrets()) == {"p:ss", basic("us@er", "p:ss").removeprefix("Basic ")}


@pytest.mark.parametrize(
    "url", ["https://user:hunter2@proxy.corp:443", "socks5://user:hunter2@proxy.corp:1080"]
)
def test_a_proxy_that_is_not_http_is_a_config_error_that_keeps_the_password(url: str) -> None:
    with pytest.raises(ConfigError, match="proxy is not supported") as caught:
        Egress({"https": url})
    assert "hunter2" not in str(caught.value)


def test_plans_follow_the_scheme_and_no_proxy() -> None:
    egress = Egress(
        {"https": "http://secure-proxy:3128", "http": "http://plain-proxy:3128", "no": "local"},
    )
    plan = egress.plan
    https, http, local = (
        split_url(u)[0] for u in ("https://a.test", "http://a.test", "http://local")
    )
    assert str(plan(https).proxy) == "http://secure-proxy:3128"
    assert str(plan(http).proxy) == "http://plain-proxy:3128"
    assert plan(local).proxy is None
    assert not Egress().proxied and Egress().plan(https) == (None, None)


def test_tls_contexts_are_built_once_per_setting_and_checked_at_start(pki: Pki) -> None:
    own = ProviderTls("a", "https://llm.internal/v1", ca_bundle=str(pki.ca_file))
    same = ProviderTls("b", "https://llm.internal/v2", ca_bundle=str(pki.ca_file))
    other = ProviderTls("c", "https://other.internal:8443", ca_bundle=str(pki.ca_file))
    egress = Egress({}, [own, same, other, ProviderTls("d", "https://api.openai.com/v1")])
    plans = egress.plans()
    ctx = plans[split_url(own.base_url)[0]].tls
    assert ctx is not None and ctx is plans[split_url(other.base_url)[0]].tls  # one context
    assert plans[split_url("https://api.openai.com")[0]].tls is None  # the client's default
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    off = Egress({}, [ProviderTls("e", "https://x.test", verify=False)])
    off_ctx = off.plans()[split_url("https://x.test")[0]].tls
    assert off_ctx is not None and off_ctx.verify_mode == ssl.CERT_NONE
    assert off.unverified == ["e"]
    with pytest.raises(ConfigError, match="share the origin https://llm.internal:443"):
        Egress({}, [own, ProviderTls("f", "https://llm.internal/v9")])
    with pytest.raises(ConfigError, match="provider 'g': ca_bundle could not be loaded"):
        Egress({}, [ProviderTls("g", "https://x.test", ca_bundle=__file__)])  # not a PEM


def _ssl_error(cls: type[ssl.SSLError], **attrs: str) -> ssl.SSLError:
    exc = cls(1, "from OpenSSL")
    for name, value in attrs.items():
        setattr(exc, name, value)
    return exc


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (
            _ssl_error(
                ssl.SSLCertVerificationError,
                reason="CERTIFICATE_VERIFY_FAILED",
                verify_message="unable to get local issuer certificate",
            ),
            "connection failed (certificate verify failed: unable to get local issuer certificate)",
        ),
        (ssl.SSLCertVerificationError(1, "bare"), "connection failed (certificate verify failed)"),
        (
            _ssl_error(ssl.SSLError, reason="TLSV13_ALERT_CERTIFICATE_REQUIRED"),
            "connection failed (TLS error: tlsv13 alert certificate required)",
        ),
        (ssl.SSLError(1, "bare"), "connection failed (SSLError)"),
        (
            ProxyError("proxy http://p:3128 refused the tunnel to a.test:443: 403 Forbidden"),
            "connection failed (proxy http://p:3128 refused the tunnel to a.test:443: 403 "
            "Forbidden)",
        ),
    ],
)
def test_tls_and_proxy_failures_say_what_they_are(exc: OSError, reason: str) -> None:
    error, why = transport_failure(exc, "lab", "connect")
    assert (error.status, error.message, why) == (502, f"upstream lab {reason}", reason)


# --------------------------------------------------------------------- settings


def _config(tmp_path: Path, provider_lines: str, base_url: str = "https://llm.test/v1") -> str:
    return f"""[storage]
database_url = "sqlite:///{tmp_path}/x.db"

[[providers]]
name = "lab"
type = "openai"
base_url = "{base_url}"
{provider_lines}

[[routes]]
model = "m"
deployments = ["lab:gpt-4o-mini"]
"""


def test_tls_settings_are_read(tmp_path: Path, pki: Pki) -> None:
    lines = (
        f'ca_bundle = "{pki.ca_file}"\nclient_cert = "{pki.client_cert}"\n'
        f'client_key = "{pki.client_key}"'
    )
    [lab] = load_settings(text=_config(tmp_path, lines), env={}).providers
    assert (lab.ca_bundle, lab.client_cert, lab.client_key, lab.tls_verify) == (
        str(pki.ca_file),
        str(pki.client_cert),
        str(pki.client_key),
        True,
    )
    [plain] = load_settings(text=_config(tmp_path, ""), env={}).providers
    assert (plain.ca_bundle, plain.client_cert, plain.tls_verify) == (None, None, True)


@pytest.mark.parametrize(
    ("lines", "base_url", "message"),
    [
        ('ca_bundle = "/nonexistent/ca.pem"', None, ":8: providers[0].ca_bundle: no such file"),
        ('client_cert = "/nonexistent/c.pem"', None, ":8: providers[0].client_cert: no such"),
        ("client_key = '{key}'", None, ":8: providers[0].client_key: needs client_cert"),
        ("ca_bundle = '{ca}'", "http://llm.test/v1", "ca_bundle: takes an https:// base_url"),
        ("tls_verify = false", "http://llm.test", "tls_verify: takes an https:// base_url"),
        ("tls_verify = false\nca_bundle = '{ca}'", None, "ca_bundle: unused with tls_verify"),
        ('tls_verify = "no"', None, ":8: providers[0].tls_verify: expected true/false"),
    ],
)
def test_tls_settings_errors_name_the_key_and_line(
    tmp_path: Path, pki: Pki, lines: str, base_url: str | None, message: str
) -> None:
    text = lines.format(ca=pki.ca_file, key=pki.client_key)
    config = _config(tmp_path, text, base_url or "https://llm.test/v1")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(text=config, env={})
