"""A streamed answer assembled into the unary answer it is equivalent to, so that a stream can
fill the cache (which keeps unary bodies: :mod:`costwarden.caching.entry`).

:class:`StreamAssembler` is fed the server-sent events exactly as the client was sent them, in
whatever pieces, and gives the ``chat.completion`` (OpenAI) or ``message`` (Anthropic) the
SDKs would have accumulated from them -- text, refusals, tool calls with their arguments,
thinking blocks with their signatures, the finish or stop reason, and the usage. It answers
None for a stream that did not finish properly: no ``data: [DONE]`` / ``message_stop``, an
error event, JSON it cannot read, a delta of a kind it does not know (it cannot tell what the
answer said), or more bytes than ``max_bytes``. Only a whole, understood answer is cached.

Linear time and memory in the stream's bytes: each byte is scanned for the end of its event
once and copied a bounded number of times, text is joined once per block or choice, and a
tool call's JSON input is parsed once, at the end of its block.
"""

from __future__ import annotations

from typing import Any, Literal

from costwarden.caching.readers import AnthropicReader, Broken, OpenAIReader

JSON = dict[str, Any]

MAX_BYTES = 8 * 1024 * 1024  # a stream past this is not cached: too large to be worth it


class StreamAssembler:
    """Feed it the stream's bytes; :meth:`result` is the unary answer, or None."""

    __slots__ = ("max_bytes", "_reader", "_pending", "_scan", "_cr", "_size", "_state")

    def __init__(
        self,
        wire: Literal["openai", "anthropic"],
        endpoint: str | None = None,
        *,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        """``endpoint`` may be given to check it: only chat completions (OpenAI) and messages
        (Anthropic) stream; embeddings never do."""
        expected = {"openai": "chat.completions", "anthropic": "messages"}.get(wire)
        if expected is None:
            raise ValueError(f"unknown wire format {wire!r}")
        if endpoint is not None and endpoint != expected:
            raise ValueError(f"{wire} streams are {expected} answers, not {endpoint}")
        self.max_bytes = max_bytes
        self._reader: OpenAIReader | AnthropicReader = (
            OpenAIReader() if wire == "openai" else AnthropicReader()
        )
        self._pending = bytearray()  # bytes of events not complete yet
        self._scan = 0  # where in _pending the next event end may start
        self._cr = False  # the last piece ended in "\r": a "\n" next belongs to it
        self._size = 0
        self._state: Literal["open", "done", "failed"] = "open"

    def feed(self, data: bytes) -> None:
        """The next bytes of the stream. Bytes after its end are ignored."""
        if self._state != "open" or not data:
            return
        self._size += len(data)
        if self._size > self.max_bytes:
            self._stop("failed")
            return
        if self._cr or data.find(b"\r") >= 0:
            data = self._lf(data)
        buf = self._pending
        buf += data
        consumed = 0
        end = buf.find(b"\n\n", self._scan)
        while end >= 0:
            try:
                finished = self._event(bytes(buf[consumed:end]))
            except Broken:
                self._stop("failed")
                return
            if finished:
                self._stop("done")
                return
            consumed = end + 2
            end = buf.find(b"\n\n", consumed)
        if consumed:
            del buf[:consumed]
        # The next event end may begin with the last "\n" already here.
        self._scan = max(0, len(buf) - 1)

    def result(self) -> JSON | None:
        """The unary answer when the stream finished properly, else None."""
        return self._reader.answer if self._state == "done" else None

    @property
    def failed(self) -> bool:
        """Whether the stream can no longer give an answer (feeding more will not help)."""
        return self._state == "failed"

    def _stop(self, state: Literal["done", "failed"]) -> None:
        self._state = state
        self._pending = bytearray()

    def _lf(self, data: bytes) -> bytes:
        """Line endings as "\\n" (SSE allows "\\r\\n" and a lone "\\r" too), also for a
        "\\r\\n" split between two pieces."""
        if self._cr and data[:1] == b"\n":
            data = data[1:]
        self._cr = data[-1:] == b"\r"
        return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    def _event(self, raw: bytes) -> bool:
        """Handle one event's lines; True when it ends the stream."""
        name = ""
        data: list[bytes] = []
        for line in raw.split(b"\n"):
            if not line or line[:1] == b":":  # a comment (keep-alive)
                continue
            field, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                data.append(value)
            elif field == b"event":
                name = value.decode("utf-8", "replace")
        if not data:  # an event without data is not dispatched (SSE)
            return False
        return self._reader.event(name, b"\n".join(data))


# --------------------------------------------------------------------------- usage


def set_usage(
    wire: str,
    obj: JSON,
    *,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> JSON:
    """``obj`` (a unary answer) with its usage replaced; ``obj`` itself is left as it was.

    ``input_tokens`` counts the whole prompt, cached and cache-written tokens included (as
    the ledger does). OpenAI counts it so too (``prompt_tokens``, with the cached part in
    ``prompt_tokens_details.cached_tokens`` when there is one; an embeddings list has no
    completion tokens). Anthropic counts the uncached part in ``input_tokens`` and the
    cached and written parts beside it.
    """
    if wire == "anthropic":
        uncached = max(0, input_tokens - cached_input_tokens - cache_write_tokens)
        usage: JSON = {
            "input_tokens": uncached,
            "cache_read_input_tokens": cached_input_tokens,
            "cache_creation_input_tokens": cache_write_tokens,
            "output_tokens": output_tokens,
        }
    elif obj.get("object") == "list":
        usage = {"prompt_tokens": input_tokens, "total_tokens": input_tokens}
    else:
        usage = {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }
        if cached_input_tokens > 0:
            usage["prompt_tokens_details"] = {"cached_tokens": cached_input_tokens}
    return {**obj, "usage": usage}
