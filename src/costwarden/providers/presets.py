"""OpenAI-compatible servers known by name: ``type = "groq"`` instead of a base URL, a key
variable and a price provider spelled out by hand.

Each is the OpenAI wire format at a known place: the base URL, the environment variable its
users already keep the key in, and the genai-prices provider that prices its models. The
self-hosted servers (vLLM, Ollama) have no list price: each of their deployments needs a
``price`` override (zero is a price), so nothing is ever billed at a guess.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class Preset:
    base_url: str  # the default; a config may point elsewhere (a proxy, a region)
    api_key_env: str | None  # the variable read when the config names none
    price_provider: str | None  # genai-prices provider id; None: every model needs a price


PRESETS: dict[str, Preset] = {
    "groq": Preset("https://api.groq.com/openai/v1", "GROQ_API_KEY", "groq"),
    "together": Preset("https://api.together.xyz/v1", "TOGETHER_API_KEY", "together"),
    "fireworks": Preset("https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY", "fireworks"),
    "deepseek": Preset("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", "deepseek"),
    "mistral": Preset("https://api.mistral.ai/v1", "MISTRAL_API_KEY", "mistral"),
    "openrouter": Preset("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", "openrouter"),
    "xai": Preset("https://api.x.ai/v1", "XAI_API_KEY", "x-ai"),
    "vllm": Preset("http://127.0.0.1:8000/v1", None, None),
    "ollama": Preset("http://127.0.0.1:11434/v1", None, None),
}
