"""Gemini's answers in the OpenAI format: response bodies, event streams and usage.

The Gemini adapter (:mod:`costwarden.providers.gemini`) presents itself as an OpenAI one, so
what Google sends back is converted here: a ``GenerateContentResponse`` into a
``chat.completion``, a ``streamGenerateContent?alt=sse`` stream into
``chat.completion.chunk`` events, a ``batchEmbedContents`` answer into an embeddings list.

Usage goes through one function, :func:`openai_usage`, for bodies and streams alike, and
the adapter's ``usage_from_body`` reads it back with the OpenAI adapter's own reader: the
usage a body is billed for and the usage a stream is billed for cannot drift apart. Gemini
counts cached tokens inside ``promptTokenCount`` and thinking outside
``candidatesTokenCount``; OpenAI counts both inside its totals (and so does
:class:`costwarden.pricing.TokenUsage`), as genai-prices' own Google usage extractor does.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any

import orjson

from costwarden.pricing import TokenUsage
from costwarden.providers.base import StreamDecoder
from costwarden.providers.openai import usage_from_openai

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

SSE_DONE = b"data: [DONE]\n\n"
# An upstream event longer than this without ending breaks the stream (the gateway's own
# splitter caps the events it is given; this caps what waits here for its end).
MAX_EVENT_BYTES = 16 * 1024 * 1024

_FINISH: dict[str, str] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
}


class StreamEventTooLarge(ConnectionError):
    """Gemini sent an event longer than the limit without ending it.

    A ``ConnectionError``, as the upstream client's own ``ResponseTooLarge`` is: the relay
    then treats it as the upstream's failure (a 502 event, a breaker failure), not as a
    fault of the gateway's.
    """


# --------------------------------------------------------------------------- shared mappings


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def openai_usage(meta: Any) -> JSON:
    """OpenAI ``usage`` for a Gemini ``usageMetadata``: every prompt token (cached and tool
    prompt tokens included) in ``prompt_tokens``, thinking inside ``completion_tokens``."""
    meta = meta if isinstance(meta, dict) else {}
    prompt = _int(meta.get("promptTokenCount")) + _int(meta.get("toolUsePromptTokenCount"))
    thoughts = _int(meta.get("thoughtsTokenCount"))
    completion = _int(meta.get("candidatesTokenCount")) + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": _int(meta.get("cachedContentTokenCount"))},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def token_usage(meta: Any) -> TokenUsage:
    """What a Gemini ``usageMetadata`` is billed as (the same path a stream's usage takes)."""
    return usage_from_openai(openai_usage(meta))


def finish_reason(reason: Any, called: bool) -> str:
    """OpenAI ``finish_reason`` for a Gemini ``finishReason`` (others end as ``stop``)."""
    mapped = _FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"
    return "tool_calls" if called and mapped == "stop" else mapped


def tool_call(call: JSON) -> JSON:
    """OpenAI tool call for a Gemini ``functionCall`` (which has no id unless it says one)."""
    args = call.get("args")
    call_id = call.get("id")
    return {
        "id": call_id if isinstance(call_id, str) and call_id else "call_" + secrets.token_hex(12),
        "type": "function",
        "function": {
            "name": call.get("name"),
            "arguments": orjson.dumps(args if args is not None else {}).decode(),
        },
    }


def _first_candidate(body: JSON) -> JSON | None:
    candidates = body.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        first: JSON = candidates[0]
        return first
    return None


def _parts(candidate: JSON) -> Iterator[tuple[str, Any]]:
    """("text", str) and ("call", functionCall) of a candidate; thoughts are left out (a chat
    completion has no place for them) and so is what the request never asked for."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict) or part.get("thought") is True:
            continue
        if isinstance(part.get("text"), str):
            yield "text", part["text"]
        elif isinstance(part.get("functionCall"), dict):
            yield "call", part["functionCall"]


def _blocked(body: JSON) -> bool:
    feedback = body.get("promptFeedback")
    return isinstance(feedback, dict) and feedback.get("blockReason") is not None


def _completion_id(body: JSON) -> str:
    rid = body.get("responseId")
    return "chatcmpl-" + (rid if isinstance(rid, str) and rid else secrets.token_hex(12))


def openai_error(error: Any) -> JSON:
    """OpenAI ``error`` object for a Google one (``{code, message, status}``)."""
    error = error if isinstance(error, dict) else {}
    message = error.get("message")
    status = error.get("status")
    return {
        "message": message if isinstance(message, str) and message else "upstream error",
        "type": "server_error",
        "param": None,
        "code": status if isinstance(status, str) else None,
    }


# --------------------------------------------------------------------------- bodies


def openai_completion(body: JSON, model: str) -> JSON:
    """A ``chat.completion`` for a ``GenerateContentResponse`` (ValueError if it has no
    answer and says of no blocked prompt)."""
    if not isinstance(body, dict):
        raise ValueError("the Gemini response is not an object")
    candidate = _first_candidate(body)
    if candidate is None and not _blocked(body):
        raise ValueError("the Gemini response has no candidate")
    texts: list[str] = []
    calls: list[JSON] = []
    for kind, value in _parts(candidate or {}):
        if kind == "text":
            texts.append(value)
        else:
            calls.append(tool_call(value))
    if candidate is None:
        reason = "content_filter"  # the prompt was blocked: no answer at all
    else:
        reason = finish_reason(candidate.get("finishReason"), bool(calls))
    message: JSON = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "id": _completion_id(body),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
        "usage": openai_usage(body.get("usageMetadata")),
    }


def openai_embeddings(body: JSON, model: str) -> JSON:
    """An OpenAI embeddings list for a ``batchEmbedContents`` (or ``embedContent``) answer.

    The vectors are float arrays whatever ``encoding_format`` the client asked for: the
    answer is converted without the request (the official SDKs take floats either way)."""
    if not isinstance(body, dict):
        raise ValueError("the Gemini response is not an object")
    found = body.get("embeddings")
    if found is None and isinstance(body.get("embedding"), dict):
        found = [body["embedding"]]
    if not isinstance(found, list):
        raise ValueError("the Gemini response has no embeddings")
    data = []
    for i, item in enumerate(found):
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list):
            raise ValueError("a Gemini embedding has no values")
        data.append({"object": "embedding", "index": i, "embedding": values})
    tokens = embeddings_usage(body).input_tokens
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def embeddings_usage(body: JSON) -> TokenUsage:
    """The prompt tokens of an embeddings answer (``usageMetadata.promptTokenCount``)."""
    meta = body.get("usageMetadata") if isinstance(body, dict) else None
    prompt = _int(meta.get("promptTokenCount")) if isinstance(meta, dict) else 0
    return TokenUsage(input_tokens=prompt)


# --------------------------------------------------------------------------- streams


def _event(payload: JSON) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class GeminiStreamDecoder(StreamDecoder):
    """Gemini's ``alt=sse`` stream in, OpenAI ``chat.completion.chunk`` events out.

    Each Gemini event is a whole ``GenerateContentResponse`` holding the text that is new
    and, in the last ones, the finish reason and the usage (the last ``usageMetadata`` is
    the whole call's). Text parts become content deltas at once; a ``functionCall`` (Gemini
    sends it whole) becomes one tool-call delta with its complete arguments. Gemini's
    stream has no end marker: it ends when the connection does, so the finish chunk, the
    usage chunk and ``data: [DONE]`` come from :meth:`flush` -- and only when a finish
    reason was seen: a stream cut short before it is billed as one.

    Bytes may be split anywhere: events wait in a buffer until their blank line arrives,
    with any SSE line ending (Google sends ``\\r\\n``). A Google ``{"error": ...}`` event
    becomes an OpenAI error event and ends the output.
    """

    def __init__(
        self, model: str, *, max_event_bytes: int = MAX_EVENT_BYTES, created: int | None = None
    ) -> None:
        self._model = model
        self._max = max_event_bytes
        self._buf = bytearray()
        self._cr = False  # the last chunk ended in "\r": a "\n" next belongs to it
        self._id: str | None = None
        self._created = int(time.time()) if created is None else created
        self._role_sent = False
        self._calls = 0
        self._reason: Any = None
        self._finished = False  # a finish reason (or a blocked prompt) was seen
        self._blocked = False
        self._usage: Any = None
        self._over = False  # an error event, or the end, went out: nothing more

    def feed(self, data: bytes) -> bytes:
        out = [self._handle(event) for event in self._split(data)]
        return b"".join(out)

    def flush(self) -> bytes:
        rest = bytes(self._buf)
        self._buf.clear()
        out = self._handle(rest.rstrip(b"\n")) if rest.strip() else b""
        if self._over or not self._finished:
            return out
        self._over = True
        reason = finish_reason(self._reason, bool(self._calls))
        if self._blocked:
            reason = "content_filter"
        tail = [out]
        if not self._role_sent:
            tail.append(self._role())
        tail.append(self._chunk({}, reason))
        usage = {**self._head(), "choices": [], "usage": openai_usage(self._usage)}
        tail.append(_event(usage))
        tail.append(SSE_DONE)
        return b"".join(tail)

    # ------------------------------------------------------------------ framing

    def _split(self, data: bytes) -> list[bytes]:
        """The events ``data`` completes, each without its blank line."""
        if self._cr or data.find(b"\r") >= 0:
            data = self._lf(data)
        buf = self._buf
        start = max(0, len(buf) - 1)  # a "\n\n" may straddle the old bytes and the new
        buf += data
        events: list[bytes] = []
        cut = 0
        while True:
            end = buf.find(b"\n\n", max(start, cut))
            if end < 0:
                break
            events.append(bytes(buf[cut:end]))
            cut = end + 2
        if cut:
            del buf[:cut]
        if len(buf) > self._max:
            raise StreamEventTooLarge(f"an event grew past {self._max} bytes without ending")
        return events

    def _lf(self, data: bytes) -> bytes:
        """``data`` with every line ending as "\\n" (a "\\r\\n" may straddle two reads)."""
        if self._cr:
            self._cr = False
            if data[:1] == b"\n":
                data = data[1:]
        self._cr = data[-1:] == b"\r"
        return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    # ------------------------------------------------------------------ events

    def _handle(self, raw: bytes) -> bytes:
        if self._over:
            return b""
        lines = [
            line[6:] if line.startswith(b"data: ") else line[5:]
            for line in raw.split(b"\n")
            if line.startswith(b"data:")
        ]
        if not lines:
            return b""  # a comment or a keep-alive
        try:
            obj = orjson.loads(b"\n".join(lines))
        except orjson.JSONDecodeError:
            logger.warning("dropping a Gemini stream event that is not JSON (%d bytes)", len(raw))
            return b""
        if not isinstance(obj, dict):
            return b""
        if obj.get("error") is not None:
            self._over = True
            return _event({"error": openai_error(obj["error"])})
        return b"".join(self._response(obj))

    def _response(self, obj: JSON) -> Iterator[bytes]:
        if self._id is None:
            self._id = _completion_id(obj)
        if isinstance(obj.get("usageMetadata"), dict):
            self._usage = obj["usageMetadata"]  # cumulative: the last one is the call's
        if _blocked(obj):
            self._blocked = self._finished = True
        candidate = _first_candidate(obj) or {}
        for kind, value in _parts(candidate):
            if kind == "text":
                if value:
                    if not self._role_sent:
                        yield self._role()
                    yield self._chunk({"content": value})
                continue
            call = {"index": self._calls, **tool_call(value)}
            self._calls += 1
            delta: JSON = {"tool_calls": [call]}
            if not self._role_sent:
                self._role_sent = True
                delta = {"role": "assistant", "content": None, **delta}
            yield self._chunk(delta)
        if candidate.get("finishReason") is not None:
            self._reason = candidate["finishReason"]
            self._finished = True

    def _role(self) -> bytes:
        self._role_sent = True
        return self._chunk({"role": "assistant", "content": ""})

    def _head(self) -> JSON:
        if self._id is None:  # an answer that never said its responseId
            self._id = "chatcmpl-" + secrets.token_hex(12)
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }

    def _chunk(self, delta: JSON, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _event({**self._head(), "choices": [choice]})
