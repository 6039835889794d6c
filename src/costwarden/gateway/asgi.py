"""Small ASGI helpers for the hot path (no framework objects per request)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from costwarden.core.errors import ClientDisconnected, RequestTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = b"application/json"
# A scope key our server (server.GuardedHttpToolsProtocol) puts in every request's scope
# (None): the app may set it to the task serving the request, which the server cancels with
# the message CLIENT_GONE when the client's connection is lost before the response is
# complete -- no task awaiting ``receive()`` is needed. Under another server it is absent.
ON_DISCONNECT = "costwarden.on_disconnect"
CLIENT_GONE = "the client disconnected"


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    """The whole request body, refusing (413) as soon as it is known to exceed ``limit``.

    ClientDisconnected if the client goes away (or is cut off for sending too slowly)
    before the body is whole: a truncated body must not be forwarded or billed, even when
    the part that came happens to parse.
    """
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body is larger than the limit of {limit} bytes")
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise RequestTooLarge(f"request body is larger than the limit of {limit} bytes")
        # Only an empty body can be a disconnect: the type is not looked at otherwise.
        if not body and message["type"] == "http.disconnect":
            raise ClientDisconnected("the client went away before sending its request body")
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("the client went away while sending its request body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"request body is larger than the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def send_bytes(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
