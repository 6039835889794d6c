"""Honeypot keys through a live gateway (SQLite and PostgreSQL), with the official OpenAI and
Anthropic SDKs as clients: a honeypot's answer is the unknown key's, byte for byte (status,
body, every header but the per-request ``x-request-id``, made the same way), in both wire
formats, streamed or not; its use raises a critical alert within a second (the admin API and
a real webhook receiver) carrying the source address, user agent, model and key id, never the
key; nothing reaches the upstream and nothing is written to the ledger; with
``switch_off_org`` the org's real key then gets the kill switch's 503, audited as
``honeypot``. The body is never read: the model comes from what had arrived with the head,
and a withheld body, or ``Expect: 100-continue``, gets the unknown key's answer at once too."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import inspect
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
import sqlalchemy as sa
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from costwarden.alerts.rules import HONEYPOT_RULE, honeypot_alert, honeypot_text
from costwarden.core.event_kinds import KINDS, HoneypotTriggered
from costwarden.gateway.honeypot import HONEYPOT_ACTOR, arrived_body
from costwarden.mock import MockServer
from costwarden.storage.schema import event_log
from costwarden.storage.usage import ledger_rows
from tests.helpers import (
    LiveGateway,
    WebhookReceiver,
    live_gateway,
    mock_stats,
    webhook_receiver,
)

TOKEN = "adm-honeypot"
AUTH = {"authorization": f"Bearer {TOKEN}"}
SECRET = "whsec_" + base64.b64encode(b"honeypot-hook-key-0123456789abcd").decode()
UA = "attacker-tool/0.1 (found it on a wiki)"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "what can I do"}]}
MESSAGES = {
    "model": "claude-haiku-4-5",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "what can I do"}],
}
REQUEST_ID = re.compile(r"^req_[0-9a-f]{24}$")


def _config(hook: WebhookReceiver) -> str:
    return (
        "[alerts]\ndelivery_poll_seconds = 0.1\nretry_base_seconds = 0.2\n\n"
        f'[[alerts.channels]]\nname = "ops"\ntype = "webhook"\nurl = "{hook.url}"\n'
        'secret_env = "CW_TEST_HOOK_SECRET"\n'
    )


@pytest.fixture
async def hook() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver(SECRET) as receiver:
        yield receiver


@pytest.fixture
async def gw(
    mock: MockServer, database_url: str, tmp_path: Path, hook: WebhookReceiver
) -> AsyncIterator[LiveGateway]:
    async with live_gateway(
        mock, database_url, tmp_path, admin_token=TOKEN, extra_toml=_config(hook),
        env={"CW_TEST_HOOK_SECRET": SECRET},
    ) as gateway:  # fmt: skip
        yield gateway


@pytest.fixture
async def client(gw: LiveGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as c:
        yield c


async def _honeypot(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"org": "acme", "name": "planted in the wiki", "honeypot": True, **fields}
    r = await client.post("/admin/keys", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


def _unknown_key() -> str:
    """A key of a real key's form (storage.repo.create_key) that no one has."""
    return "cw-" + secrets.token_urlsafe(32)


async def _post(
    client: httpx.AsyncClient, path: str, key: str, body: dict[str, Any]
) -> httpx.Response:
    headers = {"content-type": "application/json", "user-agent": UA}
    if path == "/v1/messages":
        headers |= {"x-api-key": key, "anthropic-version": "2023-06-01"}
    else:
        headers["authorization"] = f"Bearer {key}"
    return await client.post(path, content=orjson.dumps(body), headers=headers)


def _differing(a: httpx.Response, b: httpx.Response) -> set[bytes]:
    """The header names whose values differ between two answers; asserts the rest agree:
    status, body bytes, header names in order."""
    assert a.status_code == b.status_code
    assert a.content == b.content
    assert [k for k, _ in a.headers.raw] == [k for k, _ in b.headers.raw]
    return {k for (k, va), (_, vb) in zip(a.headers.raw, b.headers.raw, strict=True) if va != vb}


