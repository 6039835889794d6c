"""A route's strategy, weights, downgrade rules and cache, and a deployment's capabilities, in
the config: what they become, and each mistake a startup error naming the key and its line."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costwarden.config.settings import load_settings
from costwarden.core.errors import ConfigError
from costwarden.routing.chains import RouteCache
from costwarden.routing.downgrade import DowngradeRule

BASE = """[storage]
database_url = "sqlite:///x.db"

[[providers]]
name = "openai"
type = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
"""
ENV = {"OPENAI_API_KEY": "sk-test"}
TWO = 'deployments = ["openai:gpt-4o", "openai:gpt-4o-mini"]\n'


def _route(body: str, head: str = "") -> str:
    return BASE + head + '\n[[routes]]\nmodel = "smart"\n' + TWO + body


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(text=text, env=ENV)
    return str(info.value)


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_options_as_the_domain_takes_them() -> None:
    text = _route(
        'strategy = "weighted"\nweights = [70, 30.0]\ndowngrade_on_refusal = true\n'
        'downgrade = [{ above_percent = 80, to = "openai:gpt-4o-mini", scope = "org", '
        'limit = "daily_usd" }]\ncache = { ttl_seconds = 600, namespace = "docs" }\n',
        '\n[[deployments]]\nid = "openai:gpt-4o-mini"\ncapabilities = ["streaming", "tools"]\n',
    )
    settings = load_settings(text=text, env=ENV)
    route = settings.routes[0]
    assert route.strategy == "weighted" and route.weights == (70.0, 30.0)
    rule = DowngradeRule(Decimal(80), "openai:gpt-4o-mini", "org", "daily_usd")
    assert route.downgrade == (rule,)
    assert route.downgrade_on_refusal is True
    assert route.cache == RouteCache(600, False, "docs")
    assert settings.deployments["openai:gpt-4o-mini"].capabilities == {"streaming", "tools"}
    assert settings.deployments["openai:gpt-4o"].capabilities is None  # not said: able


def test_defaults_ordered_and_not_cached_unless_the_section_says() -> None:
    plain = load_settings(text=_route(""), env=ENV).routes[0]
    assert (plain.strategy, plain.weights, plain.downgrade, plain.cache) == (
        "ordered", (), (), None,
    )  # fmt: skip
    text = _route("", "\n[cache]\ndefault_ttl_seconds = 60\n")
    assert load_settings(text=text, env=ENV).routes[0].cache == RouteCache(60)
    text = _route("", "\n[cache]\ndefault_ttl_seconds = 60\nreplay_unsafe = true\n")
    assert load_settings(text=text, env=ENV).routes[0].cache == RouteCache(60, True)
    off = _route("cache = { ttl_seconds = 0 }\n", "\n[cache]\ndefault_ttl_seconds = 60\n")
    assert load_settings(text=off, env=ENV).routes[0].cache is None


@pytest.mark.parametrize(
    ("body", "needle", "message"),
    [
        ('strategy = "fastest"\n', "strategy", "unknown strategy 'fastest' (known: ordered, "
         "weighted, cheapest, lowest-latency, least-busy)"),
        ('strategy = "weighted"\n', "strategy", "a weighted route needs weights"),
        ('strategy = "weighted"\nweights = [70, 20]\n', "weights",
         "weights must sum to 100 (percent of the route's traffic), not 90"),
        ('strategy = "weighted"\nweights = [100]\n', "weights", "must be a list of 2 numbers"),
        ('strategy = "weighted"\nweights = [120, -20]\n', "weights", "weights must be positive"),
        ('weights = [50, 50]\n', "weights", "only a weighted route takes weights"),
        ('downgrade = [{ above_percent = 80, to = "openai:gpt-4.1-nano" }]\n', "downgrade",
         "'openai:gpt-4.1-nano' is not one of the route's deployments"),
        ('downgrade = [{ above_percent = 120, to = "openai:gpt-4o-mini" }]\n', "downgrade",
         "above_percent: required: a number from 0 to below 100"),
        ('downgrade = [{ above_percent = 80, to = "openai:gpt-4o-mini", scope = "team" }]\n',
         "downgrade", "unknown scope 'team'"),
        ('downgrade = [{ at = 80 }]\n', "downgrade", "unknown setting"),
        ('downgrade = [{ above_percent = 80, to = "openai:gpt-4o-mini", limit = "daily_tokens" '
         "}]\n", "downgrade", "limit: not a USD budget 'daily_tokens' (daily_usd, monthly_usd, "
         "lifetime_usd)"),
        ("downgrade_on_refusal = 1\n", "downgrade_on_refusal", "must be true or false"),
        ("cache = { ttl_seconds = -5 }\n", "cache", "must be a whole number of seconds from 0"),
        ("cache = { ttl_seconds = 1.5 }\n", "cache", "must be a whole number of seconds"),
        ('cache = { ttl_seconds = 5, namespace = " " }\n', "cache", "must be a non-empty string"),
        ("cache = { ttl = 5 }\n", "cache", "unknown setting"),
    ],
)  # fmt: skip
def test_a_bad_option_is_refused_at_its_line(body: str, needle: str, message: str) -> None:
    text = _route(body)
    error = _error(text)
    assert message in error, error
    assert f":{_line(text, needle)}" in error, error


def test_bad_capabilities_and_cache_section() -> None:
    text = BASE + '\n[[deployments]]\nid = "openai:gpt-4o"\ncapabilities = ["telepathy"]\n'
    assert "capabilities: must be a list of: tools, vision, structured_output, streaming" in (
        _error(text)
    )
    assert "must be 0 (off) or a positive number" in _error(
        BASE + "\n[cache]\ndefault_ttl_seconds = -1\n"
    )
    assert "'redis' needs [redis] url" in _error(BASE + '\n[cache]\nbackend = "redis"\n')
    assert "backend: must be one of memory, redis" in _error(BASE + '\n[cache]\nbackend = "disk"\n')
