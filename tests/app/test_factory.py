"""The composition root maps each setting into the domain's own types: every field arrives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from costwarden.app.factory import build_deployments, create_app
from costwarden.config.settings import load_settings
from costwarden.providers.anthropic import AnthropicAdapter
from costwarden.providers.openai import OpenAIAdapter
from costwarden.routing.chains import DegradedTemplate
from costwarden.storage.db import create_engine_for

_CONFIG = """\
[[providers]]
name = "oa"
type = "openai"
base_url = "http://127.0.0.1:9/v1/"
api_key_env = "OA_KEY"
connect_timeout = 1.5
timeout = 42

[[providers]]
name = "an"
type = "anthropic"
base_url = "http://127.0.0.1:9/anthropic"
price_provider = "anthropic"

[[deployments]]
id = "an:claude-haiku-4-5"

[[routes]]
model = "small"
deployments = ["oa:gpt-4o-mini"]
fallbacks = ["big", "an:claude-haiku-4-5"]
retries = 4
connect_timeout = 0.5
first_byte_timeout = 7
timeout = 30
degraded = { content = "busy" }

[[routes]]
model = "big"
deployments = ["oa:gpt-4o"]
"""
_KEY = "sk-oa-key-0123456789"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine_for(f"sqlite:///{tmp_path}/cw.db")
    yield engine
    engine.dispose()


def test_providers_settings_arrive_in_the_adapters() -> None:
    deployments = build_deployments(load_settings(text=_CONFIG, env={"OA_KEY": _KEY}))
    oa = deployments["oa:gpt-4o-mini"].adapter
    assert type(oa) is OpenAIAdapter
    assert (oa.name, oa.base_url, oa.connect_timeout, oa.timeout) == (
        "oa",
        "http://127.0.0.1:9/v1",
        1.5,
        42.0,
    )
    assert oa.price_provider == "openai"  # none given: the wire type
    assert oa.secrets() == [_KEY]
    an = deployments["an:claude-haiku-4-5"].adapter
    assert type(an) is AnthropicAdapter
    assert (an.name, an.base_url, an.price_provider, an.secrets()) == (
        "an",
        "http://127.0.0.1:9/anthropic",
        "anthropic",
        [],
    )
    assert (an.connect_timeout, an.timeout) == (5.0, 600.0)  # the settings' defaults


def test_route_settings_arrive_in_the_route_table(engine: Engine) -> None:
    app = create_app(load_settings(text=_CONFIG, env={"OA_KEY": _KEY}), engine=engine)
    small = app.routes["small"]
    chain = ["oa:gpt-4o-mini", "oa:gpt-4o", "an:claude-haiku-4-5"]
    assert [d.id for d in small.candidates] == chain
    assert (small.retries, small.connect_timeout, small.first_byte_timeout, small.timeout) == (
        4,
        0.5,
        7.0,
        30.0,
    )
    assert small.degraded == DegradedTemplate(content="busy")
    assert app.route_table.fallbacks("small") == (["big", "an:claude-haiku-4-5"], "config")
    big = app.routes["big"]
    assert [d.id for d in big.candidates] == ["oa:gpt-4o"]
    assert (big.retries, big.timeout, big.degraded) == (2, None, None)
    assert app.route_table.fallbacks("big") == ([], "config")