async def _alert_of(client: httpx.AsyncClient, key_id: str, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        r = await client.get("/admin/alerts", headers=AUTH)
        assert r.status_code == 200, r.text
        found = [
            a for a in r.json()["data"] if a["rule"] == HONEYPOT_RULE and a["scope_id"] == key_id
        ]
        if found:
            assert len(found) == 1, found
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no honeypot alert of {key_id} within {within} s")
        await asyncio.sleep(0.01)


async def _until(predicate: Any, timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_a_honeypot_is_answered_as_an_unknown_key_and_alerts_within_a_second(
    gw: LiveGateway,
    client: httpx.AsyncClient,
    hook: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    made = await _honeypot(client)
    trap, key_id = made["key"], made["id"]
    assert made["honeypot"] is True and made["honeypot_action"] == "alert"
    calls = (await mock_stats(gw.mock))["requests"]
    await gw.app.ledger.flush()
    rows = len(await asyncio.to_thread(ledger_rows, gw.app.engine, None, 100_000))

    # The official SDK with the honeypot, then an unknown key: the same error, byte for byte.
    sdk = {"base_url": gw.openai_url, "max_retries": 0, "default_headers": {"user-agent": UA}}
    answers: list[openai.APIStatusError] = []
    answered = started = time.monotonic()
    for key in (trap, _unknown_key()):
        async with openai.AsyncOpenAI(api_key=key, **sdk) as oa:
            with pytest.raises(openai.AuthenticationError) as caught:
                await oa.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                )
            answers.append(caught.value)
        if key == trap:
            answered = time.monotonic()
    honeypot_sdk, unknown_sdk = answers
    assert honeypot_sdk.status_code == unknown_sdk.status_code == 401
    assert honeypot_sdk.body == unknown_sdk.body
    assert honeypot_sdk.response.content == unknown_sdk.response.content
    assert _differing(honeypot_sdk.response, unknown_sdk.response) == {b"x-request-id"}

    # The critical alert, within a second of the answer, from the admin API.
    alert = await _alert_of(client, key_id, within=1.0)
    latency = time.monotonic() - answered
    print(f"honeypot alert stored {latency * 1000:.0f} ms after the answer "
          f"({(answered - started) * 1000:.0f} ms for the request)")  # fmt: skip
    assert latency < 1.0
    assert (alert["kind"], alert["severity"], alert["state"]) == ("security", "critical", "firing")
    assert alert["org_id"] == gw.app.keys.lookup(gw.key).org_id
    detail = alert["detail"]
    assert detail["source"] == "127.0.0.1" and isinstance(detail["source_port"], int)
    assert detail["user_agent"] == UA
    assert detail["model"] == "gpt-4o-mini"
    assert detail["endpoint"] == "chat.completions"
    assert detail["request_id"] == honeypot_sdk.response.headers["x-request-id"]
    assert (detail["key_id"], detail["key_prefix"]) == (key_id, made["prefix"])
    assert detail["org_name"] == "acme" and detail["action"] == "alert"
    assert "127.0.0.1" in alert["title"] and key_id in alert["title"]

    # Both wire formats, streamed and not: the honeypot's answer is the unknown key's.
    for path, body in (("/v1/chat/completions", CHAT), ("/v1/messages", MESSAGES)):
        for stream in (False, True):
            payload = {**body, "stream": stream}
            first = await _post(client, path, _unknown_key(), payload)
            honeypot = await _post(client, path, trap, payload)
            second = await _post(client, path, _unknown_key(), payload)
            assert honeypot.status_code == 401, honeypot.text
            # The one header that differs is the request id, and it differs between two
            # unknown keys' answers too: made per request, the same way.
            assert _differing(first, second) == {b"x-request-id"}
            assert _differing(first, honeypot) == {b"x-request-id"}
            ids = [r.headers["x-request-id"] for r in (first, honeypot, second)]
            assert all(REQUEST_ID.match(i) for i in ids) and len(set(ids)) == 3
            assert [k for k, _ in honeypot.headers.raw] == [
                b"content-type", b"x-request-id", b"content-length"
            ]  # fmt: skip

    # The Anthropic SDK, streamed and not.
    for stream in (False, True):
        errors = []
        for key in (trap, _unknown_key()):
            async with anthropic.AsyncAnthropic(
                base_url=gw.base_url, api_key=key, max_retries=0,
                default_headers={"user-agent": UA},
            ) as ac:  # fmt: skip
                with pytest.raises(anthropic.AuthenticationError) as caught_a:
                    await ac.messages.create(
                        model="claude-haiku-4-5", max_tokens=50, stream=stream,
                        messages=[{"role": "user", "content": "hi"}],
                    )  # fmt: skip
                errors.append(caught_a.value)
        assert _differing(errors[0].response, errors[1].response) == {b"x-request-id"}

    # /v1/models answers a honeypot as an unknown key as well.
    listing = []
    for key in (trap, _unknown_key()):
        listing.append(await client.get("/v1/models", headers={"authorization": f"Bearer {key}"}))
    assert listing[0].status_code == 401
    assert _differing(listing[0], listing[1]) == set()

    # One alert (per key, source and hour), delivered to the webhook, signed; no key in it.
    await _until(lambda: _delivered(hook, key_id))
    (message,) = [m for m in hook.verified if m["data"]["scope_id"] == key_id]
    data = message["data"]
    assert (data["kind"], data["severity"], data["rule"]) == ("security", "critical", HONEYPOT_RULE)
    assert UA in data["text"] and "gpt-4o-mini" in data["text"] and "127.0.0.1" in data["title"]
    alerts = (await client.get("/admin/alerts", headers=AUTH)).json()["data"]
    assert len([a for a in alerts if a["scope_id"] == key_id]) == 1

    # Nothing upstream, no ledger row, and the key itself nowhere.
    assert (await mock_stats(gw.mock))["requests"] == calls
    await gw.app.ledger.flush()
    after = await asyncio.to_thread(ledger_rows, gw.app.engine, None, 100_000)
    assert len(after) == rows and not [r for r in after if r.key_id == key_id]
    assert gw.app.honeypot.caught_count == 1 + 4 + 2 + 1  # SDK, raw, Anthropic SDK, models
    logged = await asyncio.to_thread(_event_log_text, gw)
    assert "honeypot_triggered" in logged and key_id in logged
    listed = (await client.get("/admin/keys", headers=AUTH)).text
    for where in (logged, str(alerts), str(hook.verified), listed, caplog.text):
        assert trap not in where
        assert trap[10:] not in where  # nor any part past the display prefix
    assert "honeypot key" in caplog.text and key_id in caplog.text


async def _delivered(hook: WebhookReceiver, key_id: str) -> bool:
    return any(m["data"]["scope_id"] == key_id for m in hook.verified)


def _event_log_text(gw: LiveGateway) -> str:
    with gw.app.engine.connect() as conn:
        return "\n".join(row.events for row in conn.execute(sa.select(event_log)))


async def test_switch_off_org_turns_the_orgs_kill_switch_on_once(
    gw: LiveGateway, client: httpx.AsyncClient
) -> None:
    made = await _honeypot(client, honeypot_action="switch_off_org")
    assert made["honeypot_action"] == "switch_off_org"
    real = openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0)
    trapped = openai.AsyncOpenAI(base_url=gw.openai_url, api_key=made["key"], max_retries=0)
    async with real, trapped:
        ok = await real.chat.completions.with_raw_response.create(**CHAT)
        assert ok.status_code == 200

        async def hit() -> None:
            with pytest.raises(openai.AuthenticationError):
                await trapped.chat.completions.create(**CHAT)

        await asyncio.gather(*(hit() for _ in range(5)))  # several at once: one switch write

        async def refused() -> bool:
            try:
                await real.chat.completions.create(**CHAT)
            except openai.APIStatusError as exc:
                assert exc.status_code == 503, exc
                assert exc.body["code"] == "service_disabled"
                return True
            return False

        took = await _until(refused, timeout=5)
        print(f"the org's real key refused {took * 1000:.0f} ms after the honeypot's use")
        assert took < 1.0
        calls = (await mock_stats(gw.mock))["requests"]
        assert await refused()  # and stays refused, nothing sent upstream
        assert (await mock_stats(gw.mock))["requests"] == calls

    org_id = gw.app.keys.lookup(gw.key).org_id
    audit = (await client.get("/admin/audit", params={"action": "switch.set"}, headers=AUTH)).json()
    (entry,) = audit["data"]  # once, however many uses
    assert entry["actor"] == HONEYPOT_ACTOR == "honeypot"
    assert entry["target"] == f"org:{org_id}:ai"
    assert entry["new_value"] == {"enabled": False, "message": None}
    switches = (await client.get("/admin/switches", headers=AUTH)).json()["switches"]
    assert [(s["org"], s["feature"], s["enabled"], s["updated_by"]) for s in switches] == [
        ("acme", "ai", False, "honeypot")
    ]
    # Both critical alerts: the honeypot's and the kill switch's ("... by honeypot").
    alert = await _alert_of(client, made["id"], within=1.0)
    assert alert["detail"]["action"] == "switch_off_org"

    async def switch_alert() -> bool:
        alerts = (await client.get("/admin/alerts", headers=AUTH)).json()["data"]
        return any(
            a["rule"] == "service-kill-switch" and a["title"].endswith("by honeypot")
            for a in alerts
        )

    await _until(switch_alert, timeout=2)


async def test_a_withheld_body_or_expect_continue_is_answered_at_once(
    gw: LiveGateway, client: httpx.AsyncClient
) -> None:
    """What an unknown key gets without its body being read, a honeypot gets too: the 401 at
    once (not after the body, not a 100 Continue first); the alert then has no model."""
    made = await _honeypot(client)
    subscription = gw.app.events.subscribe(kinds={HoneypotTriggered.kind})
    port = int(gw.base_url.rsplit(":", 1)[1])
    for extra in ("", "expect: 100-continue\r\n"):
        heads = []
        for key in (_unknown_key(), made["key"]):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nuser-agent: {UA}\r\n"
                f"authorization: Bearer {key}\r\ncontent-type: application/json\r\n"
                f"content-length: 80\r\n{extra}\r\n".encode()
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            body = await asyncio.wait_for(reader.read(1000), 2)
            writer.close()
            heads.append((re.sub(rb"req_[0-9a-f]{24}", b"req_", head), body))
        assert heads[0] == heads[1]
        assert heads[0][0].startswith(b"HTTP/1.1 401 ")
        event = await subscription.get(timeout=2)
        assert event is not None and isinstance(event.payload, HoneypotTriggered)
        assert event.payload.model is None and event.payload.user_agent == UA
    subscription.close()


async def test_a_revoked_honeypot_is_disarmed_and_still_an_unknown_key(
    gw: LiveGateway, client: httpx.AsyncClient
) -> None:
    made = await _honeypot(client)
    r = await client.post(f"/admin/keys/{made['id']}/revoke", headers=AUTH)
    assert r.status_code == 200 and r.json()["honeypot"] is True
    revoked = await _post(client, "/v1/chat/completions", made["key"], CHAT)
    unknown = await _post(client, "/v1/chat/completions", _unknown_key(), CHAT)
    assert _differing(revoked, unknown) == {b"x-request-id"}  # not "revoked": no tell
    assert gw.app.honeypot.caught_count == 0
    await gw.app.ledger.flush()
    rows = await asyncio.to_thread(ledger_rows, gw.app.engine, None, 100_000)
    assert not [row for row in rows if row.key_id == made["id"]]


# ------------------------------------------------------------------ the body, never read


class _Cycle:
    """What uvicorn's request cycle has of a body: its buffer, and whether more is to come."""

    def __init__(self, body: bytes, more_body: bool) -> None:
        self.body = bytearray(body)
        self.more_body = more_body
        self.received = False

    async def receive(self) -> dict[str, Any]:
        self.received = True
        raise AssertionError("the body is never read through receive()")


def test_arrived_body_is_what_the_server_had_when_it_answered() -> None:
    whole = _Cycle(b'{"model": "m"}', more_body=False)
    assert arrived_body(whole.receive, 100) == b'{"model": "m"}'
    assert arrived_body(_Cycle(b'{"mo', more_body=True).receive, 100) is None  # not all there
    assert arrived_body(whole.receive, 5) is None  # over the limit
    assert not whole.received

    async def plain() -> dict[str, Any]:  # another server's receive: nothing to read off
        return {}

    assert arrived_body(plain, 100) is None
    assert arrived_body(None, 100) is None


async def test_uvicorn_keeps_the_body_where_the_trap_reads_it() -> None:
    """What arrived_body relies on in uvicorn (pinned by pyproject.toml): the bound receive's
    cycle collects the body in ``body`` and clears ``more_body`` at the message's end, and
    after the answer keeps no more of it."""
    for protocol in (HttpToolsProtocol, H11Protocol):
        source = inspect.getsource(protocol)
        assert "self.cycle.body += " in source
        assert "self.cycle.more_body = False" in source
    on_body = inspect.getsource(HttpToolsProtocol.on_body)
    assert "self.cycle.response_complete" in on_body.split("self.cycle.body +=")[0]
    cycle = RequestResponseCycle(
        scope={"type": "http", "method": "POST"}, transport=None, flow=FlowControl(None),
        logger=None, access_logger=None, access_log=False, default_headers=[],
        message_event=asyncio.Event(), expect_100_continue=False, keep_alive=True,
        on_response=lambda: None,
    )  # fmt: skip
    assert cycle.receive.__self__ is cycle
    assert cycle.body == bytearray() and cycle.more_body is True
    cycle.body += b'{"model": "m"}'
    cycle.more_body = False
    assert arrived_body(cycle.receive, 100) == b'{"model": "m"}'


# ------------------------------------------------------------------ the event and its alert


def test_the_event_round_trips_and_makes_one_alert_per_key_source_and_hour() -> None:
    event = HoneypotTriggered(
        org_id="org_1", key_id="key_1", key_prefix="cw-abcdefg", key_name="wiki",
        org_name="acme", request_id="req_1", endpoint="messages", source="203.0.113.9",
        source_port=4711, forwarded_for="198.51.100.1", user_agent=UA, model="claude",
        action="switch_off_org", at="2027-03-10T10:59:59+00:00",
    )  # fmt: skip
    stored = orjson.loads(orjson.dumps(event.stored()))
    assert KINDS[HoneypotTriggered.kind].from_data(stored) == event
    assert event.data()["key_id"] == "key_1" and "key" not in event.data()
    draft = honeypot_alert(event)
    assert (draft.kind, draft.severity, draft.rule) == ("security", "critical", HONEYPOT_RULE)
    assert (draft.org_id, draft.scope, draft.scope_id) == ("org_1", "key", "key_1")
    assert draft.detail["user_agent"] == UA and draft.detail["source_port"] == 4711
    same_hour = dataclasses.replace(event, at="2027-03-10T10:00:00+00:00", model=None)
    assert honeypot_alert(same_hour).dedupe_key == draft.dedupe_key
    for other in (
        dataclasses.replace(event, at="2027-03-10T11:00:00+00:00"),
        dataclasses.replace(event, source="203.0.113.10"),
        dataclasses.replace(event, key_id="key_2"),
    ):
        assert honeypot_alert(other).dedupe_key != draft.dedupe_key
    text = honeypot_text(draft.title, draft.detail)
    assert text.startswith(draft.title) and UA in text and "198.51.100.1" in text
    assert "claude" in text and "switch_off_org" in text
