"""Config-file alert channels in a live gateway: stored at start, an alert delivered to one
(signed), an admin API channel of the same name taken over with one warning, nothing of a
secret in the log, and a config loaded without its secrets never synced."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from costwarden.alerts.model import Channel
from costwarden.app.config_channels import sync_channels
from costwarden.config.alerts import AlertSettings
from costwarden.core.errors import ConfigError
from costwarden.mock import MockServer
from costwarden.storage import alerts as store
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from tests.helpers import (
    PRICEY,
    WebhookReceiver,
    configure_mock,
    live_gateway,
    set_limits,
    webhook_receiver,
)
from tests.helpers import chat as _chat

SECRET = "whsec_" + base64.b64encode(b"config-channel-e2e-0123456789abcd").decode()
ENV = {"CW_TEST_HOOK_SECRET": SECRET}
FAST = "[alerts]\ndelivery_poll_seconds = 0.1\nretry_base_seconds = 0.2\n"


def _channels(url: str) -> str:
    return (
        f'\n[[alerts.channels]]\nname = "ops"\ntype = "webhook"\nurl = "{url}"\n'
        'secret_env = "CW_TEST_HOOK_SECRET"\n'
    )


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver(SECRET) as r:
        yield r


async def _until(predicate: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def test_a_config_channel_receives_the_alert_signed(
    mock: MockServer, database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    await configure_mock(mock, output_tokens=1000)  # about $1 a request with PRICEY
    extra = PRICEY + FAST + _channels(receiver.url)
    async with live_gateway(mock, database_url, tmp_path, extra_toml=extra, env=ENV) as gw:
        (ops,) = await asyncio.to_thread(store.list_channels, gw.app.engine)
        assert (ops.name, ops.source, ops.secret) == ("ops", "config", SECRET)
        await set_limits(gw, daily_usd="1.5")
        status, _, _ = await _chat(gw)  # about $1 of $1.5: past 50 %
        assert status == 200
        await _until(lambda: len(receiver.verified) >= 1)
    (message,) = receiver.verified  # verified against the secret read from the environment
    assert (message["data"]["kind"], message["data"]["threshold_pct"]) == ("threshold", 50)
    assert receiver.forged == 0


async def test_an_api_channel_is_taken_over_with_one_warning_and_no_secret_logged(
    mock: MockServer,
    database_url: str,
    tmp_path: Path,
    receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_engine_for(database_url)
    try:
        migrate(engine)
        api = Channel(id="", name="ops", type="slack", url="https://hooks.example.com/T0/B0/x")
        await asyncio.to_thread(store.save_channel, engine, api, actor="alice")
    finally:
        engine.dispose()
    caplog.set_level(logging.INFO)
    extra = FAST + _channels(receiver.url)
    for _ in range(2):  # a start, and a restart
        async with live_gateway(mock, database_url, tmp_path, extra_toml=extra, env=ENV) as gw:
            (ops,) = await asyncio.to_thread(store.list_channels, gw.app.engine)
            assert (ops.type, ops.source, ops.url) == ("webhook", "config", receiver.url)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "'ops'" in
                r.getMessage()]  # fmt: skip
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "config file" in warnings[0].getMessage()
    assert SECRET not in caplog.text and SECRET[6:] not in caplog.text


async def test_a_config_loaded_without_its_secrets_is_never_synced(tmp_path: Path) -> None:
    # Its channels whose variables are unset were skipped: syncing would disable them.
    engine = create_engine_for(f"sqlite:///{tmp_path}/cw.db")
    try:
        migrate(engine)
        with pytest.raises(ConfigError, match="ops"):
            await sync_channels(engine, AlertSettings(channels_unresolved=("ops",)))
    finally:
        engine.dispose()
