"""Egress: how the upstream client reaches an origin -- directly or through an HTTP proxy --
and with what TLS, decided once at start.

The app reads the proxy variables once, when it is created (``https_proxy``, ``http_proxy``,
``no_proxy``, lower case before upper case, through ``urllib.request.getproxies_environment``),
maps each provider's TLS settings into a :class:`ProviderTls`, and builds one :class:`Egress`
from both. The client asks it for an origin's :class:`Plan` the first time it connects there
and keeps the answer. Nothing here reads the environment: the request path never pays for it,
one process keeps one view of it for its lifetime, and tests build an Egress from any mapping.

- An ``https`` origin behind a proxy is reached through an HTTP ``CONNECT`` tunnel (:func:`tunnel`)
  with TLS to the origin inside it: SNI and the certificate are checked against the origin's
  host name, never the proxy's. An ``http`` origin's requests go to the proxy in absolute form.
- Credentials in the proxy URL (``http://user:pass@proxy:3128``) are sent as
  ``Proxy-Authorization: Basic``. A :class:`ProxyServer` shows itself without them, and no
  error raised here quotes the URL, so neither a log line nor a client's error carries them.
- Only ``http://`` proxies are supported (a URL without a scheme is one, as for curl); any
  other scheme is a ConfigError at start rather than a silent direct connection.
- ``no_proxy``: see :class:`NoProxy`.
- TLS per provider: a CA bundle *replaces* the system's trust store for that provider (as curl's
  ``--cacert`` and requests' ``verify=<file>`` do: a company's TLS-inspection CA or a private
  CA is then the only one trusted there); a client certificate and key give mutual TLS;
  ``verify = False`` turns checking off. One ``ssl.SSLContext`` per distinct setting is built
  here, at start; a provider with none of them uses the client's default context, as before.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import ipaddress
import ssl
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import httptools

from costwarden.core.errors import ConfigError

_MAX_CONNECT_ANSWER = 16 * 1024  # a proxy's answer to CONNECT longer than this is refused
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int


@functools.lru_cache(maxsize=256)
def split_url(url: str) -> tuple[Origin, bytes, bytes]:
    """(origin, request target, host header) of an absolute http(s) URL."""
    parts = httptools.parse_url(url.encode())
    scheme = (parts.schema or b"").decode().lower()
    if scheme not in ("http", "https") or not parts.host:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    host = parts.host.decode()
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    target = (parts.path or b"/") + (b"?" + parts.query if parts.query else b"")
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    return Origin(scheme, host, port), target, host_header.encode()


class ProxyError(ConnectionError):
    """A proxy could not be reached, or refused or broke the CONNECT exchange. The message
    names the proxy by host and port and its status, never its credentials."""


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyServer:
    """An HTTP proxy; ``authorization`` is the ``Proxy-Authorization`` value, if any."""

    host: str
    port: int
    authorization: str | None = dataclasses.field(default=None, repr=False)
    password: str | None = dataclasses.field(default=None, repr=False)  # for log redaction

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_proxy(url: str, variable: str) -> ProxyServer:
    """The proxy of ``url`` (from the environment variable ``variable``); a ConfigError that
    never quotes the URL (it may hold a password) when it is not an http:// proxy."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text  # host:port alone, as curl and urllib take it
    try:
        parts = urllib.parse.urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ConfigError(f"environment {variable}: not a proxy URL") from None
    if parts.scheme.lower() != "http":
        raise ConfigError(
            f"environment {variable}: a {parts.scheme}:// proxy is not supported; "
            "costwarden reaches proxies over http:// (https origins are tunnelled with CONNECT)"
        )
    if not host:
        raise ConfigError(f"environment {variable}: the proxy URL names no host")
    authorization = password = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    return ProxyServer(host, port or 80, authorization, password or None)


class _Entry(NamedTuple):
    name: str | None  # a host name (matches it and its subdomains)
    net: IPNetwork | None  # an IP address or CIDR range (matches IP literals only)
    port: int | None  # None: any port


