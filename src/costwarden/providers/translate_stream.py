"""Response translation between the Anthropic Messages and OpenAI chat completion formats:
response bodies and, above all, streams.

The stream translators are fed whole server-sent events as the upstream produces them and
return the bytes to relay to the client, event for event where the formats allow it: a text
delta becomes a text delta at once, so translation adds no latency to a stream. Bodies and
streams share the stop reason, usage, error and id mappings below. Requests are translated in
:mod:`costwarden.providers.translate`, which re-exports everything public here.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any

import orjson

from costwarden.core.errors import UpstreamError
from costwarden.providers.base import token_count

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

SSE_DONE = b"data: [DONE]\n\n"

_FINISH_FROM_STOP: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_STOP_FROM_FINISH: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_OPENAI_ERROR_TYPES: dict[str, str] = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_exceeded",
    "overloaded_error": "server_error",
    "api_error": "server_error",
}
_ANTHROPIC_ERROR_TYPES: dict[str, str] = {
    "invalid_request_error": "invalid_request_error",
    "requests": "rate_limit_error",
    "tokens": "rate_limit_error",
    "rate_limit_exceeded": "rate_limit_error",
    "insufficient_quota": "rate_limit_error",
    "server_error": "api_error",
}


# --------------------------------------------------------------------------- shared mappings


def openai_finish_reason(stop_reason: Any) -> str:
    """Anthropic ``stop_reason`` -> OpenAI ``finish_reason`` (unknown ones end as ``stop``)."""
    return _FINISH_FROM_STOP.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def anthropic_stop_reason(finish_reason: Any) -> str:
    """OpenAI ``finish_reason`` -> Anthropic ``stop_reason`` (unknown ones end as end_turn)."""
    if isinstance(finish_reason, str):
        return _STOP_FROM_FINISH.get(finish_reason, "end_turn")
    return "end_turn"


def openai_usage_from_anthropic(usage: Any) -> JSON:
    """OpenAI ``usage``: Anthropic counts cache reads and writes outside ``input_tokens``,
    OpenAI counts every prompt token in ``prompt_tokens`` and names the cached part."""
    usage = usage if isinstance(usage, dict) else {}
    read = token_count(usage.get("cache_read_input_tokens"))
    written = token_count(usage.get("cache_creation_input_tokens"))
    prompt = token_count(usage.get("input_tokens")) + read + written
    completion = token_count(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read},
    }


def anthropic_usage_from_openai(usage: Any) -> JSON:
    """Anthropic ``usage``: ``input_tokens`` are the uncached prompt tokens."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    prompt = token_count(usage.get("prompt_tokens"))
    cached = token_count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = min(prompt, cached)
    return {
        "input_tokens": prompt - cached,
        "output_tokens": token_count(usage.get("completion_tokens")),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def _error_message(error: JSON) -> str:
    message = error.get("message")
    return message if isinstance(message, str) and message else "upstream error"


def openai_error_from_anthropic(error: Any) -> JSON:
    """OpenAI ``error`` object for an Anthropic ``error`` object."""
    error = error if isinstance(error, dict) else {}
    etype = error.get("type")
    return {
        "message": _error_message(error),
        "type": _OPENAI_ERROR_TYPES.get(etype, "server_error")
        if isinstance(etype, str)
        else "server_error",
        "param": None,
        "code": etype if isinstance(etype, str) else None,
    }


def anthropic_error_from_openai(error: Any) -> JSON:
    """Anthropic ``error`` object for an OpenAI ``error`` object."""
    error = error if isinstance(error, dict) else {}
    etype = error.get("type")
    mapped = (
        _ANTHROPIC_ERROR_TYPES.get(etype, "api_error") if isinstance(etype, str) else "api_error"
    )
    return {"type": mapped, "message": _error_message(error)}


def _strip_prefix(value: Any, prefix: str) -> str:
    text = value if isinstance(value, str) and value else "unknown"
    return text[len(prefix) :] if text.startswith(prefix) else text


def openai_id(anthropic_id: Any) -> str:
    return "chatcmpl-" + _strip_prefix(anthropic_id, "msg_")


def anthropic_id(openai_id: Any) -> str:
    return "msg_" + _strip_prefix(openai_id, "chatcmpl-")


# --------------------------------------------------------------------------- bodies


def openai_tool_call(block: JSON) -> JSON:
    """OpenAI tool call for an Anthropic ``tool_use`` block."""
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": arguments},
    }


