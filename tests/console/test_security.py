"""The security page: a request carrying a fake AWS key is blocked and shown as a finding
(detector, family, action, confidence, request id, org, key prefix) with the key's text
nowhere in the page; a honeypot key's use is listed by its prefix; the orgs' policy layers
are listed. acme's org_admin sees acme's findings, honeypot uses and layers, never globex's."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
import orjson

from costwarden.alerts.rules import HONEYPOT_RULE
from costwarden.console.security import finding_rows, honeypot_rows, policy_rows
from costwarden.storage import repo
from costwarden.storage.alert_records import AlertRecord
from costwarden.storage.alerts import list_alerts
from costwarden.storage.security_policies import PolicyRecord, put_policy
from tests.console.conftest import Orgs, Signed, sign_in
from tests.helpers import LiveGateway

# Fake but well-formed (tests/gateway/test_security.py's): the secrets detector blocks them.
AWS_KEY = "AKIAQ3EGRTW5PLXJ7Z4M"
OPENAI_KEY = "sk-proj-Xq7Lm2Pz9Rt4Vb8Nc3Wd6Fh1Jk5Gs0YaEuTiOo2QwErTyUiPaSdFgHjKl"


async def _blocked(gw: LiveGateway, key: str, text: str) -> str:
    """Send ``text`` with ``key``: the scan blocks it; its request id."""
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=key, max_retries=0) as c:
        try:
            await c.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
            )
        except openai.PermissionDeniedError as exc:
            assert exc.response.headers["x-costwarden-security-status"] == "blocked"
            return exc.response.headers["x-request-id"]
    raise AssertionError("not blocked")


async def _honeypot_alert(gw: LiveGateway, key_id: str) -> AlertRecord:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(list_alerts, gw.app.engine)
        mine = [a for a in found if a.rule == HONEYPOT_RULE and a.scope_id == key_id]
        if mine:
            return mine[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no honeypot alert")


async def test_findings_honeypot_uses_and_policies_are_shown_without_the_secret(
    gw: LiveGateway, orgs: Orgs, admin: Signed
) -> None:
    engine = gw.app.engine
    acme_request = await _blocked(gw, gw.key, f"deploy with key {AWS_KEY} today")
    globex_request = await _blocked(gw, orgs.globex_key, f"use the token {OPENAI_KEY}")
    trap, trap_record = await asyncio.to_thread(
        repo.create_key, engine, org="globex", name="wiki-canary", honeypot=True
    )
    gw.app.keys.apply([trap_record])
    async with httpx.AsyncClient(base_url=gw.base_url) as c:
        used = await c.get("/v1/models", headers={"authorization": f"Bearer {trap}"})
        assert used.status_code == 401
    alert = await _honeypot_alert(gw, trap_record.id)
    await asyncio.to_thread(
        put_policy, engine, org="acme", key_id=None, actor="test",
        raw={"actions": {"secrets": "block", "pii": "redact"}, "on_timeout": "closed"},
    )  # fmt: skip
    await asyncio.to_thread(
        put_policy, engine, org="globex", key_id=None, actor="test",
        raw={"actions": {"injection": "flag"}},
    )  # fmt: skip
    await gw.app.ledger.flush()
    acme_record = gw.app.keys.lookup(gw.key)
    assert acme_record is not None

    page = await admin.client.get("/dashboard/security")
    assert page.status_code == 200, page.text
    html = page.text
    frag = await admin.client.get("/dashboard/security/recent")
    assert frag.status_code == 200
    for text in (html, frag.text):
        assert AWS_KEY not in text and OPENAI_KEY not in text
        assert trap not in text
    row = html.split(f'data-testid="finding-{acme_request}"')[1].split("</tr>")[0]
    assert "<td>secrets</td>" in row and ">blocked<" in row and "aws" in row
    assert f"<code>{acme_record.prefix}…</code>" in row and "<td>acme</td>" in row
    assert f"finding-{globex_request}" in html
    hit = html.split(f'data-testid="honeypot-{alert.id}"')[1].split("</tr>")[0]
    assert trap_record.prefix in hit and "wiki-canary" in hit and "globex" in hit
    assert 'data-testid="policy-acme"' in html and 'data-testid="policy-globex"' in html
    policy = html.split('data-testid="policy-acme"')[1].split("</tr>")[0]
    assert "secrets: <strong>block</strong>" in policy and "<td>closed</td>" in policy

    # acme's org_admin and viewer: acme's alone.
    for credential in (orgs.acme_admin, orgs.acme_viewer):
        signed = await sign_in(gw.base_url, credential)
        try:
            for path in ("/dashboard/security", "/dashboard/security/recent"):
                own = await signed.client.get(path)
                assert own.status_code == 200
                assert f"finding-{acme_request}" in own.text
                for absent in (globex_request, "globex", trap_record.prefix, alert.id):
                    assert absent not in own.text, (credential, path, absent)
                assert AWS_KEY not in own.text
        finally:
            await signed.client.aclose()


def test_a_finding_shows_only_its_named_fields() -> None:
    at = datetime(2027, 3, 10, 12, tzinfo=UTC)
    stored = [
        {"detector": "secrets", "family": "aws_access_key_id", "severity": "critical",
         "confidence": 0.95, "action": "blocked", "location": "messages[0].content",
         "span_hash": "0123456789abcdef", "text": "AKIAQ3EGRTW5PLXJ7Z4M"},
        {"detector": "pii", "family": "email", "severity": "medium", "confidence": "high",
         "action": "redacted", "span_hash": "jane@example.com"},
        "not a finding",
    ]  # fmt: skip
    rows: list[dict[str, Any]] = [
        {"request_id": "req_1", "ts": at, "org_id": "org_a", "key_id": "key_a",
         "security": orjson.dumps(stored).decode()},
        {"request_id": "req_2", "ts": at, "org_id": None, "key_id": None, "security": "{bad"},
    ]  # fmt: skip
    found = finding_rows(rows, {"org_a": "acme"}, {"key_a": "cw-abcdefg"})
    assert len(found) == 2
    first, second = found
    assert (first["org"], first["key_prefix"]) == ("acme", "cw-abcdefg")
    assert first["confidence"] == "0.95"
    assert (first["severity_badge"], first["action_badge"]) == ("bad", "bad")
    assert second["confidence"] == "" and second["span_hash"] == ""  # not a hash: not shown
    assert "AKIA" not in repr(found) and "jane@" not in repr(found)
    assert len(finding_rows(rows * 3, {}, {}, limit=4)) == 4


def _alert(alert_id: str, org_id: str, rule: str = HONEYPOT_RULE, minute: int = 0) -> AlertRecord:
    at = datetime(2027, 3, 10, 12, minute, tzinfo=UTC)
    return AlertRecord(
        id=alert_id, kind="security", rule=rule, severity="critical", org_id=org_id,
        scope="key", scope_id="key_1", window_key="hour:1", threshold_pct=None,
        state="firing", title="t",
        detail={"key_prefix": "cw-abcdefg", "org_name": org_id, "source": "10.0.0.9",
                "user_agent": "curl/8", "endpoint": "models", "action": "alert"},
        fired_at=at, resolves_at=None, snoozed_until=None, acknowledged_by=None,
        acknowledged_at=None, resolved_by=None, resolved_at=None, updated_at=at,
    )  # fmt: skip


def test_honeypot_uses_are_one_orgs_or_all_newest_first() -> None:
    alerts = [_alert("a1", "o1", minute=1), _alert("a2", "o2", minute=2),
              _alert("a3", "o1", rule="security-finding", minute=3)]  # fmt: skip
    assert [r["id"] for r in honeypot_rows(alerts, None)] == ["a2", "a1"]
    assert [r["id"] for r in honeypot_rows(alerts, "o1")] == ["a1"]
    (row,) = honeypot_rows(alerts, "o2")
    assert (row["key_prefix"], row["source"], row["state"]) == ("cw-abcdefg", "10.0.0.9", "firing")


def test_a_policy_layer_is_shown_field_by_field() -> None:
    at = datetime(2027, 3, 10, 12, tzinfo=UTC)
    records = [
        PolicyRecord("o1", None, {"actions": {"pii": "redact", "injection": "block"}}, "t", at, 1),
        PolicyRecord("o1", "key_1", {"min_confidence": 0.9}, "t", at, 2),
    ]
    org, key = policy_rows(records, {"o1": "acme"}, {"key_1": "cw-abcdefg"})
    assert org["actions"] == [("injection", "block"), ("pii", "redact")]
    assert org["key_id"] is None and org["fields"][0] == ("min_confidence", None)
    assert key["key_prefix"] == "cw-abcdefg" and key["actions"] == []
    assert key["fields"][0] == ("min_confidence", 0.9)
