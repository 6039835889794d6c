"""What the proxy writes back: billing a record, response headers, error events.

Plain functions over a ledger record and bytes, shared by the unary and streamed relays.
"""

from __future__ import annotations

from typing import Any

import orjson

from costwarden.core.errors import GatewayError
from costwarden.core.records import LedgerRecord
from costwarden.gateway.asgi import JSON
from costwarden.pricing import TokenUsage
from costwarden.providers.base import Deployment

# An event stream's response headers: its content type, and no caching on the way.
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def bill(
    record: LedgerRecord, deployment: Deployment, usage: TokenUsage, *, estimated: bool
) -> None:
    record.input_tokens = usage.input_tokens
    record.cached_input_tokens = usage.cached_input_tokens
    record.cache_write_tokens = usage.cache_write_tokens
    record.output_tokens = usage.output_tokens
    record.reasoning_tokens = usage.reasoning_tokens
    record.cost_usd = deployment.rates.cost(usage)
    record.cost_estimated = estimated


def id_headers(record: LedgerRecord) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-request-id", record.request_id.encode()),
        (b"x-costwarden-model", (record.served_model or "").encode()),
        (b"x-costwarden-provider", (record.provider or "").encode()),
    ]


def usage_headers(record: LedgerRecord) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", JSON),
        *id_headers(record),
        (b"x-costwarden-cost-usd", format(record.cost_usd, "f").encode()),
        (b"x-costwarden-input-tokens", str(record.input_tokens).encode()),
        (b"x-costwarden-output-tokens", str(record.output_tokens).encode()),
        (b"x-costwarden-cached-tokens", str(record.cached_input_tokens).encode()),
        (b"x-costwarden-overhead-ms", f"{record.overhead_ms:.3f}".encode()),
    ]


# Request fields a prompt estimate reads (a stream cut short, a cancelled call).
PROMPT_FIELDS = ("messages", "system", "input")


def wants_usage(payload: dict[str, Any]) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def upstream_message(raw: bytes) -> str:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace") or "no error message"
    error = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:500]
    if isinstance(obj, dict) and isinstance(obj.get("message"), str):  # AWS's shape
        return str(obj["message"])[:500]
    return raw[:200].decode("utf-8", "replace")


def stream_error_event(wire: str, message: str) -> bytes:
    if wire == "anthropic":
        data = orjson.dumps({"type": "error", "error": {"type": "api_error", "message": message}})
        return b"event: error\ndata: " + data + b"\n\n"
    data = orjson.dumps({"error": {"message": message, "type": "upstream_error"}})
    return b"data: " + data + b"\n\n"


class PassThrough(GatewayError):
    """An upstream 4xx (other than auth) is the client's own error: relay it as it came
    (scrubbed); of its headers only a numeric Retry-After is passed on."""

    def __init__(self, status: int, message: str, raw: bytes, retry_after: str | None) -> None:
        wait = retry_after.strip() if retry_after else ""
        retry = {"retry-after": wait} if wait.isdigit() and len(wait) < 10 else None
        super().__init__(message, headers=retry)
        self.status = status
        self.type = "invalid_request_error" if status != 429 else "rate_limit_exceeded"
        self.raw = raw
