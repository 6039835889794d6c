"""What a request needs of a deployment, read from its payload (OpenAI or Anthropic format).
Pure functions: the strategy (routing.strategy) ranks the route's deployments by it.

The prompt's size is the same cheap estimate the budget reservation makes (a token per four
bytes of the body): ranking needs the relative cost, and a walk over the messages would
cost more than the choice it informs. Capabilities are read only for routes whose
deployments say what they can do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from costwarden.routing.strategy import Capability, Needs

_IMAGE_PARTS = frozenset({"image_url", "input_image", "image", "document", "file"})
_STRUCTURED = frozenset({"json_schema", "json_object"})


def request_needs(
    endpoint: str, payload: Mapping[str, Any], stream: bool, body_len: int, *, capabilities: bool
) -> Needs:
    """``body_len``: the request's bytes (the prompt bound); ``capabilities``: read them."""
    want = payload.get("max_tokens") if endpoint == "messages" else (
        payload.get("max_completion_tokens") or payload.get("max_tokens")
    )  # fmt: skip
    out = want if isinstance(want, int) and not isinstance(want, bool) and want > 0 else None
    if endpoint == "embeddings":
        out = 0
    prompt = max(1, (body_len + 3) // 4)
    if not capabilities:
        return Needs(prompt, out)
    return Needs(prompt, out, used_capabilities(payload, stream))


def used_capabilities(payload: Mapping[str, Any], stream: bool) -> frozenset[Capability]:
    used: set[Capability] = set()
    if stream:
        used.add("streaming")
    if payload.get("tools") or payload.get("functions"):
        used.add("tools")
    fmt = payload.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") in _STRUCTURED:
        used.add("structured_output")
    if _has_image(payload.get("messages")):
        used.add("vision")
    return frozenset(used)


def _has_image(messages: Any) -> bool:
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, Mapping):
                if part.get("type") in _IMAGE_PARTS:
                    return True
                # Anthropic tool results may carry images of their own.
                if part.get("type") == "tool_result" and _has_image([part]):
                    return True
    return False
