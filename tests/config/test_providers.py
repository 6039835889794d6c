"""Provider types in the config: the OpenAI-compatible presets, Azure OpenAI, and the price
every deployment must have -- each mistake a startup error naming the key and its line."""

from __future__ import annotations

import dataclasses

import pytest

from costwarden.config.settings import load_settings
from costwarden.config.upstreams import PROVIDER_TYPES, ProviderSettings
from costwarden.core.errors import ConfigError
from costwarden.providers.presets import PRESETS

BASE = """[storage]
database_url = "sqlite:///x.db"
"""
ENV = {"GROQ_API_KEY": "gsk-test", "AZURE_KEY": "az-test", "OPENAI_API_KEY": "sk-test"}


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(text=text, env=ENV)
    return str(info.value)


def test_a_preset_fills_in_url_key_variable_and_prices() -> None:
    text = BASE + """
[[providers]]
name = "fast"
type = "groq"

[[routes]]
model = "fast"
deployments = ["fast:llama-3.1-8b-instant"]
"""
    settings = load_settings(text=text, env=ENV)
    provider = settings.providers[0]
    assert provider.base_url == "https://api.groq.com/openai/v1"
    assert provider.api_key_env == "GROQ_API_KEY" and provider.api_key == "gsk-test"
    assert provider.price_provider == "groq"


def test_a_preset_keeps_what_the_config_sets() -> None:
    text = BASE + """
[[providers]]
name = "fast"
type = "groq"
base_url = "https://llm-proxy.internal/groq/"
api_key_env = "OPENAI_API_KEY"

[[routes]]
model = "fast"
deployments = ["fast:llama-3.1-8b-instant"]
"""
    provider = load_settings(text=text, env=ENV).providers[0]
    assert provider.base_url == "https://llm-proxy.internal/groq"
    assert provider.api_key == "sk-test"


@pytest.mark.parametrize("kind", ["vllm", "ollama"])
def test_a_self_hosted_model_needs_a_price(kind: str) -> None:
    text = BASE + f"""
[[providers]]
name = "local"
type = "{kind}"

[[routes]]
model = "llama"
deployments = ["local:llama3.1"]
"""
    message = _error(text)
    line = _line(text, '"local:llama3.1"')
    assert message.startswith(f"<string>:{line}: routes[0].deployments[0]:"), message
    assert "no flat price for 'llama3.1'" in message and "price = {" in message
    priced = text + '\n[[deployments]]\nid = "local:llama3.1"\n'
    priced += 'price = { input_mtok = "0", output_mtok = "0" }\n'
    assert load_settings(text=priced, env=ENV).deployments["local:llama3.1"].price is not None


def test_an_unknown_model_on_a_preset_is_named_with_its_line() -> None:
    text = BASE + """
[[providers]]
name = "fast"
type = "groq"

[[deployments]]
id = "fast:no-such-model"
"""
    message = _error(text)
    assert message.startswith(f"<string>:{_line(text, 'no-such-model')}: deployments[0].id:")
    assert "'no-such-model'" in message and "'groq'" in message


def test_an_unknown_type_lists_the_known_ones() -> None:
    text = BASE + '\n[[providers]]\nname = "x"\ntype = "gemeni"\nbase_url = "http://h"\n'
    message = _error(text)
    assert message.startswith(f"<string>:{_line(text, 'gemeni')}: providers[0].type:"), message
    assert all(kind in message for kind in ("openai", "anthropic", "azure", *PRESETS))


def test_azure_needs_an_api_version() -> None:
    text = BASE + """
[[providers]]
name = "az"
type = "azure"
base_url = "https://r.openai.azure.com"
api_key_env = "AZURE_KEY"
"""
    message = _error(text)
    assert message.startswith(f"<string>:{_line(text, 'type = ')}: providers[0].api_version:")
    assert "required for an azure provider" in message


def test_azure_prices_by_price_model_and_checks_auth() -> None:
    text = BASE + """
[[providers]]
name = "az"
type = "azure"
base_url = "https://r.openai.azure.com"
api_key_env = "AZURE_KEY"
api_version = "2024-10-21"
auth = "entra"

[[deployments]]
id = "az:prod-4o"
price_model = "gpt-4o"
"""
    settings = load_settings(text=text, env=ENV)
    assert settings.providers[0].price_provider == "azure"
    assert settings.deployments["az:prod-4o"].price_model == "gpt-4o"
    message = _error(text.replace('auth = "entra"', 'auth = "oauth"'))
    assert message.startswith(f"<string>:{_line(text, 'auth = ')}: providers[0].auth:"), message
    message = _error(text.replace('price_model = "gpt-4o"\n', ""))  # "prod-4o" is no model
    assert "deployments[0].id" in message and "'prod-4o'" in message


def test_api_version_belongs_to_azure_only() -> None:
    text = BASE + """
[[providers]]
name = "oa"
type = "openai"
base_url = "https://api.openai.com/v1"
api_version = "2024-10-21"
"""
    message = _error(text)
    assert "providers[0].api_version: only an azure provider takes it" in message


def test_every_type_is_documented_in_the_type_help() -> None:
    help_text = next(
        f.metadata["help"] for f in dataclasses.fields(ProviderSettings) if f.name == "type"
    )
    assert all(kind in help_text for kind in PROVIDER_TYPES)
