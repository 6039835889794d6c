"""Shared fixtures of the dashboard's tests: a live gateway with an admin token, two orgs
(acme, globex) with a virtual key each, admin keys for acme's org_admin, acme's viewer and
a platform-wide viewer, and :func:`sign_in`, which gives an HTTP client signed in to the
dashboard (its session cookie, and the CSRF token its pages carry); :func:`dashboard_routes`,
what the route-walking tests must cover."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import Mount, Route

from costwarden.console.app import routes
from costwarden.mock import MockServer
from costwarden.storage import repo
from costwarden.storage.admin_keys import create_admin_key
from tests.helpers import LiveGateway, live_gateway

TOKEN = "adm-dashboard-secret"
_CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


def dashboard_routes() -> set[tuple[str, str]]:
    """(method, path) of every dashboard route but the packaged assets."""
    found: set[tuple[str, str]] = set()
    for mount in routes():
        assert isinstance(mount, Mount)
        for route in mount.routes:
            if isinstance(route, Route):
                for method in route.methods or ():
                    if method != "HEAD":
                        found.add((method, mount.path + route.path))
    return found


@dataclasses.dataclass(frozen=True)
class Orgs:
    """The second org's virtual key (the gateway's own key is the first org's) and the
    admin keys of each role."""

    acme_key: str
    globex_key: str
    acme_admin: str
    acme_viewer: str
    platform_viewer: str


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only, here: the dashboard's modules hold no SQL of their own, and the storage
    reads they call are tested on SQLite and PostgreSQL (tests/storage, tests/admin). The
    tenant walk (test_tenant_walls.py) runs on both."""
    return f"sqlite:///{tmp_path}/costwarden.db"


@pytest.fixture
async def gw(mock: MockServer, database_url: str, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with live_gateway(mock, database_url, tmp_path, admin_token=TOKEN) as gateway:
        yield gateway


@pytest.fixture
async def orgs(gw: LiveGateway) -> Orgs:
    engine = gw.app.engine
    acme = gw.key  # live_gateway's own org
    org_names = [o.name for o in repo.list_orgs(engine)]
    assert len(org_names) == 1
    globex, _ = repo.create_key(engine, org="globex", project=None, name="globex-app")
    gw.app.keys.apply(repo.list_keys(engine))
    acme_org = org_names[0]
    admin, _ = create_admin_key(engine, role="org_admin", org=acme_org, actor="test")
    viewer, _ = create_admin_key(engine, role="viewer", org=acme_org, actor="test")
    platform_viewer, _ = create_admin_key(engine, role="viewer", actor="test")
    return Orgs(acme, globex, admin, viewer, platform_viewer)


@dataclasses.dataclass
class Signed:
    """A client signed in to the dashboard, and the CSRF token of its session."""

    client: httpx.AsyncClient
    csrf: str

    async def post(self, path: str, data: dict[str, str] | None = None) -> httpx.Response:
        """A form post with the session's CSRF token."""
        return await self.client.post(path, data={**(data or {}), "_csrf": self.csrf})


async def sign_in(base_url: str, credential: str) -> Signed:
    """A new client signed in with ``credential`` (close its ``client``)."""
    client = httpx.AsyncClient(base_url=base_url, timeout=30)
    r = await client.post("/dashboard/sign-in", data={"credential": credential})
    assert r.status_code == 303, r.text
    page = await client.get("/dashboard/")
    assert page.status_code == 200, page.text
    found = _CSRF.search(page.text)
    assert found is not None
    return Signed(client, found.group(1))


@pytest.fixture
async def admin(gw: LiveGateway) -> AsyncIterator[Signed]:
    """Signed in with the admin token (a platform_admin)."""
    signed = await sign_in(gw.base_url, TOKEN)
    try:
        yield signed
    finally:
        await signed.client.aclose()
