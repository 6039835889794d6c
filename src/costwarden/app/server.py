"""Running the gateway under uvicorn (uvloop + httptools), with graceful SIGTERM and limits
on what one connection may hold.

uvicorn stops accepting connections on SIGTERM/SIGINT, lets in-flight requests finish, then
runs the app's shutdown, which drains the ledger: no usage record is lost.

uvicorn's httptools protocol has no limit on a request head's size and no timeout but the
keep-alive one: an unauthenticated client could make the parser chew on a 64 MB header
(stalling every other connection) or hold a connection and an app task forever by sending
its head a byte at a time or never sending the body it announced. ``GuardedHttpToolsProtocol``
adds the limits (see its docstring); it relies on uvicorn internals, so pyproject.toml pins
uvicorn's range and tests/test_server.py checks those internals.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Callable
from types import FrameType
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from costwarden.app.factory import CostwardenApp, create_app
from costwarden.app.head_with_body import HeadWithBody
from costwarden.app.logs import configure_logging
from costwarden.app.response_cycle import ResponseCycle
from costwarden.config.settings import ServerSettings, Settings
from costwarden.core.errors import GatewayError, RequestHeaderFieldsTooLarge, RequestTimeout
from costwarden.gateway.asgi import CLIENT_GONE, ON_DISCONNECT
from costwarden.gateway.errors import error_body
from costwarden.gateway.proxy import ENDPOINTS

logger = logging.getLogger(__name__)

# _head is the size of the request head read so far (0 between requests), or one of these.
_BODY, _REFUSED = -1, -2
# After a 408/431 answer the connection is half-closed and left unread this long before it
# is closed: closing a socket with unread input sends a reset, which can destroy the answer
# before the client reads it. Reading is paused meanwhile, so a refused client costs no CPU.
_LINGER_SECONDS = 1.0
# uvicorn's own methods, called directly rather than through super() on the hot path.
_feed = HttpToolsProtocol.data_received
_message_complete = HttpToolsProtocol.on_message_complete


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus a cap on the request head and deadlines.

    - **Head size.** Bytes read while a head is incomplete are counted; a read that would
      take the count past ``max_header_bytes`` is fed to the parser only up to the cap, and
      if no head has ended by then the answer is 431. The count restarts with every request.
      (A head pipelined behind another request in the same read is counted from its next
      read: it may exceed the cap by at most that one read.)
    - **Head deadline.** A new connection's first head must be whole within
      ``header_timeout`` of the connection opening (one that sent nothing is closed without
      an answer); a later head within ``header_timeout`` of the read that started it.
      Between requests uvicorn's keep-alive timeout applies, as before.
    - **Body deadline.** A body must be whole within ``body_timeout`` of the end of its head.
      A deadline rather than an idle gap: a client trickling a byte now and then cannot
      extend it, so nobody holds a connection and an app task longer than that. While
      reading is paused by us (the app has not taken what was read, or a pipelined request
      waits for the one before it), the delay is ours, and the deadline starts again.
    - 408 or 431 is answered when no other response is under way on the connection, and
      the app is told the client is gone (its ``receive()`` returns ``http.disconnect``);
      then the connection is closed.
    - **Disconnect.** Every request's scope gets ``ON_DISCONNECT`` (None); when the
      connection is lost before the response is complete, a task the app put there is
      cancelled with ``CLIENT_GONE``. The proxy aborts the upstream call so: without it,
      noticing a client that left takes a task awaiting ``receive()`` per request (about
      50,000 instructions per request, measured; this costs one dict store).
    - **Response.** Each cycle becomes an ``app.response_cycle.ResponseCycle`` (its head's
      headers checked in two passes, not two searches each) writing through a ``HeadWithBody``
      (the head leaves with the body, in one write).

    Cost: the common request (head, and body if any, in one read) arms no timer: a timer is
    armed only when a head or body spans reads, or once per connection for its first head.
    Per request: a few attribute reads in ``data_received``, and one more call frame there
    and in ``on_message_complete``. The end of a head is seen after the read, as a new
    uvicorn cycle, rather than by overriding ``on_headers_complete`` (a frame saved).
    """

    # Slots, not the instance dict: uvicorn's protocol already keeps 28 attributes there,
    # and past 30 CPython 3.11 stops sharing the dict's keys, which made every attribute
    # access of uvicorn's own code slower (+3,000 instructions per request, measured).
    __slots__ = ("_max_head", "_head", "_timer")

    # Set by ``guarded_protocol`` on a subclass: uvicorn constructs the protocol itself.
    max_header_bytes = 64 * 1024
    header_timeout = 10.0
    body_timeout = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_head = self.max_header_bytes
        self._head = 0
        self._timer: asyncio.TimerHandle | None = None  # the current head's or body's deadline

    # ------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms nothing until a first response: a silent connection was held forever.
        self._timer = self.loop.call_later(self.header_timeout, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            task = cast("asyncio.Task[None] | None", cycle.scope.get(ON_DISCONNECT))
            if task is not None:
                task.cancel(CLIENT_GONE)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        head = self._head
        if head >= 0:  # between requests, or inside a head
            head += len(data)
            if head > self._max_head:
                self._head_over_cap(data)
                return
            self._head = head
        elif head == _REFUSED:
            return  # answered and closing: nothing more is parsed
        cycle = self.cycle
        _feed(self, data)
        if self.cycle is not cycle:
            # A head ended in this read (uvicorn made a cycle for it). The newest cycle's app
            # task has not run yet, so more_body says exactly whether its body is unfinished.
            self._new_cycle()
        elif self._timer is None and self._head > 0:
            self._arm(self.header_timeout, self._head_late)

    def on_message_complete(self) -> None:
        self._head = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        _message_complete(self)

    def _new_cycle(self) -> None:
        cycle = self.cycle
        cycle.__class__ = ResponseCycle  # its app task has not run: every send is the subclass's
        cycle.scope[ON_DISCONNECT] = None  # type: ignore[literal-required]
        cycle.transport = HeadWithBody(self.transport, cycle, self.loop)  # type: ignore[assignment]
        if cycle.more_body:
            self._enter_body()

    # ------------------------------------------------------------ limits

    def _arm(self, seconds: float, late: Callable[[], None]) -> None:
        if not self.transport.is_closing():
            self._timer = self.loop.call_later(seconds, late)

    def _enter_body(self) -> None:
        """A head ended and its body did not come whole with it: the body's deadline."""
        self._head = _BODY
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._arm(self.body_timeout, self._body_late)

    def _head_over_cap(self, data: bytes) -> None:
        room = self._max_head - self._head
        self._head = self._max_head
        cycle = self.cycle
        if room:
            _feed(self, data[:room])
            if self.transport.is_closing():  # the parser refused it (uvicorn answered 400)
                return
        if self.cycle is cycle:
            self._refuse_head(
                RequestHeaderFieldsTooLarge(
                    f"request line and headers are larger than the limit of "
                    f"{self._max_head} bytes"
                )
            )
            return
        # A head ended within the cap; the rest is its body or the next request.
        self._new_cycle()
        self.data_received(data[room:])

    def _head_late(self) -> None:
        self._timer = None
        if not self._head:
            self.transport.close()  # nothing of a request arrived: no one to answer
            return
        self._refuse_head(
            RequestTimeout(f"request head not received within {self.header_timeout:g} s")
        )

    def _refuse_head(self, exc: GatewayError) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The previous request's response is still under way: an answer now would be
            # taken for its answer.
            self.transport.close()
            return
        self._answer(exc)

    def _body_late(self) -> None:
        self._timer = None
        if self.flow.read_paused:
            self._arm(self.body_timeout, self._body_late)  # we stopped reading, not the client
            return
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            self.transport.close()
            return
        # What the app's receive() sees when the client is gone: the request is dropped.
        cycle.disconnected = True
        cycle.message_event.set()
        self._answer(RequestTimeout(f"request body not received within {self.body_timeout:g} s"))

    def _answer(self, exc: GatewayError) -> None:
        """Send ``exc`` in the wire format of the route asked for, then half-close, stop
        reading, and close after a moment."""
        logger.debug("%s from %s: %s", exc.status, self.client, exc.message)
        path = getattr(self, "url", b"").partition(b"?")[0].decode("latin-1")
        body = error_body(ENDPOINTS.get(path, ("", "openai"))[1], exc)
        phrase = http.HTTPStatus(exc.status).phrase.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (exc.status, phrase, len(body), body)
        )
        self._head = _REFUSED
        if self._timer is not None:
            self._timer.cancel()
        transport = self.transport
        if transport.is_reading():
            transport.pause_reading()
        if transport.can_write_eof():
            transport.write_eof()
        # abort, not close: an answer still unsent after this long is not being read.
        self._timer = self.loop.call_later(_LINGER_SECONDS, transport.abort)


