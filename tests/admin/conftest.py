"""Shared fixtures of the admin API tests: a live gateway with an admin token (SQLite and
PostgreSQL variants) and an HTTP client on it. A module that needs another config (a tier, a
fake clock) defines its own ``gw``; ``client`` follows it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from costwarden.mock import MockServer
from tests.helpers import LiveGateway, live_gateway

TOKEN = "adm-api-secret"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def gw(mock: MockServer, database_url: str, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with live_gateway(mock, database_url, tmp_path, admin_token=TOKEN) as gateway:
        yield gateway


@pytest.fixture
async def client(gw: LiveGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as c:
        yield c
