"""A route's degraded template as a real answer in the client's wire format.

When every candidate is failing, a route with a template answers 200 with the template's
text as the assistant's reply (and an agent session whose key opts in ends its budget so:
``gateway.sessions``): a ``chat.completion`` (or its chunk stream) for OpenAI
clients, a ``message`` (or its event stream) for Anthropic clients, with zero usage, so SDKs
parse it like any other answer. The response headers carry ``x-costwarden-degraded: true``.
"""

from __future__ import annotations

import time
from secrets import token_hex
from typing import Any

import orjson


def unary(wire: str, model: str, content: str, *, tag: str = "degraded") -> bytes:
    """``tag`` names the kind of answer in its id (``chatcmpl-degraded-...``)."""
    if wire == "anthropic":
        return orjson.dumps(
            {
                "id": f"msg_{tag}_" + token_hex(8),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": content}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
        )
    return orjson.dumps(
        {
            "id": f"chatcmpl-{tag}-" + token_hex(8),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
    )


def stream(
    wire: str, model: str, content: str, *, include_usage: bool, tag: str = "degraded"
) -> bytes:
    """The whole stream at once: the template is known, there is nothing to wait for."""
    if wire == "anthropic":
        mid = f"msg_{tag}_" + token_hex(8)
        usage = {"input_tokens": 0, "output_tokens": 0}
        events: list[tuple[str, dict[str, Any]]] = [
            (
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
                        "usage": usage,
                    },
                },
            ),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": content},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 0},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return b"".join(
            b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
            for name, data in events
        )
    cid = f"chatcmpl-{tag}-" + token_hex(8)
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    chunks = [
        chunk({"role": "assistant", "content": ""}, None),
        chunk({"content": content}, None),
        chunk({}, "stop"),
    ]
    if include_usage:
        chunks.append(
            {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }
        )
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
