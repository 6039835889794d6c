"""A stored answer served to a client that asked for a stream: the unary answer rendered as the
complete event stream the official SDKs parse, all at once (there is nothing to wait for).

The shapes are those the gateway sends everywhere else (``gateway.degraded``,
``providers.translate_stream``): OpenAI ``chat.completion.chunk`` events ending with
``data: [DONE]``, Anthropic ``event:``/``data:`` pairs from ``message_start`` to
``message_stop``. :class:`costwarden.caching.assemble.StreamAssembler` reads the stream back
into the same answer (content, tool calls, finish or stop reason, usage), which the tests
check for generated answers.

An answer the stream formats cannot carry (OpenAI content as a list of parts, audio, a
legacy function call, annotations) raises :class:`ReplayError`: the caller then treats the
entry as a miss rather than serve a stream that says less than the answer did.
"""

from __future__ import annotations

from typing import Any

import orjson

JSON = dict[str, Any]

_OPENAI_DONE = b"data: [DONE]\n\n"
# Message fields a stream carries in its own events, not in message_start's message.
_ANTHROPIC_STREAMED = ("content", "stop_reason", "stop_sequence", "usage")
_TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})
# OpenAI message fields the chunks below carry (others: strings only, or nothing to carry).
_OPENAI_CARRIED = frozenset({"role", "content", "refusal", "tool_calls"})


class ReplayError(ValueError):
    """A stored answer that cannot be rendered as a stream."""


def replay_stream(wire: str, obj: JSON, *, include_usage: bool) -> bytes:
    """``obj``, a unary answer as stored, as the whole SSE stream of the client's ``wire``.

    ``include_usage``: whether the OpenAI client asked for the usage chunk
    (``stream_options.include_usage``); Anthropic streams always carry usage."""
    if wire == "anthropic":
        return _anthropic(obj)
    if wire == "openai":
        return _openai(obj, include_usage)
    raise ValueError(f"unknown wire format {wire!r}")


# --------------------------------------------------------------------------- OpenAI


def _openai(obj: JSON, include_usage: bool) -> bytes:
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ReplayError("not a chat completion: no choices")
    head: JSON = {
        "id": obj.get("id"),
        "object": "chat.completion.chunk",
        "created": obj.get("created"),
        "model": obj.get("model"),
    }
    for key in ("system_fingerprint", "service_tier"):
        if obj.get(key) is not None:
            head[key] = obj[key]
    out = [chunk for choice in choices for chunk in _openai_choice(head, choice)]
    usage = obj.get("usage")
    if include_usage and isinstance(usage, dict):
        out.append(_openai_event({**head, "choices": [], "usage": usage}))
    out.append(_OPENAI_DONE)
    return b"".join(out)


def _openai_choice(head: JSON, choice: Any) -> list[bytes]:
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise ReplayError("a choice without a message")
    index = choice.get("index", 0)

    def chunk(delta: JSON, finish: Any = None, logprobs: Any = None) -> bytes:
        entry = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return _openai_event({**head, "choices": [entry]})

    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise ReplayError("message content that is not text")
    # The role chunk opens the message as OpenAI's does: content "" for an answer with text,
    # null for one with tool calls only. Logprobs go whole in it.
    role = {
        "role": message.get("role") or "assistant",
        "content": "" if isinstance(content, str) else None,
        "refusal": None,
    }
    out = [chunk(role, logprobs=choice.get("logprobs"))]
    if content:
        out.append(chunk({"content": content}))
    for key, value in message.items():
        if key in _OPENAI_CARRIED or value is None or value == []:
            continue
        if not isinstance(value, str):  # audio, function_call, annotations
            raise ReplayError(f"a message with {key!r}, which a replayed stream cannot carry")
        out.append(chunk({key: value}))  # reasoning_content and the like: text, streamed so
    refusal = message.get("refusal")
    if isinstance(refusal, str):
        out.append(chunk({"refusal": refusal}))
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise ReplayError("tool_calls is not a list")
    for position, call in enumerate(calls):
        out.extend(chunk({"tool_calls": [delta]}) for delta in _openai_tool_call(call, position))
    out.append(chunk({}, choice.get("finish_reason")))
    return out


def _openai_tool_call(call: Any, position: int) -> list[JSON]:
    """The deltas of one tool call: its id, type and name, then its arguments."""
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise ReplayError("a tool call without a function")
    fn: JSON = call["function"]
    opening = {
        "index": position,
        "id": call.get("id"),
        "type": call.get("type") or "function",
        "function": {"name": fn.get("name") or "", "arguments": ""},
    }
    arguments = fn.get("arguments")
    if not arguments:
        return [opening]
    if not isinstance(arguments, str):
        raise ReplayError("tool call arguments that are not a string")
    return [opening, {"index": position, "function": {"arguments": arguments}}]


def _openai_event(payload: JSON) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


# --------------------------------------------------------------------------- Anthropic


def _anthropic(obj: JSON) -> bytes:
    content = obj.get("content")
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise ReplayError("not a message: no content blocks")
    usage = obj.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    message = {k: v for k, v in obj.items() if k not in _ANTHROPIC_STREAMED}
    # Output tokens are counted at the end, in message_delta, as the API does: a client
    # that adds message_start's to message_delta's must not count them twice.
    message.update(
        content=[],
        stop_reason=None,
        stop_sequence=None,
        usage={**usage, "output_tokens": 0},
    )
    out = [_anthropic_event({"type": "message_start", "message": message})]
    for index, block in enumerate(content):
        out.extend(_anthropic_event(event) for event in _anthropic_block(index, block))
    output_tokens = usage.get("output_tokens")
    out.append(
        _anthropic_event(
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": obj.get("stop_reason"),
                    "stop_sequence": obj.get("stop_sequence"),
                },
                "usage": {"output_tokens": output_tokens if output_tokens is not None else 0},
            }
        )
    )
    out.append(_anthropic_event({"type": "message_stop"}))
    return b"".join(out)


def _anthropic_block(index: int, block: JSON) -> list[JSON]:
    """content_block_start, the deltas, content_block_stop: the block starts empty and the
    deltas fill it, as the API streams it."""
    kind = block.get("type")
    start = dict(block)
    deltas: list[JSON] = []
    if kind == "text":
        start["text"] = ""
        if _text(block, "text"):
            deltas.append({"type": "text_delta", "text": block["text"]})
        citations = block.get("citations")
        if isinstance(citations, list) and citations:
            del start["citations"]
            deltas.extend({"type": "citations_delta", "citation": c} for c in citations)
    elif kind == "thinking":
        start["thinking"] = ""
        if _text(block, "thinking"):
            deltas.append({"type": "thinking_delta", "thinking": block["thinking"]})
        if _text(block, "signature"):
            start["signature"] = ""
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif isinstance(kind, str) and kind in _TOOL_BLOCKS:
        start["input"] = {}
        tool_input = block.get("input", {})
        if tool_input != {}:
            partial = orjson.dumps(tool_input).decode()
            deltas.append({"type": "input_json_delta", "partial_json": partial})
    # Any other block (redacted thinking, a server tool's result) starts whole.
    return [
        {"type": "content_block_start", "index": index, "content_block": start},
        *({"type": "content_block_delta", "index": index, "delta": d} for d in deltas),
        {"type": "content_block_stop", "index": index},
    ]


def _text(block: JSON, field: str) -> str:
    """A block's text field ("" when absent or null); a block whose field is something else
    cannot be streamed (its delta would not parse)."""
    value = block.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ReplayError(f"a {block.get('type')} block whose {field} is not text")
    return value


def _anthropic_event(payload: JSON) -> bytes:
    kind: str = payload["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