class NoProxy:
    """The hosts reached directly although a proxy is set: ``no_proxy``'s comma-separated
    entries, read as curl and Python's urllib do.

    - ``*`` (as an entry) sends everything direct;
    - ``example.com``, ``.example.com`` and ``*.example.com`` match that host and every name
      under it (on a label boundary: ``badexample.com`` is not under ``example.com``);
    - an IP literal (``10.1.2.3``, ``::1``, ``[::1]``) matches that address, and a CIDR range
      (``10.0.0.0/8``) the IP literals in it; names are never resolved to be compared;
    - ``host:port`` (``[::1]:8443`` for IPv6) matches that port only.

    Case and a trailing dot are ignored. No host is special: ``localhost`` goes through the
    proxy unless it is listed, as with curl and urllib.
    """

    def __init__(self, value: str) -> None:
        self.value = value
        self.everything = False
        self._entries: list[_Entry] = []
        for raw in value.split(","):
            item = raw.strip().lower()
            if item == "*":
                self.everything = True
            elif item:
                self._entries.append(_entry(item))

    def matches(self, host: str, port: int) -> bool:
        if self.everything:
            return True
        name = host.lower().rstrip(".")
        address = _ip(name)
        for entry in self._entries:
            if entry.port is not None and entry.port != port:
                continue
            if address is not None:
                if entry.net is not None and address in entry.net:
                    return True
            elif entry.name is not None and (name == entry.name or name.endswith("." + entry.name)):
                return True
        return False


