"""The provider interface: what the request path needs to know about an upstream.

An adapter knows its wire format: where each endpoint lives, how to authenticate, how usage
is reported in a response body and in a stream. It does no I/O itself; the gateway owns the
HTTP client and the connection lifetimes.

The gateway speaks two wire formats with its clients, OpenAI Chat Completions and Anthropic
Messages (``ProviderAdapter.wire``), and translates between them. An upstream with a format
of its own (Gemini, Bedrock Converse) is a *codec* adapter: it presents itself as an
``openai`` one, and converts at its edge -- the request on the way out (:meth:`encode`),
the body (:meth:`decode`) and the stream (:meth:`stream_decoder`) on the way back. The
OpenAI format is the hub: an Anthropic client reaches Gemini through the existing
Anthropic -> OpenAI translation and then the codec, so each new format costs one pair of
conversions, not one per client format.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

import orjson

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


class StreamDecoder(abc.ABC):
    """Turns a codec upstream's stream, bytes as they arrive (a frame may be split across
    reads), into server-sent events of the adapter's wire format, whole events only; the
    last of them carries the usage (OpenAI's usage chunk), so the stream is billed exactly."""

    @abc.abstractmethod
    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes:
        """What the end of the upstream's stream completes (a stream cut short: nothing)."""
        return b""


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
    api_version: str | None = None  # Azure OpenAI's api-version
    auth: str | None = None  # how the credential is sent, where a type knows several
    region: str | None = None  # a cloud region (Bedrock)
    secret_key: str | None = dataclasses.field(default=None, repr=False)  # a second secret
    session_token: str | None = dataclasses.field(default=None, repr=False)


class ProviderAdapter(abc.ABC):
    wire: ClassVar[str]  # the format the gateway exchanges with it: "openai" or "anthropic"
    endpoints: ClassVar[dict[str, str]]  # the endpoints it serves, and their paths
    codec: ClassVar[bool] = False  # its upstream speaks a format of its own (see the module)
    stream_type: ClassVar[str] = "text/event-stream"  # the content type of its streams

    # Copied into plain attributes: the request path reads them without another lookup.
    def __init__(self, spec: ProviderSpec) -> None:
        self.name = spec.name
        self.base_url = spec.base_url
        self.price_provider = spec.price_provider or spec.type
        self.timeout = spec.timeout  # the whole exchange, stream included
        self.connect_timeout = spec.connect_timeout
        self._api_key = spec.api_key

    def url(self, endpoint: str, model: str, stream: bool) -> str:
        """Where the call goes (some upstreams name the model, or streaming, in the URL)."""
        return self.base_url + self.endpoints[endpoint]

    @abc.abstractmethod
    def headers(self, client_headers: dict[bytes, bytes], url: str, body: bytes) -> dict[str, str]:
        """Headers for the upstream call: our credential, never the client's (a signing
        upstream signs ``url`` and ``body``)."""

    @abc.abstractmethod
    def usage_from_body(self, endpoint: str, body: dict[str, Any]) -> TokenUsage: ...

    @abc.abstractmethod
    def stream_meter(self, *, client_wants_usage: bool) -> StreamMeter: ...

    @abc.abstractmethod
    def prepare(self, endpoint: str, payload: dict[str, Any], stream: bool) -> bool:
        """Adjust the payload in place before it goes upstream; True if it was changed."""

    def secrets(self) -> list[str]:
        return [self._api_key] if self._api_key else []

    def models_url(self) -> str | None:
        """Where the upstream lists the models it serves (a GET with :meth:`headers`), for
        ``costwarden providers check``; None when it has no such list we can read."""
        return self.base_url + "/models"

    def model_ids(self, body: Any) -> set[str]:
        """The model ids in that list (OpenAI's and Anthropic's shape: ``data[].id``)."""
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise ValueError("the models list has no data array")
        return {str(m["id"]) for m in data if isinstance(m, dict) and "id" in m}

    # ---------------------------------------------------------------- codec adapters
    # Called only when ``codec`` is true; the wire formats' own adapters pay nothing.

    def encode(self, endpoint: str, payload: dict[str, Any]) -> bytes:
        """The request, in the wire format (model, output cap and notes already set), as
        the upstream takes it (TranslationError if it cannot)."""
        return orjson.dumps(payload)

    def decode(self, endpoint: str, body: dict[str, Any], model: str) -> dict[str, Any]:
        """The upstream's response body in the wire format."""
        return body

    def stream_decoder(self, model: str) -> StreamDecoder | None:
        """What turns the upstream's stream into the wire format's events (with the usage
        chunk always: the meter drops it when the client did not ask for it)."""
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class Deployment:
    """One model on one provider, with its resolved price."""

    id: str
    adapter: ProviderAdapter
    model: str
    rates: Pricer
    max_output_tokens: int | None = None
    context_window: int | None = None
    # What the model can do (tools, vision, structured_output, streaming); None: not said.
    capabilities: frozenset[str] | None = None


def token_count(value: Any) -> int:
    """A token count as an upstream reported it: a non-negative whole number, else 0.

    Absent, null, negative, fractional-garbage or non-numeric counts come from a broken or
    hostile upstream; they must neither fail the request nor make a call cost less than
    nothing (a negative count would give budget back)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value if value > 0 else 0  # not max(): a call costs 30x the comparison
    if isinstance(value, float) and math.isfinite(value):
        count = int(value)
        return count if count > 0 else 0
    return 0


def consistent_usage(
    input_tokens: int, cached: int, written: int, output_tokens: int, reasoning: int = 0
) -> TokenUsage:
    """A :class:`TokenUsage` whose parts fit in their wholes (cached + written <= input,
    reasoning <= output), as pricing assumes: an upstream reporting more cached tokens than
    prompt tokens is believed for the prompt, and its cached count cut to fit."""
    # Comparisons, not min(): this runs for every answer (a call costs 30x the comparison).
    if cached > input_tokens:
        cached = input_tokens
    room = input_tokens - cached
    return TokenUsage(
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=written if written <= room else room,
        output_tokens=output_tokens,
        reasoning_tokens=reasoning if reasoning <= output_tokens else output_tokens,
    )


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
