"""AWS Bedrock ConverseStream -> OpenAI ``chat.completion.chunk`` events, and the stop reason
and usage mappings the stream shares with the body (:mod:`costwarden.providers.bedrock`).

ConverseStream answers in the AWS event-stream binary framing
(``application/vnd.amazon.eventstream``), not in server-sent events. Each message is a
4-byte total length, a 4-byte headers length, a CRC32 of those eight bytes, the headers, a
JSON payload and a CRC32 of everything before it. The ``:event-type`` header names the
event (messageStart, contentBlockStart, contentBlockDelta, contentBlockStop, messageStop,
metadata); ``:message-type`` ``exception`` (or ``error``) frames carry the upstream's errors.

Frames are read by botocore's own parser (``botocore.eventstream.EventStreamBuffer``, the
one boto3 reads Bedrock with: a field-tested reader, not a second implementation), fed bytes
as they arrive, so a frame split across reads waits for its rest. A frame whose CRC does not
match, a frame that cannot be parsed and an exception frame each end the stream with an
:class:`EventStreamError` -- an ``OSError``, which the gateway's stream pump treats as the
upstream's stream breaking: the client gets a 502 error event, the ledger row says
``upstream_error``, the deployment's breaker counts a failure. Nothing corrupt is relayed
and nothing ends silently.

The output ends the way the gateway's OpenAI meter needs it to: the finish chunk at
``messageStop``, then at ``metadata`` (which Bedrock sends last) a usage-only chunk
(``"choices": []``) and ``data: [DONE]``, always -- the meter drops the usage chunk when the
client did not ask for it.
"""

from __future__ import annotations

import secrets
import struct
import time
from typing import Any

import orjson

from costwarden.pricing import TokenUsage
from costwarden.providers.base import StreamDecoder

JSON = dict[str, Any]

_FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}
_DONE = b"data: [DONE]\n\n"


class EventStreamError(OSError):
    """The upstream's event stream cannot be relayed: a frame is corrupt (a CRC mismatch, a
    prelude or headers that do not parse) or the upstream sent an exception frame.

    An ``OSError`` on purpose: the gateway's stream pump treats an ``OSError`` as the
    upstream's stream breaking (502 error event, ``upstream_error`` row, a breaker failure),
    which is what a corrupt stream is."""


def finish_reason(stop_reason: Any) -> str:
    """Converse ``stopReason`` -> OpenAI ``finish_reason`` (unknown ones end as ``stop``)."""
    return _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def token_usage(usage: Any) -> TokenUsage:
    """Converse ``usage`` as the gateway bills it. Bedrock counts cache reads and writes
    outside ``inputTokens`` (``totalTokens`` is the sum of all four); TokenUsage counts
    every prompt token in ``input_tokens`` and names the cached and cache-written parts."""
    usage = usage if isinstance(usage, dict) else {}
    read = _int(usage.get("cacheReadInputTokens"))
    written = _int(usage.get("cacheWriteInputTokens"))
    return TokenUsage(
        input_tokens=_int(usage.get("inputTokens")) + read + written,
        cached_input_tokens=read,
        cache_write_tokens=written,
        output_tokens=_int(usage.get("outputTokens")),
    )


def openai_usage(usage: Any) -> JSON:
    """Converse ``usage`` in OpenAI form: ``prompt_tokens`` counts every prompt token, the
    cached part is ``cached_tokens``, the cache-written part ``cache_write_tokens`` (the
    name the OpenAI SDK's ``PromptTokensDetails`` has for it)."""
    counted = token_usage(usage)
    prompt, completion = counted.input_tokens, counted.output_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": counted.cached_input_tokens,
            "cache_write_tokens": counted.cache_write_tokens,
        },
    }


def completion_id() -> str:
    """A chat completion id: Converse answers carry none in their body."""
    return "chatcmpl-" + secrets.token_hex(12)