def _entry(item: str) -> _Entry:
    host, port = item, None
    if item.startswith("["):  # [v6] or [v6]:port
        host, _, rest = item[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif item.count(":") == 1:  # name:port or v4:port (more colons: a bare IPv6 address)
        name, _, digits = item.partition(":")
        if digits.isdigit():
            host, port = name, int(digits)
    try:
        return _Entry(None, ipaddress.ip_network(host, strict=False), port)
    except ValueError:
        name = host.removeprefix("*").lstrip(".").rstrip(".")
        return _Entry(name or None, None, port)


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 zone is not compared
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class ProviderTls:
    """One provider's TLS settings, as the app maps them from its configuration."""

    provider: str
    base_url: str
    verify: bool = True
    ca_bundle: str | None = None  # PEM CA certificates: replaces the system's trust store
    client_cert: str | None = None  # PEM client certificate (mutual TLS)
    client_key: str | None = None  # its key, unless the certificate's file holds it

    @property
    def default(self) -> bool:
        """Whether this is the client's default context (the system's trust, no client cert)."""
        return self.verify and self.ca_bundle is None and self.client_cert is None

    def context(self) -> ssl.SSLContext:
        """A new context for these settings (ConfigError naming the provider if a file is
        not a usable PEM)."""
        try:
            ctx = ssl.create_default_context(cafile=self.ca_bundle)  # cafile replaces the store
            if not self.verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if self.client_cert is not None:
                ctx.load_cert_chain(self.client_cert, self.client_key)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            what = "ca_bundle" if self.client_cert is None else "ca_bundle/client_cert/client_key"
            raise ConfigError(
                f"provider {self.provider!r}: {what} could not be loaded ({exc})"
            ) from None
        return ctx

    def _key(self) -> tuple[bool, str | None, str | None, str | None]:
        return (self.verify, self.ca_bundle, self.client_cert, self.client_key)


class Plan(NamedTuple):
    """How to reach one origin: the proxy (None: directly) and the TLS context of an https
    origin (None: the client's default)."""

    proxy: ProxyServer | None
    tls: ssl.SSLContext | None


class Egress:
    """The proxies and the TLS contexts of one app, built once at start (see the module
    docstring). ``proxies`` is shaped as ``urllib.request.getproxies_environment()`` returns
    it: scheme -> proxy URL, and ``"no"`` -> the no_proxy list."""

    def __init__(
        self, proxies: Mapping[str, str] | None = None, providers: Iterable[ProviderTls] = ()
    ) -> None:
        proxies = proxies or {}
        https, http = proxies.get("https"), proxies.get("http")
        self.https_proxy = parse_proxy(https, "https_proxy") if https else None
        self.http_proxy = parse_proxy(http, "http_proxy") if http else None
        self.no_proxy = NoProxy(proxies.get("no", ""))
        self.proxied = self.https_proxy is not None or self.http_proxy is not None
        self.unverified: list[str] = []  # providers that check no certificate
        self._contexts: dict[Origin, ssl.SSLContext] = {}
        self._plans: dict[Origin, Plan] = {}
        settings: dict[Origin, ProviderTls] = {}
        built: dict[tuple[bool, str | None, str | None, str | None], ssl.SSLContext] = {}
        for tls in providers:
            origin = split_url(tls.base_url)[0]
            other = settings.setdefault(origin, tls)
            if other._key() != tls._key():
                raise ConfigError(
                    f"providers {other.provider!r} and {tls.provider!r} share the origin "
                    f"{origin.scheme}://{origin.host}:{origin.port} but not their TLS settings "
                    "(ca_bundle, client_cert, client_key, tls_verify)"
                )
            if not tls.verify and tls.provider not in self.unverified:
                self.unverified.append(tls.provider)
            if origin.scheme == "https" and not tls.default and origin not in self._contexts:
                key = tls._key()
                if key not in built:
                    built[key] = tls.context()
                self._contexts[origin] = built[key]
            self._plans[origin] = self.plan(origin)

    def plan(self, origin: Origin) -> Plan:
        """How the client reaches ``origin`` (an origin no provider named gets the defaults)."""
        known = self._plans.get(origin)
        if known is not None:
            return known
        proxy = self.https_proxy if origin.scheme == "https" else self.http_proxy
        if proxy is not None and self.no_proxy.matches(origin.host, origin.port):
            proxy = None
        return Plan(proxy, self._contexts.get(origin))

    def plans(self) -> dict[Origin, Plan]:
        """The providers' origins' plans, made at start (a copy the client may extend)."""
        return dict(self._plans)

    def describe(self) -> list[str]:
        """Log lines for the start: the proxies by host and port only, the no_proxy list."""
        lines = []
        for scheme, proxy in (("https", self.https_proxy), ("http", self.http_proxy)):
            if proxy is not None:
                auth = ", with credentials" if proxy.authorization else ""
                lines.append(f"egress: {scheme} origins through the proxy {proxy}{auth}")
        if self.proxied and self.no_proxy.value:
            lines.append(f"egress: no proxy for {self.no_proxy.value}")
        return lines

    def secrets(self) -> list[str]:
        """The proxies' passwords and authorization values, for log redaction."""
        found: list[str] = []
        for proxy in (self.https_proxy, self.http_proxy):
            if proxy is not None and proxy.authorization is not None:
                found.append(proxy.authorization.removeprefix("Basic "))
                if proxy.password:
                    found.append(proxy.password)
        return found


def connect_head(origin: Origin, proxy: ProxyServer) -> bytes:
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    authority = f"{host}:{origin.port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"host: {authority}"]
    if proxy.authorization is not None:
        lines.append(f"proxy-authorization: {proxy.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def tunnel(
    proxy: ProxyServer, origin: Origin, protocol: asyncio.Protocol, tls: ssl.SSLContext
) -> asyncio.Transport:
    """A TLS transport to ``origin`` through ``proxy``'s CONNECT tunnel, read by ``protocol``.

    The caller bounds it with its connect timeout: connecting to the proxy, the CONNECT
    exchange and the TLS handshake together. A refusal is a :class:`ProxyError` naming the
    proxy's status; a certificate that fails is ``ssl.SSLCertVerificationError``, as direct.
    """
    loop = asyncio.get_running_loop()
    try:
        transport, answer = await loop.create_connection(_ConnectAnswer, proxy.host, proxy.port)
    except OSError as exc:
        raise ProxyError(f"proxy {proxy} could not be reached ({type(exc).__name__})") from None
    try:
        transport.write(connect_head(origin, proxy))
        status, reason = _status(await answer.head, proxy)
        where = f"{origin.host}:{origin.port}"
        if not 200 <= status < 300:
            raise ProxyError(f"proxy {proxy} refused the tunnel to {where}: {status} {reason}")
        if answer.extra:  # the origin speaks only after our TLS hello: these bytes are not it
            raise ProxyError(f"proxy {proxy} sent data after its answer to CONNECT {where}")
        secure = await loop.start_tls(transport, protocol, tls, server_hostname=origin.host)
    except BaseException:
        transport.abort()
        raise
    if secure is None:  # typed optional; asyncio and uvloop return the transport or raise
        raise ProxyError(f"proxy {proxy}: the TLS connection through the tunnel was lost")
    return secure


def _status(head: bytes, proxy: ProxyServer) -> tuple[int, str]:
    """(status, reason) of a proxy's answer head."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProxyError(f"proxy {proxy} answered CONNECT with something that is not HTTP")
    reason = parts[2].decode("latin-1") if len(parts) == 3 else ""
    shown = "".join(c for c in reason if c.isprintable())[:80]  # the proxy's words, bounded
    return int(parts[1]), shown


class _ConnectAnswer(asyncio.Protocol):
    """Reads a proxy's answer head to CONNECT; reading pauses once it is in."""

    def __init__(self) -> None:
        self.head: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.extra = False  # bytes came after the head
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self.head.done():
            self.extra = True
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end >= 0:
            self.extra = len(self._buffer) > end + 4
            self.head.set_result(bytes(self._buffer[:end]))
            if self._transport is not None:
                self._transport.pause_reading()  # start_tls resumes it
        elif len(self._buffer) > _MAX_CONNECT_ANSWER:
            self.head.set_exception(ProxyError("a proxy sent an oversized answer to CONNECT"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(
                ProxyError("the proxy closed the connection before answering CONNECT")
            )
