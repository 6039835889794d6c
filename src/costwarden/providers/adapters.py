"""The adapter for a provider's wire format.

Its own module, not in ``base``: the adapters import ``base``, so choosing among them there
would make a cycle.
"""

from __future__ import annotations

from costwarden.providers.anthropic import AnthropicAdapter
from costwarden.providers.base import ProviderAdapter, ProviderSpec
from costwarden.providers.openai import OpenAIAdapter


def make_adapter(spec: ProviderSpec) -> ProviderAdapter:
    if spec.type == "anthropic":
        return AnthropicAdapter(spec)
    return OpenAIAdapter(spec)
