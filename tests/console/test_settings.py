"""The settings page: the emergency stop (confirmed through its dialog's form, refused
without the confirmation; after it, gateway requests through the openai SDK get 503 with
the message typed in, and the overview says disabled; enabled again, they pass), the feature
toggles per org and platform-wide (live at once, audited, published), and every refusal
(no CSRF, a viewer, an org_admin reaching past its org) leaving the switches unchanged."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import openai
import pytest

from costwarden.console.settings import (
    one_line,
    org_rows,
    parse_enabled,
    platform_ai_off,
    scope_rows,
)
from costwarden.core.errors import InvalidInput
from costwarden.storage import repo
from costwarden.storage.audit import audit_entries
from costwarden.storage.switches import FEATURES, SwitchRecord, list_switches
from tests.console.conftest import Orgs, Signed, sign_in
from tests.helpers import LiveGateway

MESSAGE = "Paused by the platform team: incident 4711"
CHAT = [{"role": "user", "content": "hi"}]


async def _switches(gw: LiveGateway) -> list[tuple[str | None, str, bool, str | None]]:
    records = await asyncio.to_thread(list_switches, gw.app.engine)
    return [(r.org_name, r.feature, r.enabled, r.message) for r in records]


async def _call(gw: LiveGateway, key: str) -> int:
    """A chat completion through the gateway with the openai SDK: its HTTP status."""
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=key, max_retries=0) as oai:
        try:
            await oai.chat.completions.create(model="gpt-4o-mini", messages=CHAT)  # type: ignore[arg-type]
        except openai.APIStatusError as exc:
            return exc.status_code
    return 200


def _record(
    org: str | None, feature: str, enabled: bool, message: str | None = None
) -> SwitchRecord:
    at = datetime(2027, 1, 1, tzinfo=UTC)
    return SwitchRecord(
        id=f"{org}:{feature}", org_id=None if org is None else f"id-{org}", org_name=org,
        feature=feature, enabled=enabled, message=message, updated_by="t", updated_at=at,
        version=1,
    )  # fmt: skip


# --------------------------------------------------------------------------- pure


def test_rows_fill_in_every_feature_of_a_scope() -> None:
    records = [
        _record(None, "streaming", False, "no streams"),
        _record("acme", "ai", False),
        _record("globex", "embeddings", True),
        _record("acme", "embeddings", False),
    ]
    platform = scope_rows(records, None, None)
    assert [(r.feature, r.enabled, r.message) for r in platform] == [
        (f, f != "streaming", "no streams" if f == "streaming" else None) for f in FEATURES
    ]
    acme = scope_rows(records, "id-acme", "acme")
    assert [r.feature for r in acme if not r.enabled] == ["ai", "embeddings"]
    assert {r.org for r in acme} == {"acme"} and acme[1].updated_at is None  # never set
    # every org switch ever set: the ones off first
    assert [(r.org, r.feature, r.enabled) for r in org_rows(records)] == [
        ("acme", "ai", False),
        ("acme", "embeddings", False),
        ("globex", "embeddings", True),
    ]
    assert platform_ai_off(records) is None
    off = _record(None, "ai", False, "stop")
    assert platform_ai_off([*records, off]) is off
    assert platform_ai_off([_record("acme", "ai", False)]) is None


@pytest.mark.parametrize(
    ("raw", "line"),
    [(None, None), ("", None), ("  \n ", None), ("a\r\nb  c\t", "a b c"), ("ok", "ok")],
)
def test_one_line(raw: str | None, line: str | None) -> None:
    assert one_line(raw) == line


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("false", False), (" TRUE ", True)])
def test_parse_enabled(raw: str, value: bool) -> None:
    assert parse_enabled(raw) is value


@pytest.mark.parametrize("raw", [None, "", "on", "1", "yes"])
def test_parse_enabled_refused(raw: str | None) -> None:
    with pytest.raises(InvalidInput):
        parse_enabled(raw)


# --------------------------------------------------------------------------- emergency


async def test_the_emergency_stop_stops_every_call_and_enables_again(
    gw: LiveGateway, orgs: Orgs, admin: Signed
) -> None:
    assert await _call(gw, gw.key) == 200
    page = await admin.client.get("/dashboard/settings")
    assert page.status_code == 200, page.text
    html = page.text
    button = re.search(r"<button[^>]*data-testid=\"emergency-disable\"[^>]*>", html)
    assert button is not None and 'data-opens="emergency-dialog"' in button.group(0)
    dialog = re.search(r'<dialog id="emergency-dialog".*?</dialog>', html, re.S)
    assert dialog is not None
    form = dialog.group(0)
    assert 'action="/dashboard/settings/emergency"' in form
    assert f'name="_csrf" value="{admin.csrf}"' in form
    assert 'type="hidden" name="confirm" value="disable-all"' in form
    assert '<label for="emergency-message">' in form and 'id="emergency-message"' in form
    assert 'data-testid="ai-state">enabled<' in html

    changes = gw.app.events.subscribe(kinds=frozenset({"switch_changed"}))
    r = await admin.post(
        "/dashboard/settings/emergency",
        {"enabled": "false", "confirm": "disable-all", "message": MESSAGE.replace(": ", ":\n")},
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard/settings?done=emergency-off"
    assert await _switches(gw) == [(None, "ai", False, MESSAGE)]
    # live at once on this gateway, for every org, with the message typed in
    for key in (gw.key, orgs.globex_key):
        async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=key, max_retries=0) as oai:
            with pytest.raises(openai.APIStatusError) as refused:
                await oai.chat.completions.create(model="gpt-4o-mini", messages=CHAT)  # type: ignore[arg-type]
        assert refused.value.status_code == 503
        assert MESSAGE in str(refused.value)
    overview = await admin.client.get("/dashboard/")
    assert 'data-testid="service-status">disabled<' in overview.text and MESSAGE in overview.text
    page = await admin.client.get(r.headers["location"])
    assert 'data-testid="ai-state">disabled<' in page.text
    assert f'data-testid="ai-message">{MESSAGE}<' in page.text
    assert 'data-testid="emergency-enable"' in page.text
    assert 'data-testid="emergency-disable"' not in page.text
    assert "switched off platform-wide" in page.text

    r = await admin.post("/dashboard/settings/emergency", {"enabled": "true"})
    assert r.status_code == 303
    assert await _switches(gw) == [(None, "ai", True, None)]
    assert await _call(gw, gw.key) == 200
    overview = await admin.client.get("/dashboard/")
    assert 'data-testid="service-status">ok<' in overview.text

    seen = []
    while (event := await changes.get(timeout=3)) is not None:
        seen.append((event.data["feature"], event.data["enabled"]))
        if len(seen) == 2:
            break
    changes.close()
    assert seen == [("ai", False), ("ai", True)]
    trail = await asyncio.to_thread(audit_entries, gw.app.engine, action="switch.set")
    assert [(e.actor, e.target, e.new_value) for e in reversed(trail)] == [
        ("dashboard:admin-token", "platform:ai", {"enabled": False, "message": MESSAGE}),
        ("dashboard:admin-token", "platform:ai", {"enabled": True, "message": None}),
    ]


async def test_the_emergency_stop_needs_its_confirmation(
    gw: LiveGateway, orgs: Orgs, admin: Signed
) -> None:
    for fields in (
        {"enabled": "false", "message": MESSAGE},
        {"enabled": "false", "confirm": "yes"},
        {"enabled": "maybe", "confirm": "disable-all"},
    ):
        r = await admin.post("/dashboard/settings/emergency", fields)
        assert r.status_code == 400, r.text
    # nor through the toggles' route
    r = await admin.post("/dashboard/settings/switch", {"org": "", "feature": "ai",
                                                         "enabled": "false"})  # fmt: skip
    assert r.status_code == 400 and "disable-all" in r.text
    # no CSRF token
    r = await admin.client.post(
        "/dashboard/settings/emergency", data={"enabled": "false", "confirm": "disable-all"}
    )
    assert r.status_code == 403
    for credential in (orgs.acme_admin, orgs.acme_viewer, orgs.platform_viewer):
        signed = await sign_in(gw.base_url, credential)
        try:
            page = await signed.client.get("/dashboard/settings")
            assert page.status_code == 200
            assert 'data-testid="emergency-disable"' not in page.text
            assert "emergency-dialog" not in page.text
            r = await signed.post(
                "/dashboard/settings/emergency", {"enabled": "false", "confirm": "disable-all"}
            )
            assert r.status_code == 403, r.text
        finally:
            await signed.client.aclose()
    assert await _switches(gw) == []
    assert await asyncio.to_thread(audit_entries, gw.app.engine, action="switch.set") == []
    assert await _call(gw, gw.key) == 200


# --------------------------------------------------------------------------- toggles


async def test_a_platform_admin_switches_one_org_and_platform_features(
    gw: LiveGateway, orgs: Orgs, admin: Signed
) -> None:
    page = await admin.client.get("/dashboard/settings")
    html = page.text
    assert 'data-testid="platform-switches"' in html and 'data-testid="org-switches"' in html
    assert '<label for="switch-org">' in html and '<option value="globex">' in html
    r = await admin.post(
        "/dashboard/settings/switch",
        {"org": "globex", "feature": "ai", "enabled": "false", "message": "globex paused"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/settings?done=off"
    assert await _switches(gw) == [("globex", "ai", False, "globex paused")]
    assert await _call(gw, orgs.globex_key) == 503
    assert await _call(gw, gw.key) == 200  # acme is not globex
    page = await admin.client.get("/dashboard/settings")
    row = re.search(r'<tr data-testid="switch-row" data-feature="ai" data-org="globex">(.*?)</tr>',
                    page.text, re.S)  # fmt: skip
    assert row is not None and "globex paused" in row.group(1)
    assert 'data-testid="switch-state">off<' in row.group(1)
    assert 'aria-checked="false"' in row.group(1)

    # the row's switch turns it on again
    r = await admin.post(
        "/dashboard/settings/switch", {"org": "globex", "feature": "ai", "enabled": "true"}
    )
    assert r.status_code == 303
    assert await _call(gw, orgs.globex_key) == 200
    # a platform-wide feature other than ai needs no confirmation
    r = await admin.post(
        "/dashboard/settings/switch", {"org": "", "feature": "streaming", "enabled": "false"}
    )
    assert r.status_code == 303
    assert (None, "streaming", False, None) in await _switches(gw)
    for bad in ({"org": "nope", "feature": "ai", "enabled": "false"},
                {"org": "globex", "feature": "everything", "enabled": "false"},
                {"org": "globex", "feature": "ai", "enabled": "off"},
                {"org": "globex", "feature": "ai", "enabled": "false", "message": "x" * 501}):
        r = await admin.post("/dashboard/settings/switch", bad)
        assert r.status_code in (400, 404), (bad, r.status_code)
    assert len(await _switches(gw)) == 2


async def test_an_org_admin_switches_its_own_org_only(
    gw: LiveGateway, orgs: Orgs, admin: Signed
) -> None:
    r = await admin.post(
        "/dashboard/settings/switch",
        {"org": "globex", "feature": "embeddings", "enabled": "false", "message": "globex-msg"},
    )
    assert r.status_code == 303
    before = await _switches(gw)
    orgs_now = await asyncio.to_thread(repo.list_orgs, gw.app.engine)
    globex_id = next(o.id for o in orgs_now if o.name == "globex")
    signed = await sign_in(gw.base_url, orgs.acme_admin)
    try:
        page = await signed.client.get("/dashboard/settings")
        html = page.text
        assert page.status_code == 200
        assert 'data-testid="own-switches"' in html
        assert html.count('data-testid="switch-row"') == len(FEATURES)
        assert 'data-testid="platform-switches"' not in html
        assert 'data-testid="org-switches"' not in html
        for other in ("globex", globex_id, "globex-msg"):
            assert other not in html
        assert 'data-testid="toggle"' in html

        r = await signed.post(
            "/dashboard/settings/switch",
            {"org": "acme", "feature": "chat.completions", "enabled": "false"},
        )
        assert r.status_code == 303
        assert await _call(gw, gw.key) == 503
        trail = await asyncio.to_thread(audit_entries, gw.app.engine, action="switch.set")
        assert trail[0].actor.startswith("dashboard:admin-key:")
        r = await signed.post(
            "/dashboard/settings/switch",
            {"org": "acme", "feature": "chat.completions", "enabled": "true"},
        )
        assert r.status_code == 303
        assert await _call(gw, gw.key) == 200
        mine = await _switches(gw)

        for fields in (
            {"org": "globex", "feature": "embeddings", "enabled": "true"},
            {"org": "globex", "feature": "ai", "enabled": "false"},
            {"org": "", "feature": "streaming", "enabled": "false"},
            {"org": "", "feature": "ai", "enabled": "false", "confirm": "disable-all"},
        ):
            r = await signed.post("/dashboard/settings/switch", fields)
            assert r.status_code == 403, (fields, r.text)
            assert "globex-msg" not in r.text and globex_id not in r.text
        assert await _switches(gw) == mine
        assert [s for s in mine if s[0] == "globex"] == [s for s in before if s[0] == "globex"]
    finally:
        await signed.client.aclose()


async def test_viewers_see_switches_but_change_none(
    gw: LiveGateway, orgs: Orgs, admin: Signed
) -> None:
    r = await admin.post(
        "/dashboard/settings/switch", {"org": "acme", "feature": "streaming", "enabled": "false"}
    )
    assert r.status_code == 303
    before = await _switches(gw)
    r = await admin.client.post(  # no CSRF token
        "/dashboard/settings/switch", data={"org": "acme", "feature": "ai", "enabled": "false"}
    )
    assert r.status_code == 403
    for credential, tables in (
        (orgs.acme_viewer, ("own-switches",)),
        (orgs.platform_viewer, ("platform-switches", "org-switches")),
    ):
        viewer = await sign_in(gw.base_url, credential)
        try:
            page = await viewer.client.get("/dashboard/settings")
            assert page.status_code == 200
            for table in tables:
                assert f'data-testid="{table}"' in page.text
            assert re.search(r'data-feature="streaming" data-org="acme">.*?>off<', page.text,
                             re.S)  # fmt: skip
            assert 'data-testid="toggle"' not in page.text
            assert 'data-testid="set-switch"' not in page.text
            for fields in ({"org": "acme", "feature": "streaming", "enabled": "true"},
                           {"org": "acme", "feature": "ai", "enabled": "false"}):  # fmt: skip
                r = await viewer.post("/dashboard/settings/switch", fields)
                assert r.status_code == 403
        finally:
            await viewer.client.aclose()
    assert await _switches(gw) == before
