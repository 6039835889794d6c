"""OpenAI wire format (and every OpenAI-compatible upstream)."""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from costwarden.pricing import TokenUsage
from costwarden.providers.base import (
    ProviderAdapter,
    StreamMeter,
    consistent_usage,
    token_count,
)


def usage_from_openai(usage: Any) -> TokenUsage:
    if not isinstance(usage, dict):
        return TokenUsage()
    details_in = usage.get("prompt_tokens_details")
    details_in = details_in if isinstance(details_in, dict) else {}
    details_out = usage.get("completion_tokens_details")
    details_out = details_out if isinstance(details_out, dict) else {}
    return consistent_usage(
        token_count(usage.get("prompt_tokens") or usage.get("input_tokens")),
        token_count(details_in.get("cached_tokens")),
        # OpenAI reports no cache writes; a codec's usage chunk does (Bedrock, under the
        # name the OpenAI SDK's PromptTokensDetails has for it)
        token_count(details_in.get("cache_write_tokens")),
        token_count(usage.get("completion_tokens") or usage.get("output_tokens")),
        token_count(details_out.get("reasoning_tokens")),
    )


class OpenAIStreamMeter(StreamMeter):
    def __init__(self, *, client_wants_usage: bool) -> None:
        super().__init__()
        self._forward_usage = client_wants_usage

    def feed(self, events: bytes) -> bytes:
        # Fast path: only the final usage chunk needs decoding; content chunks are counted
        # by substring tests and forwarded untouched.
        # (find(), not ``in``: on bytes ``in`` first tries an integer and drops a TypeError.)
        if events.find(b'"usage":{') < 0 and events.find(b'"usage": {') < 0:
            self.content_events += _content_deltas(events)
            if events.find(b"data: [DONE]") >= 0:
                self.finished = True
            return events
        out: list[bytes] = []
        for event in events.split(b"\n\n"):
            if not event:
                continue
            event += b"\n\n"
            data = event[6:].strip() if event.startswith(b"data: ") else b""
            if data == b"[DONE]":
                self.finished = True
            elif b'"usage":{' in data or b'"usage": {' in data:
                obj = _json_object(data)
                usage = obj.get("usage")
                if isinstance(usage, dict) and usage:
                    self.usage = usage_from_openai(usage)
                if obj and not obj.get("choices") and not self._forward_usage:
                    continue
            self.content_events += _content_deltas(event)
            out.append(event)
        return b"".join(out)


def _json_object(data: bytes) -> dict[str, Any]:
    """An event's JSON object; {} for anything else (a broken upstream's event is relayed as
    it came, and its usage ignored, rather than ending the client's stream)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _content_deltas(events: bytes) -> int:
    """Deltas that carried output: all deltas less the role-only and the closing empty one."""
    return max(
        0,
        events.count(b'"delta"') - events.count(b'"delta":{}') - events.count(b'"content":""'),
    )


class OpenAIAdapter(ProviderAdapter):
    wire = "openai"
    endpoints: ClassVar[dict[str, str]] = {
        "chat.completions": "/chat/completions",
        "embeddings": "/embeddings",
    }

    def headers(self, client_headers: dict[bytes, bytes], url: str, body: bytes) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self._api_key:
            headers["authorization"] = "Bearer " + self._api_key
        return headers

    def usage_from_body(self, endpoint: str, body: dict[str, Any]) -> TokenUsage:
        return usage_from_openai(body.get("usage"))

    def stream_meter(self, *, client_wants_usage: bool) -> StreamMeter:
        return OpenAIStreamMeter(client_wants_usage=client_wants_usage)

    def prepare(self, endpoint: str, payload: dict[str, Any], stream: bool) -> bool:
        if not stream:
            return False
        options = payload.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return False
        # Without include_usage the stream carries no usage and could not be billed exactly.
        payload["stream_options"] = {**(options or {}), "include_usage": True}
        return True
