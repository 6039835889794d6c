"""What an adapter is built from, and which adapter a spec gets."""

from __future__ import annotations

from costwarden.providers.adapters import make_adapter
from costwarden.providers.anthropic import AnthropicAdapter
from costwarden.providers.base import ProviderSpec
from costwarden.providers.openai import OpenAIAdapter

KEY = "sk-spec-SECRET-0123456789"


def _spec(**changes: object) -> ProviderSpec:
    fields: dict[str, object] = {
        "name": "p",
        "type": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "connect_timeout": 2.0,
        "timeout": 20.0,
        "api_key": KEY,
    }
    fields.update(changes)
    return ProviderSpec(**fields)  # type: ignore[arg-type]


def test_a_spec_never_shows_its_key() -> None:
    spec = _spec()
    assert KEY not in repr(spec) and KEY not in str(spec)
    assert spec.api_key == KEY


def test_the_adapter_follows_the_wire_type_and_copies_the_spec() -> None:
    openai = make_adapter(_spec())
    assert type(openai) is OpenAIAdapter
    assert (openai.name, openai.base_url, openai.connect_timeout, openai.timeout) == (
        "p",
        "http://127.0.0.1:9/v1",
        2.0,
        20.0,
    )
    assert openai.price_provider == "openai" and openai.secrets() == [KEY]
    anthropic = make_adapter(_spec(type="anthropic", price_provider="acme", api_key=None))
    assert type(anthropic) is AnthropicAdapter
    assert anthropic.price_provider == "acme" and anthropic.secrets() == []
