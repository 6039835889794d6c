from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from costwarden.mock import MockServer, serve_mock
from tests.helpers import (
    HostileUpstream,
    hostile_upstream,
    pg_unavailable_reason,
    scratch_pg_database,
)


@pytest.fixture(scope="session")
def pg_ready() -> None:
    reason = pg_unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def pg_url(pg_ready: None) -> Iterator[str]:
    with scratch_pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/costwarden.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with serve_mock("127.0.0.1", 0) as server:
        yield server


@pytest.fixture
async def hostile() -> AsyncIterator[HostileUpstream]:
    """An upstream the test scripts (see HostileUpstream)."""
    async with hostile_upstream() as upstream:
        yield upstream


@pytest.fixture
def clean_cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No COSTWARDEN_* variable from the developer's shell, and wide rich tables."""
    for name in list(os.environ):
        if name.startswith("COSTWARDEN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")