def anthropic_to_openai_response(body: dict[str, Any], *, model: str) -> JSON:
    """An OpenAI ``chat.completion`` equivalent to an Anthropic Messages response."""
    texts: list[str] = []
    calls: list[JSON] = []
    content = body.get("content")
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append(openai_tool_call(block))
        # thinking blocks have no place in a chat completion and are left out
    message: JSON = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "id": openai_id(body.get("id")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": openai_finish_reason(body.get("stop_reason")),
            }
        ],
        "usage": openai_usage_from_anthropic(body.get("usage")),
    }


def openai_to_anthropic_response(body: dict[str, Any], *, model: str) -> JSON:
    """An Anthropic Messages response equivalent to an OpenAI ``chat.completion``."""
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or not isinstance(message, dict):
        raise UpstreamError("the upstream chat completion has no choice to translate")
    content: list[JSON] = []
    text = message.get("content")
    if isinstance(text, list):  # some OpenAI-compatible servers answer with parts
        text = "".join(
            p["text"] for p in text if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            continue
        try:
            tool_input = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            tool_input = None
        if not isinstance(tool_input, dict):
            raise UpstreamError("the upstream model's tool call arguments are not a JSON object")
        call_id = call.get("id") or "toolu_" + secrets.token_hex(12)
        content.append(
            {"type": "tool_use", "id": call_id, "name": fn.get("name"), "input": tool_input}
        )
    stop_reason = anthropic_stop_reason(choice.get("finish_reason"))
    if isinstance(refusal, str) and refusal:
        stop_reason = "refusal"
    return {
        "id": anthropic_id(body.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": anthropic_usage_from_openai(body.get("usage")),
    }


# --------------------------------------------------------------------------- SSE framing


def _iter_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The data of every complete event in ``buffer``, and the incomplete rest.

    Only ``data:`` lines matter: both formats repeat the event name inside the JSON.
    """
    if buffer.find(b"\r") >= 0:
        buffer = buffer.replace(b"\r\n", b"\n")
    *complete, rest = buffer.split(b"\n\n")
    events: list[bytes] = []
    for raw in complete:
        data = [
            line[6:] if line.startswith(b"data: ") else line[5:]
            for line in raw.split(b"\n")
            if line.startswith(b"data:")
        ]
        if data:
            events.append(b"\n".join(data))
    return events, rest


def _load(data: bytes) -> JSON | None:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        logger.warning("dropping an upstream stream event that is not JSON (%d bytes)", len(data))
        return None
    return obj if isinstance(obj, dict) else None


def _anthropic_event(payload: JSON) -> bytes:
    kind: str = payload["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _openai_event(payload: JSON) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


# --------------------------------------------------------------------------- Anthropic -> OpenAI


class AnthropicToOpenAIStream:
    """Upstream Anthropic Messages SSE in, OpenAI ``chat.completion.chunk`` SSE out.

    The role arrives with the first content block, as OpenAI sends it: a text (or thinking)
    block opens with ``{"role": "assistant", "content": ""}``, a tool call carries the role
    itself with ``content: null``, so a tool-only answer accumulates to ``content: None`` as
    its non-stream translation does. ``finished`` turns true at ``message_stop``, once the
    finish chunk, the usage chunk (when the client asked for ``include_usage``) and
    ``data: [DONE]`` have been produced. An upstream ``error`` event becomes an OpenAI
    ``data: {"error": ...}`` event and is kept in ``error``; the stream then is not finished.
    """

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self.finished = False
        self.error: JSON | None = None
        self._model = model
        self._include_usage = include_usage
        self._id = "chatcmpl-" + secrets.token_hex(12)
        self._created = int(time.time())
        self._rest = b""
        self._usage: JSON = {}
        self._stop_reason: Any = None
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self._role_sent = False

    def feed(self, events: bytes) -> bytes:
        if self.finished:
            return b""
        parsed, self._rest = _iter_events(self._rest + events)
        out: list[bytes] = []
        for data in parsed:
            event = _load(data)
            if event is not None:
                out.extend(self._handle(event))
        return b"".join(out)

    def _handle(self, event: JSON) -> Iterator[bytes]:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                yield self._chunk({"content": delta["text"]})
            elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                tool = self._tools.get(event.get("index", -1))
                if tool is not None:
                    call = {"index": tool, "function": {"arguments": delta["partial_json"]}}
                    yield self._chunk({"tool_calls": [call]})
            # thinking, signature and citation deltas have no chat completion equivalent
        elif kind == "content_block_start":
            yield from self._block_start(event)
        elif kind == "message_start":
            message = event.get("message") or {}
            self._id = openai_id(message.get("id"))
            if isinstance(message.get("usage"), dict):
                self._usage = dict(message["usage"])
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            if delta.get("stop_reason") is not None:
                self._stop_reason = delta["stop_reason"]
            usage = event.get("usage")
            if isinstance(usage, dict):
                # message_delta usage is cumulative; absent or null fields keep the start's.
                self._usage.update({k: v for k, v in usage.items() if v is not None})
        elif kind == "message_stop":
            if not self._role_sent:
                yield self._role_chunk()
            yield self._chunk({}, openai_finish_reason(self._stop_reason))
            if self._include_usage:
                yield _openai_event({**self._head(), "choices": [], "usage": self.usage()})
            yield SSE_DONE
            self.finished = True
        elif kind == "error":
            self.error = openai_error_from_anthropic(event.get("error"))
            yield _openai_event({"error": self.error})
        # ping and event types added after this was written carry nothing to translate

    def _block_start(self, event: JSON) -> Iterator[bytes]:
        block = event.get("content_block") or {}
        if block.get("type") != "tool_use":
            if not self._role_sent:
                yield self._role_chunk()
            if block.get("type") == "text" and block.get("text"):
                yield self._chunk({"content": block["text"]})
        else:
            index = len(self._tools)
            self._tools[event.get("index", -1)] = index
            tool_input = block.get("input")
            call = {
                "index": index,
                "id": block.get("id"),
                "type": "function",
                "function": {
                    "name": block.get("name"),
                    "arguments": orjson.dumps(tool_input).decode() if tool_input else "",
                },
            }
            delta: JSON = {"tool_calls": [call]}
            if not self._role_sent:
                delta = {"role": "assistant", "content": None, **delta}
                self._role_sent = True
            yield self._chunk(delta)

    def _role_chunk(self) -> bytes:
        self._role_sent = True
        return self._chunk({"role": "assistant", "content": ""})

    def usage(self) -> JSON:
        """The usage reported so far, in OpenAI form."""
        return openai_usage_from_anthropic(self._usage)

    def _head(self) -> JSON:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }

    def _chunk(self, delta: JSON, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _openai_event({**self._head(), "choices": [choice]})


# --------------------------------------------------------------------------- OpenAI -> Anthropic


class OpenAIToAnthropicStream:
    """Upstream OpenAI chunk SSE in, Anthropic Messages SSE out.

    OpenAI reports usage only at the end (the upstream request asks for ``include_usage``),
    so ``message_start`` announces zero tokens and the closing ``message_delta`` carries the
    whole usage, input tokens included: the Anthropic SDK (checked against anthropic 2.12's
    ``accumulate_event``) lets a ``message_delta``'s non-null ``input_tokens``,
    ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` overwrite the ones from
    ``message_start``. The stream closes (``message_delta``, ``message_stop``) as soon as
    both the finish reason and the usage are known, or at ``data: [DONE]``.
    """

    def __init__(self, *, model: str) -> None:
        self.finished = False
        self.error: JSON | None = None
        self._model = model
        self._rest = b""
        self._started = False
        self._open: int | None = None  # index of the content block being streamed
        self._open_text = False
        self._blocks = 0
        self._tools: dict[int, int] = {}  # OpenAI tool call index -> Anthropic block index
        self._finish: Any = None
        self._refusal = False
        self._usage: JSON | None = None

    def feed(self, events: bytes) -> bytes:
        if self.finished:
            return b""
        parsed, self._rest = _iter_events(self._rest + events)
        out: list[bytes] = []
        for data in parsed:
            if self.finished:
                break
            if data.strip() == b"[DONE]":
                out.extend(self._close())
                continue
            chunk = _load(data)
            if chunk is not None:
                out.extend(self._handle(chunk))
        return b"".join(out)

    def usage(self) -> JSON:
        """The usage reported so far, in Anthropic form."""
        return anthropic_usage_from_openai(self._usage)

    def _handle(self, chunk: JSON) -> Iterator[bytes]:
        if chunk.get("error") is not None:
            self.error = anthropic_error_from_openai(chunk["error"])
            yield _anthropic_event({"type": "error", "error": self.error})
            return
        if not self._started:
            yield self._message_start(chunk.get("id"))
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            # The upstream request never asks for n > 1, so only choice 0 exists.
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                yield from self._delta(delta)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        if self._finish is not None and self._usage is not None:
            yield from self._close()

    def _delta(self, delta: JSON) -> Iterator[bytes]:
        text = delta.get("content")
        if isinstance(text, str) and text:
            yield from self._text(text)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._refusal = True
            yield from self._text(refusal)
        calls = delta.get("tool_calls")
        for position, call in enumerate(calls if isinstance(calls, list) else []):
            if isinstance(call, dict):
                yield from self._tool_call(call, position)

    def _message_start(self, chunk_id: Any) -> bytes:
        self._started = True
        message: JSON = {
            "id": anthropic_id(chunk_id),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 0,
                "output_tokens": 0,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
            },
        }
        return _anthropic_event({"type": "message_start", "message": message})

    def _start_block(self, block: JSON) -> Iterator[bytes]:
        yield from self._stop_block()
        self._open = self._blocks
        self._blocks += 1
        yield _anthropic_event(
            {"type": "content_block_start", "index": self._open, "content_block": block}
        )

    def _stop_block(self) -> Iterator[bytes]:
        if self._open is not None:
            yield _anthropic_event({"type": "content_block_stop", "index": self._open})
            self._open = None
            self._open_text = False

    def _text(self, text: str) -> Iterator[bytes]:
        if not self._open_text:
            yield from self._start_block({"type": "text", "text": ""})
            self._open_text = True
        delta = {"type": "text_delta", "text": text}
        yield _anthropic_event({"type": "content_block_delta", "index": self._open, "delta": delta})

    def _tool_call(self, call: JSON, position: int) -> Iterator[bytes]:
        index = call.get("index", position)
        fn = call.get("function")
        fn = fn if isinstance(fn, dict) else {}
        if index not in self._tools:
            block: JSON = {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + secrets.token_hex(12),
                "name": fn.get("name") or "",
                "input": {},
            }
            yield from self._start_block(block)
            self._tools[index] = self._blocks - 1
        arguments = fn.get("arguments")
        if isinstance(arguments, str) and arguments:
            # OpenAI streams parallel calls one after the other; were they ever interleaved,
            # the fragment still goes to its own block's index.
            delta = {"type": "input_json_delta", "partial_json": arguments}
            yield _anthropic_event(
                {"type": "content_block_delta", "index": self._tools[index], "delta": delta}
            )

    def _close(self) -> Iterator[bytes]:
        if self.finished:
            return
        if not self._started:
            yield self._message_start(None)
        yield from self._stop_block()
        stop_reason = anthropic_stop_reason(self._finish)
        if self._refusal and stop_reason == "end_turn":
            stop_reason = "refusal"
        usage = self.usage()
        del usage["cache_creation_input_tokens"]  # unknown to OpenAI: keep message_start's 0
        yield _anthropic_event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": usage,
            }
        )
        yield _anthropic_event({"type": "message_stop"})
        self.finished = True
