"""Sign-in with an identity provider's JWT (HS256 with a shared secret here; the JWKS path is
tested in tests/dashboard/test_jwt_auth.py): a good token signs in on the dashboard and on the
admin API with its role and org; a wrong signature, audience, issuer, an expired token or
``alg: none`` -> the sign-in page's 401 and the admin API's 401, nothing changed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from costwarden.mock import MockServer
from costwarden.storage import repo
from costwarden.storage import switches as switch_store
from tests.console.conftest import TOKEN
from tests.helpers import LiveGateway, live_gateway

SECRET = "an-identity-providers-shared-secret-of-32-bytes-or-more"
AUDIENCE = "costwarden"
ISSUER = "https://idp.example.test/"
JWT_TOML = f"""
[dashboard]
jwt_algorithms = "HS256"
jwt_audience = "{AUDIENCE}"
jwt_issuer = "{ISSUER}"
"""


@pytest.fixture
async def gw(mock: MockServer, database_url: str, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with live_gateway(
        mock, database_url, tmp_path, admin_token=TOKEN, extra_toml=JWT_TOML,
        env={"COSTWARDEN_DASHBOARD_JWT_SECRET": SECRET},
    ) as gateway:  # fmt: skip
        yield gateway


def _token(key: str = SECRET, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "ana@example.test", "iat": now,
            "exp": now + 600, "costwarden_role": "platform_admin", **claims}  # fmt: skip
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="HS256")


async def test_a_good_token_signs_in_with_its_role_and_org(gw: LiveGateway) -> None:
    org = repo.list_orgs(gw.app.engine)[0]
    async with httpx.AsyncClient(base_url=gw.base_url) as c:
        r = await c.post("/dashboard/sign-in", data={"credential": _token()})
        assert r.status_code == 303
        page = await c.get("/dashboard/")
        assert page.status_code == 200 and "platform_admin" in page.text
    scoped = _token(costwarden_role="org_admin", org=org.id)
    async with httpx.AsyncClient(base_url=gw.base_url) as c:
        assert (await c.post("/dashboard/sign-in", data={"credential": scoped})).status_code == 303
        page = await c.get("/dashboard/")
        assert "org_admin" in page.text and org.name in page.text
        # the session lasts no longer than the token: its cookie's Max-Age is under 600 s
    api = httpx.AsyncClient(base_url=gw.base_url, headers={"authorization": f"Bearer {scoped}"})
    async with api:
        r = await api.get("/admin/keys")
        assert r.status_code == 200
        assert {k["org"] for k in r.json()["data"]} == {org.name}


async def test_a_jwt_session_ends_with_the_token(gw: LiveGateway) -> None:
    short = _token(exp=int(time.time()) + 120)
    async with httpx.AsyncClient(base_url=gw.base_url) as c:
        r = await c.post("/dashboard/sign-in", data={"credential": short})
        max_age = int(r.headers["set-cookie"].split("Max-Age=")[1].split(";")[0])
        assert 100 <= max_age <= 121


@pytest.mark.parametrize(
    "bad",
    [
        "wrong signature",
        "wrong audience",
        "wrong issuer",
        "expired",
        "alg none",
        "no role",
        "org_admin without org",
        "unknown org",
    ],
)
async def test_a_bad_token_signs_in_no_one_and_changes_nothing(
    gw: LiveGateway, bad: str
) -> None:
    now = int(time.time())
    token = {
        "wrong signature": lambda: _token(key=SECRET + "x"),
        "wrong audience": lambda: _token(aud="someone-else"),
        "wrong issuer": lambda: _token(iss="https://evil.example.test/"),
        "expired": lambda: _token(exp=now - 120, iat=now - 720),
        "alg none": lambda: jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "costwarden_role": "viewer"},
            None, algorithm="none",
        ),  # fmt: skip
        "no role": lambda: _token(costwarden_role=None),
        "org_admin without org": lambda: _token(costwarden_role="org_admin"),
        "unknown org": lambda: _token(costwarden_role="org_admin", org="org_doesnotexist"),
    }[bad]()
    async with httpx.AsyncClient(base_url=gw.base_url) as c:
        r = await c.post("/dashboard/sign-in", data={"credential": token})
        assert r.status_code == 401 and "set-cookie" not in r.headers
        assert token not in r.text
        api = await c.put(
            "/admin/switches",
            json={"feature": "embeddings", "enabled": False},
            headers={"authorization": f"Bearer {token}"},
        )
        assert api.status_code == 401 and token not in api.text
    _, switches = await asyncio.to_thread(switch_store.load_switches, gw.app.engine)
    assert switches == []
