"""Wire-format helpers for the mock LLM upstream.

Pure functions that count prompt tokens deterministically and build the exact JSON / SSE
payloads the official OpenAI and Anthropic SDKs parse. Kept free of any I/O so the server
module stays small and the payload shapes can be unit-tested on their own.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import struct
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import orjson

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

SYSTEM_FINGERPRINT = "fp_costwarden_mock"
TOOL_ARGUMENTS = '{"city": "Paris"}'
# The tool-call arguments split into the "token" fragments that are streamed one by one.
TOOL_ARGUMENT_FRAGMENTS: tuple[str, ...] = ('{"', "city", '":', ' "', "Paris", '"}')
TOOL_OUTPUT_TOKENS = len(TOOL_ARGUMENT_FRAGMENTS)
EMBEDDING_DIMS = 8

_PRECOMPUTED_TOKENS = 4096
_TOKENS: tuple[str, ...] = tuple(f"tok{i} " for i in range(_PRECOMPUTED_TOKENS))
_TOKENS_JSON: tuple[bytes, ...] = tuple(orjson.dumps(t) for t in _TOKENS)

MODELS_BODY: bytes = orjson.dumps(
    {
        "object": "list",
        "data": [
            {"id": mid, "object": "model", "created": 1700000000, "owned_by": owner}
            for mid, owner in (
                ("gpt-4o-mini", "openai"),
                ("gpt-4o", "openai"),
                ("o3-mini", "openai"),
                ("text-embedding-3-small", "openai"),
                ("claude-haiku-4-5", "anthropic"),
                ("claude-sonnet-4-5", "anthropic"),
            )
        ],
    }
)

SSE_DONE = b"data: [DONE]\n\n"


# --------------------------------------------------------------------------- tokens


def reply_tokens(n: int) -> Sequence[str]:
    """The first ``n`` reply word tokens: ``"tok0 ", "tok1 ", ...``."""
    if n <= _PRECOMPUTED_TOKENS:
        return _TOKENS[:n]
    return _TOKENS + tuple(f"tok{i} " for i in range(_PRECOMPUTED_TOKENS, n))


def token_json(i: int) -> bytes:
    """JSON string literal of reply token ``i``."""
    if i < _PRECOMPUTED_TOKENS:
        return _TOKENS_JSON[i]
    return orjson.dumps(f"tok{i} ")


@lru_cache(maxsize=512)
def reply_text(n: int) -> str:
    """The full reply made of ``n`` word tokens."""
    return "".join(reply_tokens(n))


def _str_bytes(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


def content_bytes(content: Any) -> int:
    """UTF-8 byte length of the text inside a message ``content`` (string or block list)."""
    if isinstance(content, str):
        return _str_bytes(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if isinstance(part, str):
            total += _str_bytes(part)
            continue
        if not isinstance(part, dict):
            continue
        text = part.get("text")
        if isinstance(text, str):
            total += _str_bytes(text)
        thinking = part.get("thinking")
        if isinstance(thinking, str):
            total += _str_bytes(thinking)
        inner = part.get("content")  # anthropic tool_result
        if inner is not None:
            total += content_bytes(inner)
        tool_input = part.get("input")  # anthropic tool_use
        if tool_input is not None:
            total += len(orjson.dumps(tool_input))
    return total


def tokens_for_bytes(n: int) -> int:
    """``max(1, ceil(n / 4))``: never more tokens than bytes for any non-empty request."""
    return max(1, (n + 3) // 4)


def prompt_tokens(body: JSON) -> int:
    """Deterministic prompt token count for an OpenAI chat or Anthropic messages request."""
    total = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in messages:
            if not isinstance(m, dict):
                continue
            total += content_bytes(m.get("content"))
            calls = m.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict):
                        total += content_bytes(fn.get("arguments"))
    system = body.get("system")
    if system is not None:
        total += content_bytes(system)
    for key in ("tools", "functions"):
        defs = body.get(key)
        if defs:
            total += len(orjson.dumps(defs))
    return tokens_for_bytes(total)


def vary_target(messages: Any, output_tokens: int) -> int:
    """Deterministic output length in ``[1, 2 * output_tokens]`` derived from the messages."""
    if output_tokens <= 0:
        return 0
    digest = hashlib.blake2b(
        orjson.dumps(messages, option=orjson.OPT_SORT_KEYS), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little") % (2 * output_tokens) + 1


def _last_user_text(messages: list[Any]) -> str:
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "user":
        return ""
    content = last.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""


def pick_tool(body: JSON, provider: str) -> str | None:
    """Name of the tool to call: the first tool's, if the last user message asks for weather."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    choice = body.get("tool_choice")
    if choice == "none" or (isinstance(choice, dict) and choice.get("type") == "none"):
        return None
    messages = body.get("messages")
    if not isinstance(messages, list) or "weather" not in _last_user_text(messages).lower():
        return None
    first = tools[0]
    if provider == "openai":
        fn = first.get("function")
        name = fn.get("name") if isinstance(fn, dict) else first.get("name")
    else:
        name = first.get("name")
    return name if isinstance(name, str) and name else "get_weather"


