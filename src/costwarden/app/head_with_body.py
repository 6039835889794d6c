"""A response's head sent in one write with the start of its body.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, and the body when it sends ``http.response.body``: two ``send``
calls on the socket for every response, two TCP segments, and a client that wakes up for
the head only to wait for the body. Every unary answer of the gateway sends both messages
in the same task step, so the second write follows the first at once.

``HeadWithBody`` stands in for the transport of one uvicorn response cycle: the head's
write is held and goes out with the next write (the body's first bytes), as one buffer.
If nothing else is written in the same turn of the event loop (a stream whose first event
is not there yet, a live event stream), a callback scheduled with the head sends it alone
at the end of that turn, so no client waits on a held head. A ``100 Continue`` interim
answer comes before the response starts and is never held.

Counted with strace at c=1: 3.0 ``write`` calls per proxied request before, 2.0 after (one
to the upstream, one answer). Cost: one object and one ``call_soon`` per response.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

# A body at least this large is sent with writelines, which does not copy it behind the head.
_LARGE_BODY = 64 * 1024


class _Cycle(Protocol):
    response_started: bool


class HeadWithBody:
    """The transport of one response cycle; what is not a write or close is the real one's."""

    __slots__ = ("_transport", "_cycle", "_loop", "_head")

    def __init__(
        self, transport: asyncio.Transport, cycle: _Cycle, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._transport = transport
        self._cycle = cycle
        self._loop = loop
        # None until the head is written; then the held head, or b"" once it went out.
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head:
            self._head = b""
            if len(data) < _LARGE_BODY:
                self._transport.write(head + data)
            else:
                self._transport.writelines((head, data))
        elif head is None and self._cycle.response_started:
            # uvicorn's first write after the response started is the head.
            self._head = data
            self._loop.call_soon(self._send_head)
        else:
            self._transport.write(data)

    def _send_head(self) -> None:
        head = self._head
        if head:
            self._head = b""
            if not self._transport.is_closing():  # the connection was dropped meanwhile
                self._transport.write(head)

    def close(self) -> None:
        self._send_head()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
