"""uvicorn's response cycle, its response head's headers checked in two passes, not two each.

uvicorn's ``RequestResponseCycle.send`` checks every header of ``http.response.start`` with two
regular expressions, one over its name and one over its value: a gateway answer carries about
19 headers (its usage, budget and rate-limit headers, uvicorn's ``date``), so 38 searches a
response. Counted with ``bench/instructions.py`` (callgrind): those searches were 5.7 % of the
gateway's instructions per request, about 58,000 of 1,000,000, nearly all of it per call.

Both expressions are character classes without anchors, so a header list holds a character
they find exactly when its names (or values) joined end to end hold one. :class:`ResponseCycle`
checks the joined names once and the joined values once, by deleting the bytes the expression
does not find (``bytes.translate``: one C pass over a table, a few instructions a byte, where
the regex engine's character class took about 60), then writes the head as uvicorn does.
Anything else -- a body, a second start, a paused or lost connection, the access log on, a
header that fails the check -- goes to uvicorn's own ``send``, which raises its own error for
a bad header. ``tests/app/test_response_cycle.py`` compares the heads with uvicorn's, byte for
byte.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)

_uvicorn_send = RequestResponseCycle.send
# The bytes each of uvicorn's expressions does not find, read off the expressions themselves:
# deleting them leaves nothing exactly when the expression would find nothing.
_NAME_OK = bytes(b for b in range(256) if not HEADER_RE.search(bytes((b,))))
_VALUE_OK = bytes(b for b in range(256) if not HEADER_VALUE_RE.search(bytes((b,))))


class ResponseCycle(RequestResponseCycle):
    """The server gives each cycle uvicorn made this class (``server._new_cycle``)."""

    async def send(self, message: Any) -> None:
        if (
            message["type"] == "http.response.start"
            and not self.response_started
            and not self.disconnected
            and not self.flow.write_paused
            and not self.access_log
        ):
            headers = self.default_headers + list(message.get("headers", []))
            if not b"".join([h[0] for h in headers]).translate(None, _NAME_OK) and not (
                b"".join([h[1] for h in headers]).translate(None, _VALUE_OK)
            ):
                self._write_head(message["status"], headers)
                return
        await _uvicorn_send(self, message)

    def _write_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """uvicorn's start branch after its checks, as uvicorn 0.54 has it."""
        self.response_started = True
        self.waiting_for_100_continue = False
        content = [STATUS_LINE[status]]
        has_connection_close = False
        for name, value in headers:
            name = name.lower()
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection":
                connection = [token.lower().strip() for token in value.split(b",")]
                if b"close" in connection:
                    self.keep_alive = False
                    has_connection_close = True
            content.extend((name, b": ", value, b"\r\n"))
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status not in (204, 304)
        ):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.transport.write(b"".join(content))
