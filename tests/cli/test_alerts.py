"""``costwarden alerts``: channels added from the environment's secrets and never printed,
bad channels refused with nothing stored, acknowledgements audited with who, a signed test
message to a real receiver."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from costwarden.alerts.rules import threshold_alert
from costwarden.core.event_kinds import LimitThresholdCrossed
from costwarden.storage import alerts as store
from costwarden.storage.audit import audit_entries
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from tests.helpers import WebhookReceiver, arun_cli, cli_env, gateway_toml, webhook_receiver

SECRET = "whsec_" + base64.b64encode(b"cli-test-signing-key-0123456789ab").decode()


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "costwarden.toml"
    url = f"sqlite:///{tmp_path}/cw.db"
    path.write_text(gateway_toml("http://127.0.0.1:9", url), encoding="utf-8")
    migrate(url)
    return str(path)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver(SECRET) as r:
        yield r


async def test_channels_tests_and_acknowledgements(
    config: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    port, got = receiver.port, receiver.verified
    env = cli_env(CW_HOOK_SECRET=SECRET)
    bad = await arun_cli(
        "alerts", "channel-add", "ops", "--config", config, "--type", "webhook",
        "--url", "ftp://example.com/x", "--secret-env", "CW_HOOK_SECRET", env=env,
    )  # fmt: skip
    assert bad.code != 0 and "url" in bad.both.lower() and SECRET not in bad.both
    unknown = await arun_cli(
        "alerts", "channel-add", "ops", "--config", config, "--type", "pager", env=env
    )
    assert unknown.code != 0
    listed = await arun_cli("alerts", "channels", "--config", config, "--json", env=env)
    assert listed.json() == []  # nothing stored by either
    added = await arun_cli(
        "alerts", "channel-add", "ops", "--config", config, "--type", "webhook",
        "--url", f"http://127.0.0.1:{port}/hook", "--secret-env", "CW_HOOK_SECRET",
        "--json", env=env,
    )  # fmt: skip
    assert added.code == 0, added.err
    assert added.json()["has_secret"] is True and SECRET not in added.both
    listed = await arun_cli("alerts", "channels", "--config", config, "--json", env=env)
    (channel,) = listed.json()
    assert channel["name"] == "ops" and SECRET not in listed.both
    sent = await arun_cli("alerts", "test", "ops", "--config", config, env=env)
    assert sent.code == 0, sent.both
    assert [m["data"]["kind"] for m in got] == ["test"]

    engine = create_engine_for(f"sqlite:///{tmp_path}/cw.db")
    try:
        alert = store.raise_alert(
            engine,
            threshold_alert(
                LimitThresholdCrossed(
                    org_id="org_1", scope="org", scope_id="org_1", window="day", metric="usd",
                    threshold_pct=80, used="8", limit="10", window_key="until:1",
                )
            ),
        )  # fmt: skip
        assert alert is not None
        acked = await arun_cli(
            "alerts", "ack", alert.id, "--by", "alice", "--config", config, "--json", env=env
        )
        assert acked.json()["acknowledged_by"] == "cli:alice"
        again = await arun_cli("alerts", "ack", alert.id, "--config", config, env=env)
        assert again.code != 0 and "already acknowledged" in again.both
        listed_alerts = await arun_cli("alerts", "list", "--config", config, "--json", env=env)
        assert [a["state"] for a in listed_alerts.json()] == ["acknowledged"]
        trail = [(e.action, e.actor) for e in audit_entries(engine, limit=20)]
        assert ("alert.acknowledge", "cli:alice") in trail
    finally:
        engine.dispose()
