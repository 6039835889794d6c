"""Alert channels through the admin API: created, shown without secrets, refused when
malformed (nothing stored), tested against a real receiver, disabled; no secret in any
response or log line; a channel of the config file shown and tested, but 409 to a change."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from costwarden.mock import MockServer
from tests.admin.conftest import AUTH, TOKEN
from tests.helpers import LiveGateway, WebhookReceiver, live_gateway, webhook_receiver

SECRET = "whsec_" + base64.b64encode(b"channels-api-key-0123456789abcdef").decode()
PASSWORD = "smtp-hunter2-password"
SLACK_PATH = "/services/T0SECRET/B0SECRET/xoxbSecretPath"


@pytest.fixture
async def hook() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver(SECRET) as r:
        yield r


@pytest.mark.parametrize(
    "body",
    [
        {"type": "pager", "url": "https://x.example/h"},  # unknown type
        {"type": "slack", "url": "ftp://x.example/h"},  # invalid URL
        {"type": "slack", "url": "not a url"},
        {"type": "slack", "url": "http:///nohost"},
        {"type": "webhook", "url": "https://x.example/h", "secret": "whsec_!!"},
        {"type": "webhook", "url": "https://x.example/h"},  # unsigned
        {"type": "email", "sender": "a@b", "host": "smtp"},  # no recipient
        {"type": "email", "to": ["a@b"], "sender": "a@b", "host": "smtp", "username": "u"},
        {"type": "email", "to": ["a@b, c@d"], "sender": "a@b", "host": "smtp"},
        {"type": "slack", "url": "https://x.example/h", "min_severity": "fatal"},
    ],
)
async def test_bad_channels_are_refused_and_nothing_is_stored(
    gw: LiveGateway, body: dict[str, Any]
) -> None:
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        r = await client.put("/admin/alert-channels/ops", json=body, headers=AUTH)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert "!!" not in r.text and "x.example/h" not in r.text
        listed = await client.get("/admin/alert-channels", headers=AUTH)
        assert listed.json() == {"data": []}


async def test_channels_round_trip_without_their_secrets(
    gw: LiveGateway, hook: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    port, got = hook.port, hook.verified
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        webhook = {"type": "webhook", "url": f"http://127.0.0.1:{port}/hook", "secret": SECRET}
        r = await client.put("/admin/alert-channels/ops", json=webhook, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["has_secret"] is True and SECRET not in r.text
        slack = {"type": "slack", "url": "https://hooks.slack.example" + SLACK_PATH,
                 "min_severity": "critical", "kinds": ["threshold"]}
        r = await client.put("/admin/alert-channels/chat", json=slack, headers=AUTH)
        assert r.status_code == 200 and SLACK_PATH not in r.text
        mail = {"type": "email", "to": ["oncall@example.com"], "sender": "cw@example.com",
                "host": "127.0.0.1", "port": 2525.0, "username": "cw", "password": PASSWORD,
                "security": "none"}
        r = await client.put("/admin/alert-channels/mail", json=mail, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["email"]["has_password"] is True and PASSWORD not in r.text
        assert r.json()["email"]["port"] == 2525
        listed = await client.get("/admin/alert-channels", headers=AUTH)
        names = {c["name"]: c for c in listed.json()["data"]}
        assert set(names) == {"ops", "chat", "mail"}
        assert names["chat"]["filter"] == {"min_severity": "critical", "org_ids": [],
                                           "kinds": ["threshold"]}
        for leak in (SECRET, SLACK_PATH, PASSWORD):
            assert leak not in listed.text
        tested = await client.post("/admin/alert-channels/ops/test", headers=AUTH)
        assert tested.json() == {"delivered": True, "status": 204, "error": None}
        assert [m["data"]["kind"] for m in got] == ["test"]
        failed = await client.post("/admin/alert-channels/mail/test", headers=AUTH)
        assert failed.json()["delivered"] is False and PASSWORD not in failed.text
        gone = await client.delete("/admin/alert-channels/chat", headers=AUTH)
        assert gone.json() == {"name": "chat", "enabled": False}
        log = await client.get("/admin/alert-channels/ops/deliveries", headers=AUTH)
        assert log.json() == {"data": []}  # a test message is no delivery of an alert
        missing = await client.post("/admin/alert-channels/nope/test", headers=AUTH)
        assert missing.status_code == 404
    for leak in (SECRET, SECRET.removeprefix("whsec_"), SLACK_PATH, PASSWORD):
        assert leak not in caplog.text


async def test_a_config_channel_is_shown_and_tested_but_changed_only_in_the_file(
    mock: MockServer, database_url: str, tmp_path: Path, hook: WebhookReceiver
) -> None:
    extra = (
        f'[[alerts.channels]]\nname = "ops"\ntype = "webhook"\nurl = "{hook.url}"\n'
        'secret_env = "CW_TEST_HOOK_SECRET"\n'
    )
    env = {"CW_TEST_HOOK_SECRET": SECRET}
    async with (
        live_gateway(
            mock, database_url, tmp_path, admin_token=TOKEN, extra_toml=extra, env=env
        ) as gateway,
        httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as client,
    ):
        listed = await client.get("/admin/alert-channels", headers=AUTH)
        (ops,) = listed.json()["data"]
        assert (ops["name"], ops["source"], ops["has_secret"]) == ("ops", "config", True)
        assert SECRET not in listed.text
        slack = {"type": "slack", "url": "https://hooks.slack.example" + SLACK_PATH}
        for r in (
            await client.put("/admin/alert-channels/ops", json=slack, headers=AUTH),
            await client.delete("/admin/alert-channels/ops", headers=AUTH),
        ):
            assert r.status_code == 409, r.text
            error = r.json()["error"]
            assert error["type"] == "conflict"
            assert "managed in the config file" in error["message"]
            assert SECRET not in r.text and SLACK_PATH not in r.text
        tested = await client.post("/admin/alert-channels/ops/test", headers=AUTH)
        assert tested.json()["delivered"] is True
        # Nothing changed: still the file's channel, enabled, with its URL.
        (after,) = (await client.get("/admin/alert-channels", headers=AUTH)).json()["data"]
        assert after == ops
    assert [m["data"]["kind"] for m in hook.verified] == ["test"]
