"""Anthropic Messages wire format."""

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

ANTHROPIC_VERSION = "2023-06-01"
_PASS_HEADERS = (b"anthropic-version", b"anthropic-beta")


def usage_from_anthropic(usage: Any) -> TokenUsage:
    if not isinstance(usage, dict):
        return TokenUsage()
    read = token_count(usage.get("cache_read_input_tokens"))
    written = token_count(usage.get("cache_creation_input_tokens"))
    fresh = token_count(usage.get("input_tokens"))
    return consistent_usage(
        fresh + read + written, read, written, token_count(usage.get("output_tokens"))
    )


class AnthropicStreamMeter(StreamMeter):
    def __init__(self) -> None:
        super().__init__()
        self._start: dict[str, Any] = {}

    def feed(self, events: bytes) -> bytes:
        self.content_events += events.count(b"event: content_block_delta")
        if events.find(b"event: message_start") >= 0 or events.find(b"event: message_delta") >= 0:
            for event in events.split(b"\n\n"):
                if event.startswith(b"event: message_start"):
                    message = _object(self._data(event).get("message"))
                    self._start = _object(message.get("usage"))
                    self.input_seen = usage_from_anthropic(self._start).input_tokens
                elif event.startswith(b"event: message_delta"):
                    merged = {**self._start, **_object(self._data(event).get("usage"))}
                    self.usage = usage_from_anthropic(merged)
        if events.find(b"event: message_stop") >= 0:
            self.finished = True
        return events

    def estimated_usage(self, prompt_estimate: int) -> TokenUsage:
        if self.usage is not None and self.finished:
            return self.usage
        usage = usage_from_anthropic(self._start) if self._start else None
        if usage is None:
            return super().estimated_usage(prompt_estimate)
        usage.output_tokens = max(usage.output_tokens, self.content_events)
        return usage

    @staticmethod
    def _data(event: bytes) -> dict[str, Any]:
        idx = event.find(b"data: ")
        if idx < 0:
            return {}
        try:
            obj = orjson.loads(event[idx + 6 :])
        except orjson.JSONDecodeError:
            return {}  # a broken event is relayed as it came; it carries no usage we can read
        return _object(obj)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class AnthropicAdapter(ProviderAdapter):
    wire = "anthropic"
    endpoints: ClassVar[dict[str, str]] = {"messages": "/v1/messages"}

    def headers(self, client_headers: dict[bytes, bytes], url: str, body: bytes) -> dict[str, str]:
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        for name in _PASS_HEADERS:
            value = client_headers.get(name)
            if value:
                headers[name.decode()] = value.decode("latin-1")
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def usage_from_body(self, endpoint: str, body: dict[str, Any]) -> TokenUsage:
        return usage_from_anthropic(body.get("usage"))

    def models_url(self) -> str | None:
        return self.base_url + "/v1/models"

    def stream_meter(self, *, client_wants_usage: bool) -> StreamMeter:
        return AnthropicStreamMeter()

    def prepare(self, endpoint: str, payload: dict[str, Any], stream: bool) -> bool:
        return False
