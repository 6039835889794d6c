"""POST /billing/stripe/webhook end to end, on SQLite and PostgreSQL: live gateways on
loopback, bodies signed the way Stripe signs them (tests/helpers.stripe_signature), the org's
limits seen through the official OpenAI SDK's requests.

- a signed ``customer.subscription.updated`` moves the org to its tier, and every gateway on
  the database applies the tier's limits within a second (the time is printed);
- a replay changes nothing (no audit row, no event);
- a bad, stale or missing signature, or a body that is no event: 400 in the error shape,
  nothing recorded;
- out-of-order delivery ends in the newest state;
- a failed payment raises an alert; after the grace period the suspension job switches the
  org off (503), and a paid invoice switches it back on and resolves the alert;
- without a signing secret the endpoint is off (404); with the database down, 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from costwarden.core.event_kinds import BillingChanged
from costwarden.mock import MockServer
from costwarden.storage import policy
from costwarden.storage.audit import audit_entries
from costwarden.storage.billing import TIER_ACTION, billing_events_of
from tests.helpers import (
    FakeClock,
    LiveGateway,
    database_down,
    live_gateway,
    stripe_invoice_event,
    stripe_signature,
    stripe_subscription_event,
)

SECRET = "whsec_e2e_0123456789abcdef0123"
ADMIN = "adm-billing-test-token"
CONFIG = """
[[tiers]]
name = "free"
org = { requests_per_minute = 100 }

[[tiers]]
name = "pro"
org = { requests_per_minute = 1000 }

[billing]
price_tiers = { pro_monthly = "pro" }
grace_period_hours = 1
check_interval_seconds = 3600
"""
PATH = "/billing/stripe/webhook"
LIMIT_HEADER = "x-ratelimit-limit-requests"


@contextlib.asynccontextmanager
async def _gateway(
    mock: MockServer, database_url: str, tmp_path: Path, **kw: Any
) -> AsyncIterator[LiveGateway]:
    env = {"COSTWARDEN_STRIPE_WEBHOOK_SECRET": f"whsec_rotated_away,{SECRET}"}
    async with live_gateway(
        mock, database_url, tmp_path, extra_toml=CONFIG, env=env, admin_token=ADMIN, **kw
    ) as gw:
        yield gw


@pytest.fixture
async def gw(mock: MockServer, database_url: str, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with _gateway(mock, database_url, tmp_path) as gw:
        await _on_free(gw)
        yield gw


async def _on_free(gw: LiveGateway) -> None:
    await asyncio.to_thread(
        policy.set_org_tier, gw.app.engine, "acme", "free", known_tiers=["free", "pro"]
    )
    await gw.app.enforcer.refresh()


async def _post(
    gw: LiveGateway, body: bytes | dict[str, Any], signature: str | None = "sign"
) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"content-type": "application/json"}
    if signature == "sign":
        signature = stripe_signature(raw, SECRET)
    if signature is not None:
        headers["stripe-signature"] = signature
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.base_url + PATH, data=raw, headers=headers) as r:
            return r.status, orjson.loads(await r.read())


async def _limit(client: openai.AsyncOpenAI) -> int:
    """The org's requests-per-minute limit as a request sees it."""
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    return int(raw.headers[LIMIT_HEADER])


def _client(gw: LiveGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0)


async def _seconds_until(client: openai.AsyncOpenAI, limit: int, since: float) -> float:
    while await _limit(client) != limit:
        assert time.monotonic() - since < 5, "the new tier's limit never applied"
        await asyncio.sleep(0.02)
    return time.monotonic() - since