# --------------------------------------------------------------------------- errors

_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request"),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided"),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden"),
    404: ("invalid_request_error", "model_not_found", "The model does not exist"),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached (mock fault)"),
    500: ("server_error", None, "The server had an error while processing your request"),
    503: ("server_error", None, "The engine is currently overloaded"),
}

_ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_body(provider: str, status: int, message: str | None = None) -> bytes:
    """A provider-shaped error payload for ``status``."""
    if provider == "anthropic":
        etype = _ANTHROPIC_ERRORS.get(status, "api_error")
        return orjson.dumps(
            {"type": "error", "error": {"type": etype, "message": message or f"mock {etype}"}}
        )
    fallback = "server_error" if status >= 500 else "invalid_request_error"
    etype, code, text = _OPENAI_ERRORS.get(status, (fallback, None, f"mock error {status}"))
    return orjson.dumps(
        {"error": {"message": message or text, "type": etype, "param": None, "code": code}}
    )


# --------------------------------------------------------------------------- openai


def openai_usage(prompt: int, completion: int, cached: int, reasoning: int) -> JSON:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def openai_completion(
    cid: str,
    model: str,
    text: str | None,
    tool: tuple[str, str] | None,
    finish_reason: str,
    usage: JSON,
    choices: int = 1,
) -> bytes:
    """Non-stream ``chat.completion``; ``tool`` is ``(call_id, name)`` for a tool call;
    ``choices`` copies of the answer (``n``), which ``usage`` must count."""
    message: JSON = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    if tool is not None:
        message["tool_calls"] = [
            {
                "id": tool[0],
                "type": "function",
                "function": {"name": tool[1], "arguments": TOOL_ARGUMENTS},
            }
        ]
    return orjson.dumps(
        {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": i, "message": message, "logprobs": None, "finish_reason": finish_reason}
                for i in range(choices)
            ],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
    )


class OpenAIChunks:
    """Builds ``chat.completion.chunk`` SSE events sharing one precomputed prefix."""

    __slots__ = ("_head", "_tail_open", "_usage_null", "_cid", "_model", "_created")

    def __init__(self, cid: str, model: str, include_usage: bool, index: int = 0) -> None:
        self._cid = cid
        self._model = model
        self._created = int(time.time())
        self._head = (
            b'data: {"id":'
            + orjson.dumps(cid)
            + b',"object":"chat.completion.chunk","created":'
            + str(self._created).encode()
            + b',"model":'
            + orjson.dumps(model)
            + b',"system_fingerprint":"'
            + SYSTEM_FINGERPRINT.encode()
            + b'","choices":[{"index":'
            + str(index).encode()
            + b',"delta":'
        )
        self._usage_null = b',"usage":null' if include_usage else b""
        self._tail_open = b',"logprobs":null,"finish_reason":null}]' + self._usage_null + b"}\n\n"

    def delta(self, delta: bytes) -> bytes:
        return self._head + delta + self._tail_open

    def role(self) -> bytes:
        return self.delta(b'{"role":"assistant","content":"","refusal":null}')

    def content(self, i: int) -> bytes:
        return self._head + b'{"content":' + token_json(i) + b"}" + self._tail_open

    def tool_start(self, call_id: str, name: str) -> bytes:
        return self.delta(
            orjson.dumps(
                {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ],
                }
            )
        )

    def tool_args(self, fragment: str) -> bytes:
        return self.delta(
            b'{"tool_calls":[{"index":0,"function":{"arguments":' + orjson.dumps(fragment) + b"}}]}"
        )

    def finish(self, finish_reason: str) -> bytes:
        return (
            self._head
            + b'{},"logprobs":null,"finish_reason":'
            + orjson.dumps(finish_reason)
            + b"}]"
            + self._usage_null
            + b"}\n\n"
        )

    def usage(self, usage: JSON) -> bytes:
        return (
            b"data: "
            + orjson.dumps(
                {
                    "id": self._cid,
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": self._model,
                    "system_fingerprint": SYSTEM_FINGERPRINT,
                    "choices": [],
                    "usage": usage,
                }
            )
            + b"\n\n"
        )


