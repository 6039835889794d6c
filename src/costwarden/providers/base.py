"""The provider interface: what the request path needs to know about an upstream.

An adapter knows its wire format: where each endpoint lives, how to authenticate, how usage
is reported in a response body and in a stream. It does no I/O itself; the gateway owns the
HTTP client and the connection lifetimes.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

from costwarden.pricing import Pricer, TokenUsage


class StreamMeter(abc.ABC):
    """Reads a server-sent-event stream as it is relayed, collecting usage.

    ``feed`` gets whole events (each ending in a blank line) and returns the bytes to forward
    to the client, which may be fewer than it got: OpenAI's usage chunk is dropped when the
    client did not ask for it.
    """

    def __init__(self) -> None:
        self.usage: TokenUsage | None = None  # exact usage, once the stream reported it
        self.content_events = 0  # events that carried generated output
        self.input_seen = 0  # prompt tokens announced at stream start (Anthropic)
        self.finished = False

    @abc.abstractmethod
    def feed(self, events: bytes) -> bytes: ...

    def estimated_usage(self, prompt_estimate: int) -> TokenUsage:
        """Usage for a stream cut short: what was announced, else an estimate.

        Both wire formats stream roughly one token per content event, so the number of
        content events relayed is the estimate of output tokens the client received.
        """
        if self.usage is not None:
            return self.usage
        return TokenUsage(
            input_tokens=self.input_seen or prompt_estimate, output_tokens=self.content_events
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ProviderSpec:
    """What an adapter is built from: one upstream provider (the app maps the config's
    ``[[providers]]`` entries into these)."""

    name: str
    type: str  # wire format: "openai" or "anthropic"
    base_url: str  # without a trailing slash
    connect_timeout: float
    timeout: float  # the whole exchange, stream included
    api_key: str | None = dataclasses.field(default=None, repr=False)  # a secret: never shown
    price_provider: str | None = None  # genai-prices provider id; None: the wire type


class ProviderAdapter(abc.ABC):
    wire: ClassVar[str]
    endpoints: ClassVar[dict[str, str]]

    # Copied into plain attributes: the request path reads them without another lookup.
    def __init__(self, spec: ProviderSpec) -> None:
        self.name = spec.name
        self.base_url = spec.base_url
        self.price_provider = spec.price_provider or spec.type
        self.timeout = spec.timeout  # the whole exchange, stream included
        self.connect_timeout = spec.connect_timeout
        self._api_key = spec.api_key

    def url(self, endpoint: str) -> str:
        return self.base_url + self.endpoints[endpoint]

    @abc.abstractmethod
    def headers(self, client_headers: dict[bytes, bytes]) -> dict[str, str]:
        """Headers for the upstream call: our credential, never the client's."""

    @abc.abstractmethod
    def usage_from_body(self, endpoint: str, body: dict[str, Any]) -> TokenUsage: ...

    @abc.abstractmethod
    def stream_meter(self, *, client_wants_usage: bool) -> StreamMeter: ...

    @abc.abstractmethod
    def prepare(self, endpoint: str, payload: dict[str, Any], stream: bool) -> bool:
        """Adjust the payload in place before it goes upstream; True if it was changed."""

    def secrets(self) -> list[str]:
        return [self._api_key] if self._api_key else []


@dataclasses.dataclass(frozen=True, slots=True)
class Deployment:
    """One model on one provider, with its resolved price."""

    id: str
    adapter: ProviderAdapter
    model: str
    rates: Pricer
    max_output_tokens: int | None = None
    context_window: int | None = None


def count_text_bytes(value: Any) -> int:
    """UTF-8 bytes of every string inside a JSON value (the prompt estimate's basis)."""
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, dict):
        return sum(count_text_bytes(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_text_bytes(v) for v in value)
    return 0


def estimate_tokens(value: Any) -> int:
    return max(1, -(-count_text_bytes(value) // 4))