async def test_a_signed_update_changes_the_tier_on_every_gateway_within_a_second(
    gw: LiveGateway, mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    async with _gateway(mock, database_url, tmp_path) as other:  # another process's view
        async with _client(gw) as one, _client(other) as two:
            assert (await _limit(one), await _limit(two)) == (100, 100)
            changes = gw.app.events.subscribe(kinds=frozenset({BillingChanged.kind}))
            event = stripe_subscription_event("evt_up", int(time.time()))
            started = time.monotonic()
            status, body = await _post(gw, event)
            assert (status, body["outcome"]) == (200, "applied"), body
            seconds = await asyncio.gather(
                _seconds_until(one, 1000, started), _seconds_until(two, 1000, started)
            )
            print(f"\ntier applied: this gateway {seconds[0]:.3f} s, the other {seconds[1]:.3f} s")
            assert max(seconds) < 1.0, seconds
            with changes:
                seen = await asyncio.wait_for(anext(aiter(changes)), 5)
            assert isinstance(seen.payload, BillingChanged)
            assert (seen.payload.change, seen.payload.tier, seen.payload.previous_tier) == (
                "plan", "pro", "free",
            )  # fmt: skip

            # the replay: 200, a duplicate, and nothing written or published
            audits = await asyncio.to_thread(audit_entries, gw.app.engine, action=TIER_ACTION)
            version = await asyncio.to_thread(policy.policy_version, gw.app.engine)
            replays = gw.app.events.subscribe(kinds=frozenset({BillingChanged.kind}))
            status, body = await _post(gw, event)
            assert (status, body["outcome"]) == (200, "duplicate"), body
            assert await asyncio.to_thread(
                audit_entries, gw.app.engine, action=TIER_ACTION
            ) == audits and len(audits) == 1
            assert await asyncio.to_thread(policy.policy_version, gw.app.engine) == version
            with replays:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(anext(aiter(replays)), 0.5)
            assert await _limit(one) == 1000


def _bad_requests() -> list[tuple[str, bytes, str | None, str]]:
    event = orjson.dumps(stripe_subscription_event("evt_bad", int(time.time())))
    stale = stripe_signature(event, SECRET, ts=int(time.time()) - 600)
    garbage = b'{"id": "evt_g", "type": '
    not_event = orjson.dumps({"id": "evt_n", "type": "customer.subscription.updated"})
    return [
        ("wrong secret", event, stripe_signature(event, "whsec_someone_else"), "not verified"),
        ("stale timestamp", event, stale, "tolerance"),
        ("missing header", event, None, "missing Stripe-Signature"),
        ("malformed header", event, "v1=abc", "not verified"),
        ("another body", event + b" ", stripe_signature(event, SECRET), "not verified"),
        ("garbage JSON", garbage, stripe_signature(garbage, SECRET), "not valid JSON"),
        ("not an event", not_event, stripe_signature(not_event, SECRET), "created"),
    ]


async def test_bad_requests_are_refused_and_change_nothing(
    gw: LiveGateway, caplog: pytest.LogCaptureFixture
) -> None:
    version = await asyncio.to_thread(policy.policy_version, gw.app.engine)
    for name, body, signature, message in _bad_requests():
        status, answer = await _post(gw, body, signature)
        assert status == 400, (name, answer)
        assert set(answer) == {"error"} and answer["error"]["type"] == "invalid_request_error"
        assert message in answer["error"]["message"], (name, answer)
        assert SECRET not in answer["error"]["message"]
    assert await asyncio.to_thread(billing_events_of, gw.app.engine) == []
    assert await asyncio.to_thread(audit_entries, gw.app.engine, action=TIER_ACTION) == []
    assert await asyncio.to_thread(policy.policy_version, gw.app.engine) == version
    assert SECRET not in caplog.text and "v1=" not in caplog.text
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.base_url + PATH) as r:
            assert (r.status, r.headers["allow"]) == (405, "POST")


async def test_out_of_order_events_end_in_the_latest_state(gw: LiveGateway) -> None:
    t = int(time.time())
    created = stripe_subscription_event("evt_c", t, action="created", status="incomplete")
    updated = stripe_subscription_event("evt_u", t + 10)
    deleted = stripe_subscription_event("evt_d", t + 30, action="deleted", status="canceled")
    late = stripe_subscription_event("evt_l", t + 20)
    outcomes = []
    async with _client(gw) as client:
        for event, tier in ((updated, 1000), (created, 1000), (deleted, 100), (late, 100)):
            status, body = await _post(gw, event)
            assert status == 200, body
            outcomes.append(body["outcome"])
            await gw.app.enforcer.refresh()
            assert await _limit(client) == tier, (event["id"], body)
    assert outcomes == ["applied", "stale", "applied", "stale"]


