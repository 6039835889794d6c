"""GET /metrics on a live gateway: the admin token unless [metrics] public, 404 when off,
the Prometheus content type, and one app's numbers only."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from costwarden.mock import MockServer
from tests.helpers import chat, live_gateway

TOKEN = "adm-scrape"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def _requests_total(text: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "costwarden_requests_total"
    )


def _assert_error(r: httpx.Response, status: int, kind: str) -> None:
    """The admin API's error shape: {"error": {"type", "message"}}, JSON."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["type"] == kind and isinstance(error["message"], str) and error["message"]
    assert TOKEN not in r.text


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {TOKEN}"}],
    ids=["none", "wrong", "basic"],
)
async def test_metrics_needs_the_admin_token(
    mock: MockServer, tmp_path: Path, headers: dict[str, str]
) -> None:
    async with live_gateway(mock, f"sqlite:///{tmp_path}/cw.db", tmp_path, admin_token=TOKEN) as gw:
        assert (await chat(gw))[0] == 200
        async with httpx.AsyncClient(base_url=gw.base_url) as client:
            r = await client.get("/metrics", headers=headers)
            _assert_error(r, 401, "authentication_error")
            # The same answer as the admin API's.
            admin = await client.get("/admin/keys", headers=headers)
            assert (admin.status_code, admin.json()) == (r.status_code, r.json())
            r = await client.get("/metrics", headers=AUTH)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == CONTENT_TYPE_LATEST
            assert _requests_total(r.text) == 1
            r = await client.post("/metrics", headers=AUTH)
            assert r.status_code == 405 and "GET" in r.headers["allow"]


async def test_without_an_admin_token_metrics_are_off_unless_public(
    mock: MockServer, tmp_path: Path
) -> None:
    async with live_gateway(mock, f"sqlite:///{tmp_path}/a.db", tmp_path) as gw:
        async with httpx.AsyncClient(base_url=gw.base_url) as client:
            for headers in ({}, AUTH):
                _assert_error(await client.get("/metrics", headers=headers), 403, "admin_disabled")
    public = "[metrics]\npublic = true\n"
    async with live_gateway(mock, f"sqlite:///{tmp_path}/b.db", tmp_path, extra_toml=public) as gw:
        assert (await chat(gw))[0] == 200
        async with httpx.AsyncClient(base_url=gw.base_url) as client:
            r = await client.get("/metrics")
            assert r.status_code == 200 and _requests_total(r.text) == 1
            assert r.headers["content-type"] == CONTENT_TYPE_LATEST


async def test_public_metrics_with_an_admin_token_set(mock: MockServer, tmp_path: Path) -> None:
    async with live_gateway(
        mock,
        f"sqlite:///{tmp_path}/cw.db",
        tmp_path,
        admin_token=TOKEN,
        env={"COSTWARDEN_METRICS_PUBLIC": "true"},
    ) as gw:
        async with httpx.AsyncClient(base_url=gw.base_url) as client:
            assert (await client.get("/metrics")).status_code == 200
            # ...and the admin API still wants its token.
            _assert_error(await client.get("/admin/keys"), 401, "authentication_error")


async def test_disabled_metrics_are_404_and_count_nothing(mock: MockServer, tmp_path: Path) -> None:
    off = "[metrics]\nenabled = false\n"
    async with live_gateway(
        mock, f"sqlite:///{tmp_path}/cw.db", tmp_path, admin_token=TOKEN, extra_toml=off
    ) as gw:
        assert gw.app.metrics is None
        assert (await chat(gw))[0] == 200
        async with httpx.AsyncClient(base_url=gw.base_url) as client:
            _assert_error(await client.get("/metrics", headers=AUTH), 404, "not_found")


async def test_two_gateways_in_one_process_count_their_own(
    mock: MockServer, tmp_path: Path
) -> None:
    async with (
        live_gateway(mock, f"sqlite:///{tmp_path}/a.db", tmp_path, admin_token=TOKEN) as a,
        live_gateway(mock, f"sqlite:///{tmp_path}/b.db", tmp_path, admin_token=TOKEN) as b,
    ):
        for _ in range(3):
            assert (await chat(a))[0] == 200
        assert (await chat(b))[0] == 200
        async with httpx.AsyncClient() as client:
            ra = await client.get(a.base_url + "/metrics", headers=AUTH)
            rb = await client.get(b.base_url + "/metrics", headers=AUTH)
        assert (_requests_total(ra.text), _requests_total(rb.text)) == (3, 1)