def guarded_protocol(server: ServerSettings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with ``server``'s limits (uvicorn takes a class, not an instance)."""

    class _Guarded(GuardedHttpToolsProtocol):
        max_header_bytes = server.max_header_bytes
        header_timeout = server.header_timeout_seconds
        body_timeout = server.body_timeout_seconds

    return _Guarded


def uvicorn_config(app: CostwardenApp, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        root_path=settings.server.root_path,
        loop="uvloop",
        http=guarded_protocol(settings.server),
        # No route speaks WebSocket; "auto" would turn upgrades on if a WebSocket library
        # happened to be installed.
        ws="none",
        lifespan="on",
        access_log=False,
        # Nothing reads the client's address, so trusting X-Forwarded-For from a local
        # proxy would buy nothing and cost a middleware call on every request.
        proxy_headers=False,
        log_config=None,
        server_header=False,
        date_header=False,
        backlog=4096,
        timeout_keep_alive=30,
    )


class GatewayServer(uvicorn.Server):
    """Ends live event streams (``/admin/events``) when a shutdown signal arrives: uvicorn
    waits for open responses to finish before it shuts the app down, and an event stream
    never finishes by itself, so one open dashboard would otherwise hold SIGTERM up until
    the supervisor kills the process, ledger rows unwritten."""

    def __init__(self, config: uvicorn.Config, app: CostwardenApp) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        # A signal handler may run in the middle of the loop's own work: schedule, not call.
        loop.call_soon_threadsafe(self._app.events.end_streams)


def serve(settings: Settings) -> None:
    app = create_app(settings)
    configure_logging(settings.server.log_level, app.secrets())
    server = GatewayServer(uvicorn_config(app, settings), app)
    logger.info("listening on http://%s:%d", settings.server.host, settings.server.port)
    server.run()
    if not server.started:
        raise SystemExit(3)
