"""The service health page: every deployment's breaker from real traffic (a success, then
upstream failures through the official openai SDK), the force reset (a platform_admin's
alone: audited, closed in the gateway), and every refusal leaving the breaker open."""

from __future__ import annotations

import asyncio
import re

import openai
import pytest

from costwarden.console.health import health_rows, percent
from costwarden.mock import MockServer
from costwarden.routing.breaker import CLOSED, OPEN
from costwarden.storage.audit import audit_entries
from tests.console.conftest import Orgs, Signed, sign_in
from tests.helpers import LiveGateway, configure_mock

MINI = "openai:gpt-4o-mini"
HAIKU = "anthropic:claude-haiku-4-5"


def _row(html: str, deployment: str) -> str:
    found = re.search(
        rf'<tr data-testid="health-row" data-deployment="{re.escape(deployment)}">(.*?)</tr>',
        html,
        re.S,
    )
    assert found is not None, f"no row for {deployment}"
    return found.group(1)


def _state(html: str, deployment: str) -> str:
    found = re.search(r'data-testid="breaker-state">([a-z_]+)<', _row(html, deployment))
    assert found is not None
    return found.group(1)


async def _trip_with_traffic(gw: LiveGateway, mock: MockServer) -> None:
    """One good request, then failing ones until gpt-4o-mini's breaker opens."""
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as oai:
        await oai.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        await configure_mock(mock, fault_status=500, fault_models=["gpt-4o-mini"])
        for _ in range(gw.app.breakers.policy.failure_threshold):
            with pytest.raises(openai.APIStatusError):
                await oai.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                )
        await configure_mock(mock, fault_status=None, fault_models=[])
    assert gw.app.breakers.state(MINI) == OPEN


async def _resets(gw: LiveGateway) -> list[object]:
    return list(await asyncio.to_thread(audit_entries, gw.app.engine, action="breaker.reset"))


# --------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("rate", "shown"),
    [(0.0, "0 %"), (5 / 6, "83.3 %"), (1.0, "100 %"), (0.5, "50 %"), (1.7, "100 %"), (-1, "0 %")],
)
def test_percent(rate: float, shown: str) -> None:
    assert percent(rate) == shown


def test_rows_put_the_breakers_not_closed_first() -> None:
    snaps = [
        {"deployment": "a", "state": "closed", "error_rate": 0.0},
        {"deployment": "c", "state": "half_open", "error_rate": 0.25, "reason": "probe"},
        {"deployment": "b", "state": "open", "error_rate": 1.0, "requests_in_window": 5},
    ]
    rows = health_rows(snaps)
    assert [(r.deployment, r.state, r.error_rate) for r in rows] == [
        ("b", "open", "100 %"),
        ("c", "half_open", "25 %"),
        ("a", "closed", "0 %"),
    ]
    assert rows[0].requests_in_window == 5 and rows[1].reason == "probe"


# --------------------------------------------------------------------------- the page


async def test_the_page_shows_each_breaker_from_real_traffic(
    gw: LiveGateway, mock: MockServer, admin: Signed
) -> None:
    await _trip_with_traffic(gw, mock)
    snap = gw.app.breakers.health_of(MINI)
    r = await admin.client.get("/dashboard/health")
    assert r.status_code == 200, r.text
    html = r.text
    assert 'data-testid="health-table"' in html
    assert '<th scope="col" class="num">Error rate</th>' in html
    for deployment in gw.app.breakers.deployments:
        assert f'data-deployment="{deployment}"' in html
    row = _row(html, MINI)
    assert _state(html, MINI) == OPEN and _state(html, HAIKU) == CLOSED
    # one success then five failures: 5 of 6 requests in the window failed
    assert snap["requests_in_window"] == 6 and snap["consecutive_failures"] == 5
    assert 'data-testid="error-rate">83.3 %<' in row
    assert "5 consecutive failures" in row
    assert snap["last_success_at"] is not None and snap["last_failure_at"] is not None
    assert snap["last_success_at"][:10] in row  # both times are shown
    assert 'data-testid="error-rate">0 %<' in _row(html, HAIKU)
    assert f"1 of {len(gw.app.breakers.deployments)} breakers not closed" in html
    assert html.count('data-testid="reset-breaker"') == len(gw.app.breakers.deployments)
    # the open breaker is listed first
    assert html.index(f'data-deployment="{MINI}"') < html.index(f'data-deployment="{HAIKU}"')
    # the live-reload fragment is the same table
    frag = await admin.client.get("/dashboard/health/table", headers={"hx-request": "true"})
    assert frag.status_code == 200 and "<html" not in frag.text
    assert _state(frag.text, MINI) == OPEN


async def test_force_reset_closes_the_breaker_and_is_audited(
    gw: LiveGateway, mock: MockServer, admin: Signed
) -> None:
    await _trip_with_traffic(gw, mock)
    changes = gw.app.events.subscribe(kinds=frozenset({"breaker_changed"}))
    r = await admin.post("/dashboard/health/reset", {"deployment": MINI})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/health?done=reset"
    assert gw.app.breakers.state(MINI) == CLOSED
    (entry,) = await _resets(gw)
    assert (entry.actor, entry.target) == ("dashboard:admin-token", MINI)  # type: ignore[attr-defined]
    seen = []
    while (event := await changes.get(timeout=3)) is not None:
        seen.append((event.data["deployment"], event.data["to"], event.data["reason"]))
        if event.data["to"] == CLOSED:
            break
    changes.close()
    assert seen[-1] == (MINI, CLOSED, "reset by dashboard:admin-token")
    page = await admin.client.get(r.headers["location"])
    assert _state(page.text, MINI) == CLOSED
    assert "The breaker was reset" in page.text and 'role="status"' in page.text
    # and requests go to it again
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as oai:
        done = await oai.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert done.choices


async def test_bad_resets_change_nothing(
    gw: LiveGateway, mock: MockServer, admin: Signed
) -> None:
    await _trip_with_traffic(gw, mock)
    # no CSRF token: 403
    r = await admin.client.post("/dashboard/health/reset", data={"deployment": MINI})
    assert r.status_code == 403
    # an unknown deployment: 404; none named: 400
    r = await admin.post("/dashboard/health/reset", {"deployment": "openai:nope"})
    assert r.status_code == 404 and "openai:nope" in r.text
    r = await admin.post("/dashboard/health/reset", {})
    assert r.status_code == 400
    assert gw.app.breakers.state(MINI) == OPEN
    assert await _resets(gw) == []


async def test_only_a_platform_admin_resets(
    gw: LiveGateway, mock: MockServer, orgs: Orgs
) -> None:
    await _trip_with_traffic(gw, mock)
    for credential in (orgs.acme_admin, orgs.acme_viewer, orgs.platform_viewer):
        signed = await sign_in(gw.base_url, credential)
        try:
            page = await signed.client.get("/dashboard/health")
            assert page.status_code == 200
            assert _state(page.text, MINI) == OPEN  # everyone sees the deployments
            assert 'data-testid="reset-breaker"' not in page.text
            assert "/dashboard/health/reset" not in page.text
            r = await signed.post("/dashboard/health/reset", {"deployment": MINI})
            assert r.status_code == 403, r.text
        finally:
            await signed.client.aclose()
    assert gw.app.breakers.state(MINI) == OPEN
    assert await _resets(gw) == []