class ConverseStreamDecoder(StreamDecoder):
    """One ConverseStream response, its bytes in (as they arrive), OpenAI chunk events out."""

    def __init__(self, model: str) -> None:
        from botocore.eventstream import EventStreamBuffer, ParserError

        self._buffer = EventStreamBuffer()
        # What a frame that cannot be read raises: botocore's own errors, and what its
        # unpacking lets through for a prelude whose lengths make no sense.
        self._unreadable: tuple[type[Exception], ...] = (
            ParserError,
            struct.error,
            KeyError,
            IndexError,
            UnicodeDecodeError,
        )
        self._head = {
            "id": completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self._started = False
        self._tools: dict[int, int] = {}  # contentBlockIndex -> OpenAI tool call index
        self._broken: EventStreamError | None = None  # raised at the next feed or flush
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        if self._broken is not None:
            raise self._broken
        if self.finished:
            return b""  # nothing follows metadata; were anything sent, it is not relayed
        self._buffer.add_data(data)
        out: list[bytes] = []
        try:
            for message in self._buffer:
                out.append(self._message(message.headers, message.payload))
                if self.finished:
                    break
        except self._unreadable as exc:
            self._broken = EventStreamError(f"unreadable event-stream frame ({type(exc).__name__})")
        except EventStreamError as exc:
            self._broken = exc
        decoded = b"".join(out)
        if self._broken is not None and not decoded:
            raise self._broken
        # The events before a broken frame are whole and sound: they go out first.
        return decoded

    def flush(self) -> bytes:
        if self._broken is not None:
            raise self._broken
        return b""  # a frame cut short: the stream ended unfinished, and is billed so

    def _message(self, headers: dict[str, Any], payload: bytes) -> bytes:
        kind = headers.get(":message-type", "event")
        if kind != "event":
            name = headers.get(":exception-type") or headers.get(":error-code") or kind
            raise EventStreamError(f"the upstream's stream reported {name!r}")
        try:
            event = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            raise EventStreamError("an event-stream frame's payload is not JSON") from None
        if not isinstance(event, dict):
            raise EventStreamError("an event-stream frame's payload is not a JSON object")
        return self._event(headers.get(":event-type"), event)

    def _event(self, name: Any, event: JSON) -> bytes:
        if name == "contentBlockDelta":
            return self._delta(event)
        if name == "contentBlockStart":
            start = event.get("start")
            tool = start.get("toolUse") if isinstance(start, dict) else None
            if isinstance(tool, dict):
                return self._tool_start(_int(event.get("contentBlockIndex")), tool)
            return b""
        if name == "messageStop":
            return self._chunk({}, finish_reason(event.get("stopReason")))
        if name == "metadata":
            self.finished = True
            usage = {**self._head, "choices": [], "usage": openai_usage(event.get("usage"))}
            return b"data: " + orjson.dumps(usage) + b"\n\n" + _DONE
        return b""  # messageStart (the role goes out with the first content), contentBlockStop

    def _delta(self, event: JSON) -> bytes:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            return b""
        text = delta.get("text")
        if isinstance(text, str) and text:
            out = b""
            if not self._started:
                self._started = True
                out = self._chunk({"role": "assistant", "content": ""})
            return out + self._chunk({"content": text})
        tool = delta.get("toolUse")
        arguments = tool.get("input") if isinstance(tool, dict) else None
        index = self._tools.get(_int(event.get("contentBlockIndex")))
        if isinstance(arguments, str) and arguments and index is not None:
            call = {"index": index, "function": {"arguments": arguments}}
            return self._chunk({"tool_calls": [call]})
        # reasoningContent: OpenAI's format has no place for the reasoning text (its own
        # reasoning models do not show it either); its tokens are billed as output.
        return b""

    def _tool_start(self, block: int, tool: JSON) -> bytes:
        index = self._tools[block] = len(self._tools)
        call = {
            "index": index,
            "id": tool.get("toolUseId"),
            "type": "function",
            "function": {"name": tool.get("name"), "arguments": ""},
        }
        delta: JSON = {"tool_calls": [call]}
        if not self._started:  # a tool-only answer accumulates to content None, as OpenAI's
            self._started = True
            delta = {"role": "assistant", "content": None, **delta}
        return self._chunk(delta)

    def _chunk(self, delta: JSON, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**self._head, "choices": [choice]}) + b"\n\n"
