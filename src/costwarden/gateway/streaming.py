"""Relaying an upstream's event stream to the client, and noticing a client that went away.

:func:`pump` forwards whole events as they arrive (split by :class:`~costwarden.gateway.sse.
EventSplitter`), metered, translated into the client's wire format when the upstream speaks
the other one, and scrubbed of credentials. It holds back the client's terminal event
(``data: [DONE]`` / ``event: message_stop``): the caller commits the ledger row first and
sends it after, so a client that saw the end of its stream has its row, even in durable mode
when the gateway is killed the moment after.

:class:`Disconnect` watches ``receive`` for the client going away and cancels the task that
relays to it, which aborts the upstream call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter
from typing import Any

from costwarden.core.records import LedgerRecord
from costwarden.gateway.asgi import CLIENT_GONE, ON_DISCONNECT, Receive, Scope, Send
from costwarden.gateway.sse import EventSplitter
from costwarden.gateway.upstream import Response
from costwarden.providers import translate
from costwarden.providers.base import StreamDecoder, StreamMeter

Translator = translate.AnthropicToOpenAIStream | translate.OpenAIToAnthropicStream

# The event that ends a stream, in each client wire format.
_TERMINAL = {"openai": b"data: [DONE]", "anthropic": b"event: message_stop"}


class Disconnect:
    """While it is on, the client's disconnecting cancels the current task with the message
    ``CLIENT_GONE`` (see :func:`client_gone`), until :meth:`stop`.

    Under our server the task is handed to the server through the scope (``ON_DISCONNECT``):
    nothing runs until the connection is lost. Under another server a task awaits
    ``receive()``, a task per request. Stop it before the last byte of the response is sent
    (after that, ``receive`` reports a disconnect for a completed response too) and before
    anything that must not be cut short, such as the ledger commit.
    """

    __slots__ = ("_scope", "_watch")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        task = asyncio.current_task()
        self._scope: Scope | None = None
        self._watch: asyncio.Task[None] | None = None
        if ON_DISCONNECT in scope:
            scope[ON_DISCONNECT] = task
            self._scope = scope
        elif task is not None:
            self._watch = asyncio.create_task(_watch(receive, task))

    def stop(self) -> None:
        if self._scope is not None:
            self._scope[ON_DISCONNECT] = None
        elif self._watch is not None:
            self._watch.cancel()
            self._watch = None


async def _watch(receive: Receive, task: asyncio.Task[Any]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    task.cancel(CLIENT_GONE)


def client_gone(exc: asyncio.CancelledError) -> bool:
    """Whether this cancellation is a :class:`Disconnect`'s (not a shutdown's)."""
    return exc.args == (CLIENT_GONE,)


class NotWatching:
    """What the proxy holds instead of a :class:`Disconnect` when none is on."""

    __slots__ = ()

    def stop(self) -> None:
        return None


NOT_WATCHING = NotWatching()


def terminal_at(events: bytes, wire: str) -> int:
    """Where the client's terminal event starts in ``events`` (whole events), or -1."""
    marker = _TERMINAL[wire]
    if events.startswith(marker):
        return 0
    found = events.find(b"\n\n" + marker)
    return found + 2 if found >= 0 else -1


async def pump(
    resp: Response,
    decoder: StreamDecoder | None,
    splitter: EventSplitter,
    meter: StreamMeter,
    translator: Translator | None,
    scrub: Callable[[bytes], bytes],
    send: Send,
    wire: str,
    record: LedgerRecord,
    t0: float,
) -> bytes:
    """Relay whole events as they arrive. Returns what waits for the commit: the client's
    terminal event and anything after it, or an unterminated last event."""
    held = b""
    async for chunk in resp.chunks():
        if decoder is not None:  # a codec upstream's own framing, into the wire format's
            chunk = decoder.feed(chunk)
        events = splitter.feed(chunk)
        if not events:
            continue
        out = meter.feed(events)
        if translator is not None and out:
            out = translator.feed(out)
        if not out:
            continue
        out = scrub(out)
        if held:
            held += out
            continue
        cut = terminal_at(out, wire)
        if cut >= 0:
            out, held = out[:cut], out[cut:]
        if out:
            if record.ttft_ms is None and meter.content_events:
                record.ttft_ms = (perf_counter() - t0) * 1000
            await send({"type": "http.response.body", "body": out, "more_body": True})
    if decoder is not None:  # whole events only: the splitter holds nothing of a decoded stream
        rest = decoder.flush()
        tail = meter.feed(rest) if rest else b""
    else:
        rest = splitter.flush()
        tail = meter.feed(rest + b"\n\n") if rest.strip() else b""
    if translator is not None and tail:
        tail = translator.feed(tail)
    return held + scrub(tail) if tail else held
