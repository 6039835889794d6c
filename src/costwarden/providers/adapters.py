"""The adapter for a provider's wire format.

Its own module, not in ``base``: the adapters import ``base``, so choosing among them there
would make a cycle.
"""

from __future__ import annotations

from costwarden.providers.anthropic import AnthropicAdapter
from costwarden.providers.azure import AzureOpenAIAdapter
from costwarden.providers.base import ProviderAdapter, ProviderSpec
from costwarden.providers.bedrock import BedrockAdapter  # botocore: imported when built
from costwarden.providers.gemini import GeminiAdapter
from costwarden.providers.openai import OpenAIAdapter

# By provider type; a type not here (the OpenAI-compatible presets) is the OpenAI format.
_ADAPTERS: dict[str, type[ProviderAdapter]] = {
    "anthropic": AnthropicAdapter,
    "azure": AzureOpenAIAdapter,
    "bedrock": BedrockAdapter,
    "gemini": GeminiAdapter,
}


def make_adapter(spec: ProviderSpec) -> ProviderAdapter:
    return _ADAPTERS.get(spec.type, OpenAIAdapter)(spec)
