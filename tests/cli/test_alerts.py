"""``costwarden alerts``: channels added from the environment's secrets and never printed,
bad channels refused with nothing stored, acknowledgements audited with who, a signed test
message to a real receiver; a channel of the config file listed but not changed."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from costwarden.alerts.model import Channel
from costwarden.alerts.rules import threshold_alert
from costwarden.core.event_kinds import LimitThresholdCrossed
from costwarden.storage import alerts as store
from costwarden.storage import repo
from costwarden.storage.audit import audit_entries
from costwarden.storage.config_channels import sync_config_channels
from costwarden.storage.db import create_engine_for
from tests.helpers import WebhookReceiver, ainvoke_cli, cli_env, webhook_receiver

SECRET = "whsec_" + base64.b64encode(b"cli-test-signing-key-0123456789ab").decode()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver(SECRET) as r:
        yield r


async def test_channels_tests_and_acknowledgements(
    config: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    port, got = receiver.port, receiver.verified
    env = cli_env(CW_HOOK_SECRET=SECRET)
    bad = await ainvoke_cli(
        "alerts", "channel-add", "ops", "--config", config, "--type", "webhook",
        "--url", "ftp://example.com/x", "--secret-env", "CW_HOOK_SECRET", env=env,
    )  # fmt: skip
    assert bad.code != 0 and "url" in bad.both.lower() and SECRET not in bad.both
    unknown = await ainvoke_cli(
        "alerts", "channel-add", "ops", "--config", config, "--type", "pager", env=env
    )
    assert unknown.code != 0
    listed = await ainvoke_cli("alerts", "channels", "--config", config, "--json", env=env)
    assert listed.json() == []  # nothing stored by either
    added = await ainvoke_cli(
        "alerts", "channel-add", "ops", "--config", config, "--type", "webhook",
        "--url", f"http://127.0.0.1:{port}/hook", "--secret-env", "CW_HOOK_SECRET",
        "--json", env=env,
    )  # fmt: skip
    assert added.code == 0, added.err
    assert added.json()["has_secret"] is True and SECRET not in added.both
    listed = await ainvoke_cli("alerts", "channels", "--config", config, "--json", env=env)
    (channel,) = listed.json()
    assert channel["name"] == "ops" and SECRET not in listed.both
    sent = await ainvoke_cli("alerts", "test", "ops", "--config", config, env=env)
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
        acked = await ainvoke_cli(
            "alerts", "ack", alert.id, "--by", "alice", "--config", config, "--json", env=env
        )
        assert acked.json()["acknowledged_by"] == "cli:alice"
        again = await ainvoke_cli("alerts", "ack", alert.id, "--config", config, env=env)
        assert again.code != 0 and "already acknowledged" in again.both
        listed_alerts = await ainvoke_cli("alerts", "list", "--config", config, "--json", env=env)
        assert [a["state"] for a in listed_alerts.json()] == ["acknowledged"]
        trail = [(e.action, e.actor) for e in audit_entries(engine, limit=20)]
        assert ("alert.acknowledge", "cli:alice") in trail
    finally:
        engine.dispose()


async def test_alert_rules_set_list_and_remove(config: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cw.db"
    engine = create_engine_for(url)
    repo.ensure_org(engine, "acme")
    engine.dispose()
    base = ("alerts", "rule-set", "--config", config)
    made = await ainvoke_cli(
        *base, "--org", "acme", "--scope", "user", "--limit", "daily_tokens",
        "--thresholds", "90, 60%", "--json",
    )  # fmt: skip
    rule = made.json()
    assert (rule["scope"], rule["scope_id"], rule["limit"], rule["thresholds"]) == (
        "user", None, "daily_tokens", [60, 90],
    )  # fmt: skip
    assert rule["created_by"].startswith("cli:")
    # Bad input: a clear error, exit code 2, nothing stored.
    for args, message in [
        (("--org", "acme", "--scope", "org", "--thresholds", "0"), "outside (0, 1000] %"),
        (("--org", "acme", "--scope", "org", "--thresholds", "1001"), "outside (0, 1000] %"),
        (("--org", "acme", "--scope", "org", "--thresholds", "half"), "not a whole percent"),
        (("--org", "nope", "--scope", "org", "--thresholds", "50"), "unknown org"),
        (("--org", "acme", "--scope", "project", "--scope-id", "x", "--thresholds", "50"),
         "has no project"),
        (("--scope", "user", "--tier", "gold", "--thresholds", "50"), "unknown tier"),
    ]:
        bad = await ainvoke_cli(*base, *args)
        assert bad.code == 2 and message in bad.err.replace("\n", " "), (args, bad.both)
    listed = (await ainvoke_cli("alerts", "rules", "--config", config, "--json")).json()
    assert [r["id"] for r in listed] == [rule["id"]]
    table = await ainvoke_cli("alerts", "rules", "--config", config)
    assert rule["id"] in table.out and "60%, 90%" in table.out
    gone = await ainvoke_cli("alerts", "rule-remove", rule["id"], "--config", config)
    assert gone.code == 0
    assert (await ainvoke_cli("alerts", "rules", "--config", config, "--json")).json() == []
    again = await ainvoke_cli("alerts", "rule-remove", rule["id"], "--config", config)
    assert again.code == 2 and "no alert rule" in again.err


async def test_a_config_channel_is_listed_but_not_changed_from_the_cli(
    config: str, tmp_path: Path
) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path}/cw.db")
    try:
        sync_config_channels(
            engine,
            [Channel(id="", name="ops", type="webhook", url="http://127.0.0.1:9/hook",
                     secret=SECRET, source="config")],
        )  # fmt: skip
    finally:
        engine.dispose()
    env = cli_env(CW_HOOK_SECRET=SECRET)
    listed = await ainvoke_cli("alerts", "channels", "--config", config, "--json", env=env)
    assert [(c["name"], c["source"]) for c in listed.json()] == [("ops", "config")]
    table = await ainvoke_cli("alerts", "channels", "--config", config, env=env)
    assert "config" in table.out
    replaced = await ainvoke_cli(
        "alerts", "channel-add", "ops", "--config", config, "--type", "webhook",
        "--url", "http://127.0.0.1:9/other", "--secret-env", "CW_HOOK_SECRET", env=env,
    )  # fmt: skip
    removed = await ainvoke_cli("alerts", "channel-remove", "ops", "--config", config, env=env)
    for result in (replaced, removed):
        assert result.code == 2 and "managed in the config file" in result.err
        assert SECRET not in result.both
    listed = await ainvoke_cli("alerts", "channels", "--config", config, "--json", env=env)
    (ops,) = listed.json()
    assert ops["enabled"] is True and ops["url"] == "http://127.0.0.1:9/…"
