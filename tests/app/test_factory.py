"""The composition root maps each setting into the domain's own types: every field arrives;
and it builds one Redis client for everything that uses Redis, closed after its users."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy.engine import Engine

from costwarden.app import factory
from costwarden.app.domain_types import build_deployments
from costwarden.app.factory import CostwardenApp, create_app
from costwarden.budgets.redis_store import RedisStore
from costwarden.config.settings import load_settings
from costwarden.providers.anthropic import AnthropicAdapter
from costwarden.providers.openai import OpenAIAdapter
from costwarden.routing.chains import DegradedTemplate
from costwarden.storage.db import create_engine_for
from costwarden.storage.redis import CLIENT_NAME
from tests.helpers import FlakyLink

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


# ------------------------------------------------------------------ Redis: one client


def _app(engine: Engine, extra: str) -> CostwardenApp:
    return create_app(load_settings(text=_CONFIG + extra, env={"OA_KEY": _KEY}), engine=engine)


def _connections(url: str) -> int:
    """The gateway's connections to the Redis at ``url`` (they carry its name)."""
    client = redis.Redis.from_url(url)
    try:
        return sum(1 for c in client.client_list() if c["name"] == CLIENT_NAME)
    finally:
        client.close()


async def test_one_redis_client_serves_counters_and_breakers_and_closes_after_them(
    engine: Engine, private_redis: str
) -> None:
    app = _app(engine, f'[redis]\nurl = "{private_redis}"\nmax_connections = 8\n')
    assert app.redis is not None
    assert app.redis.connection_pool.max_connections == 8
    assert _connections(private_redis) == 0  # building it opened nothing
    await app.startup()
    try:
        store = app.enforcer.store
        assert isinstance(store, RedisStore) and store.client is app.redis
        assert app.breakers._client is app.redis
        assert 0 < _connections(private_redis) <= 8
    finally:
        await app.shutdown()
    for _ in range(100):  # the server sees the sockets close a moment later
        if _connections(private_redis) == 0:
            break
        await asyncio.sleep(0.01)
    assert _connections(private_redis) == 0


async def test_a_part_slow_to_close_is_named_in_a_warning(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = _app(engine, "")
    await app.startup()
    monkeypatch.setattr(factory, "_SLOW_CLOSE_SECONDS", 0.05)
    closed = app.switches.close

    async def slow_close() -> None:
        await asyncio.sleep(0.3)
        await closed()

    monkeypatch.setattr(app.switches, "close", slow_close)
    with caplog.at_level(logging.WARNING, logger="costwarden.app.factory"):
        await app.shutdown()
    named = [r.getMessage() for r in caplog.records if "has not closed" in r.getMessage()]
    assert named == ["shutting down: switches has not closed after 0.05 s"]


async def test_breakers_get_the_shared_timeout_and_never_resend_a_command(
    engine: Engine, private_redis: str
) -> None:
    # The breakers' own client used to wait 1 s whatever the setting; and whether redis-py
    # resent a command that timed out was up to its version (a resent write bumps the
    # state's version again).
    async with FlakyLink(private_redis) as link:
        app = _app(
            engine,
            f'[redis]\nurl = "{link.url}"\ntimeout_seconds = 0.2\n'
            "[resilience]\nsync_seconds = 5\n",  # no second write of its own meanwhile
        )
        direct = redis.Redis.from_url(private_redis)
        await app.startup()
        try:
            # One breaker opened while Redis answers: the write script is loaded (a lost
            # answer to the first EVALSHA's NOSCRIPT would keep the script from ever running).
            _trip(app, "oa:gpt-4o")
            await _until(lambda: direct.hget("cw:breaker:state:oa:gpt-4o", "version") == b"1")
            # The push's answer is lost (it runs), and only its: the poll that follows the
            # first push may still be in flight, and a connection it lost would make the
            # push open a new one, whose handshake would time out before the push is sent.
            link.drop_only = b"EVALSHA"
            link.drop_answers = True
            loop = asyncio.get_running_loop()
            start = loop.time()
            _trip(app, "oa:gpt-4o-mini")  # written at once
            await _until(lambda: app.breakers.redis_down)
            assert loop.time() - start < 0.6, "the write did not time out within 0.2 s"
            # The write ran (its answer lost); on a busy machine it may reach Redis late.
            await _until(lambda: direct.hget("cw:breaker:state:oa:gpt-4o-mini", "state") == b"open")
            await asyncio.sleep(0.3)  # a resend, had there been one, would be in by now
            state = direct.hgetall("cw:breaker:state:oa:gpt-4o-mini")
            assert state[b"state"] == b"open" and state[b"version"] == b"1"  # ran once
        finally:
            direct.close()
            link.drop_answers = False
            await app.shutdown()


def _trip(app: CostwardenApp, deployment: str) -> None:
    for _ in range(app.breakers.policy.failure_threshold):
        app.breakers.failure(deployment, "status 503")


async def _until(check: Callable[[], bool], within: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not check():
        assert loop.time() - start < within, "never happened"
        await asyncio.sleep(0.01)


async def test_deprecated_settings_are_logged_once_at_startup(
    engine: Engine, private_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="costwarden.app.factory")
    app = _app(engine, f'[budgets]\nredis_url = "{private_redis}"\n')
    assert app.redis is not None  # the old key still configures Redis
    (message,) = app.settings.deprecations
    assert "budgets.redis_url: deprecated: it is now redis.url" in message
    assert not caplog.records  # not when the app is built (logging may not be set up) ...
    await app.startup()
    await app.startup()  # (already started: nothing happens)
    try:
        logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert [m for m in logged if "deprecated" in m] == [message]  # ... once when it starts
        # (and the dashboard's per-process sign-ins, no secret being set, said at the same time)
        assert [m for m in logged if "dashboard sign-ins" in m] == [
            "COSTWARDEN_DASHBOARD_SECRET and COSTWARDEN_ADMIN_TOKEN are unset: dashboard "
            "sign-ins last only as long as this process and do not cross to other gateway "
            "processes"
        ]
        # And the Redis it uses, once.
        port = private_redis.rsplit(":", 1)[1]
        lines = [r.getMessage() for r in caplog.records if "redis at" in r.getMessage()]
        assert lines == [
            f"redis at redis://127.0.0.1:{port}: one pool of at most 64 connections, "
            "command timeout 1s, no client retries"
        ]
    finally:
        await app.shutdown()
