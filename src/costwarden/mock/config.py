"""A gateway config whose providers are a mock upstream (demo, tests and the benchmark)."""

from __future__ import annotations


def mock_gateway_toml(
    mock_url: str,
    database_url: str,
    *,
    port: int = 4000,
    credentials: bool = True,
    ledger_mode: str = "batched",
    flush_interval_ms: int = 200,
    key_refresh_seconds: float = 0.5,
    timeout: float = 600.0,
    header: str = "",
) -> str:
    """TOML for a gateway routing gpt-4o-mini, text-embedding-3-small and claude-haiku-4-5
    to the mock at ``mock_url``. With ``credentials`` the providers read OPENAI_API_KEY and
    ANTHROPIC_API_KEY, as a real deployment would; the mock ignores them."""
    openai_key = 'api_key_env = "OPENAI_API_KEY"\n' if credentials else ""
    anthropic_key = 'api_key_env = "ANTHROPIC_API_KEY"\n' if credentials else ""
    return f"""{header}[server]
host = "127.0.0.1"
port = {port}
key_refresh_seconds = {key_refresh_seconds}

[storage]
database_url = "{database_url}"
ledger_mode = "{ledger_mode}"
flush_interval_ms = {flush_interval_ms}

[[providers]]
name = "openai"
type = "openai"
base_url = "{mock_url}/v1"
{openai_key}timeout = {timeout}

[[providers]]
name = "anthropic"
type = "anthropic"
base_url = "{mock_url}"
{anthropic_key}timeout = {timeout}

[[routes]]
model = "gpt-4o-mini"
deployments = ["openai:gpt-4o-mini"]

[[routes]]
model = "text-embedding-3-small"
deployments = ["openai:text-embedding-3-small"]

[[routes]]
model = "claude-haiku-4-5"
deployments = ["anthropic:claude-haiku-4-5"]
"""