async def _alerts(gw: LiveGateway, state: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(
            gw.base_url + "/admin/alerts",
            params={"org": "acme", "state": state},
            headers={"authorization": f"Bearer {ADMIN}"},
        ) as r:
            assert r.status == 200, await r.text()
            found: list[dict[str, Any]] = (await r.json())["data"]
            return [a for a in found if a["rule"] == "billing-payment-failed"]


async def _eventually(check: Any, what: str) -> Any:
    for _ in range(100):
        if found := await check():
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def test_payment_failed_alerts_then_switches_off_until_paid(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    clock = FakeClock(time.time())
    async with _gateway(mock, database_url, tmp_path, clock=clock) as gw:
        await _on_free(gw)
        t = int(clock())
        assert (await _post(gw, stripe_subscription_event("evt_s", t)))[0] == 200
        await gw.app.enforcer.refresh()
        status, body = await _post(gw, stripe_invoice_event("evt_f", t + 1))  # by its customer
        assert (status, body["outcome"]) == (200, "applied"), body
        (alert,) = await _eventually(lambda: _alerts(gw, "firing"), "the alert")
        assert alert["severity"] == "critical" and alert["org_id"] is not None
        job = gw.app.billing_job
        assert job is not None
        async with _client(gw) as client:
            assert await job.round() == 0  # in grace: still served
            assert await _limit(client) == 1000
            clock.advance(3601)
            assert await job.round() == 1

            async def refused() -> bool:
                try:
                    await _limit(client)
                except openai.APIStatusError as exc:
                    assert exc.status_code == 503, exc
                    assert "billing: payment failed" in str(exc.body)
                    return True
                return False

            await _eventually(refused, "the org switched off")
            status, body = await _post(
                gw, stripe_invoice_event("evt_p", int(clock()), type_="invoice.paid")
            )
            assert (status, body["detail"]) == (200, "paid; switched back on"), body

            async def served() -> bool:
                try:
                    return await _limit(client) == 1000
                except openai.APIStatusError:
                    return False

            await _eventually(served, "the org switched back on")
        (resolved,) = await _eventually(lambda: _alerts(gw, "resolved"), "the alert resolved")
        assert resolved["id"] == alert["id"]


async def test_without_a_secret_the_endpoint_is_off(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    async with live_gateway(mock, database_url, tmp_path, extra_toml=CONFIG) as gw:
        assert gw.app.billing_job is None
        event = stripe_subscription_event("evt_1", int(time.time()))
        status, body = await _post(gw, event)
        assert status == 404 and "COSTWARDEN_STRIPE_WEBHOOK_SECRET" in body["error"]["message"]
        assert await asyncio.to_thread(billing_events_of, gw.app.engine) == []


async def test_the_database_down_is_a_503_that_stripe_retries(
    mock: MockServer, pg_url: str, tmp_path: Path
) -> None:
    async with _gateway(mock, pg_url, tmp_path) as gw:
        await _on_free(gw)
        raw = orjson.dumps(stripe_subscription_event("evt_1", int(time.time())))
        headers = {"stripe-signature": stripe_signature(raw, SECRET)}
        async with aiohttp.ClientSession() as http:
            with database_down(pg_url):
                async with http.post(gw.base_url + PATH, data=raw, headers=headers) as r:
                    assert (r.status, r.headers["retry-after"]) == (503, "30")
                    error = (await r.json())["error"]
                    assert error["type"] == "service_unavailable"
            status, body = await _post(gw, raw)  # Stripe's retry, once the database is back
        assert (status, body["outcome"]) == (200, "applied"), body