def embedding_items(inp: Any) -> list[str | list[int]] | None:
    """Normalise an embeddings ``input`` into items; None when the shape is invalid."""
    if isinstance(inp, str):
        return [inp]
    if not isinstance(inp, list) or not inp:
        return None
    if all(isinstance(x, int) and not isinstance(x, bool) for x in inp):
        return [inp]
    items: list[str | list[int]] = []
    for x in inp:
        if isinstance(x, str):
            items.append(x)
        elif isinstance(x, list) and all(isinstance(t, int) for t in x):
            items.append(x)
        else:
            return None
    return items


def embeddings_body(items: list[str | list[int]], model: str, dims: int, as_base64: bool) -> bytes:
    data: list[JSON] = []
    tokens = 0
    for i, item in enumerate(items):
        if isinstance(item, str):
            tokens += tokens_for_bytes(_str_bytes(item))
            raw = item.encode("utf-8", "surrogatepass")
        else:
            tokens += len(item)
            raw = orjson.dumps(item)
        digest = hashlib.shake_128(raw).digest(2 * dims)
        vec = [
            round(int.from_bytes(digest[j : j + 2], "little") / 32767.5 - 1.0, 6)
            for j in range(0, 2 * dims, 2)
        ]
        emb: list[float] | str = (
            base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if as_base64 else vec
        )
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


# --------------------------------------------------------------------------- anthropic


def anthropic_usage(prompt: int, output: int, cache_read: int, cache_write: int) -> JSON:
    """Anthropic usage: ``input_tokens`` excludes cache reads/writes (prompt = sum of all)."""
    read = min(cache_read, prompt)
    write = min(cache_write, prompt - read)
    return {
        "input_tokens": prompt - read - write,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "output_tokens": output,
    }


def anthropic_message(
    mid: str,
    model: str,
    text: str | None,
    tool: tuple[str, str] | None,
    stop_reason: str,
    usage: JSON,
) -> JSON:
    content: list[JSON] = []
    if tool is not None:
        content.append(
            {"type": "tool_use", "id": tool[0], "name": tool[1], "input": {"city": "Paris"}}
        )
    else:
        content.append({"type": "text", "text": text or ""})
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def sse_event(name: str, payload: JSON) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


ANTHROPIC_PING = sse_event("ping", {"type": "ping"})
ANTHROPIC_STOP = sse_event("message_stop", {"type": "message_stop"})
ANTHROPIC_BLOCK_STOP = sse_event("content_block_stop", {"type": "content_block_stop", "index": 0})
ANTHROPIC_TEXT_START = sse_event(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)
_TEXT_DELTA_HEAD = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":'
)
_JSON_DELTA_HEAD = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"input_json_delta","partial_json":'
)


def anthropic_text_delta(i: int) -> bytes:
    return _TEXT_DELTA_HEAD + token_json(i) + b"}}\n\n"


def anthropic_json_delta(fragment: str) -> bytes:
    return _JSON_DELTA_HEAD + orjson.dumps(fragment) + b"}}\n\n"


def anthropic_tool_start(call_id: str, name: str) -> bytes:
    return sse_event(
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": call_id, "name": name, "input": {}},
        },
    )


def anthropic_message_delta(stop_reason: str, output_tokens: int) -> bytes:
    return sse_event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
    )


def anthropic_message_start(mid: str, model: str, usage: JSON) -> bytes:
    """``message_start`` event: empty content, input usage and ``output_tokens: 1``."""
    start_usage = dict(usage)
    start_usage["output_tokens"] = 1
    return sse_event(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        },
    )
