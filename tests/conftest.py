from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import settings

from costwarden.mock import MockServer, serve_mock
from tests.helpers import (
    HostileUpstream,
    RedisClusterNodes,
    free_port,
    hostile_upstream,
    pg_unavailable_reason,
    redis_cluster,
    scratch_pg_database,
)

# Hypothesis in CI (CI set): the same examples on every run, so a failure there reproduces
# anywhere (derandomize draws them from each test's own fixed seed), no example database to
# carry between runs, no per-example deadline (the machine's load is not the code's
# speed), and the failing example printed as a reproducible blob. Locally: the default random
# exploration, which finds new cases over time. Each test bounds its own max_examples.
settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=True
)
settings.load_profile("ci" if os.environ.get("CI") else "default")

# Tests that run one at a time, after the others (scripts/test.sh runs the rest in three
# workers): the files that use a database of the Redis on 6379 that others use too (and
# flush), and the end-to-end tests, which time real gateway processes.
_SERIAL = (
    "tests/e2e/",
    "tests/budgets/test_stores.py",
    "tests/budgets/test_outage.py",  # Redis db 15, as test_stores.py (its fixtures)
    "tests/routing/test_breakers.py",
)


# End-to-end tests that run in parallel nonetheless: they share no Redis database and assert
# counts, not timings (a PostgreSQL server of their own).
_PARALLEL = ("tests/e2e/test_database_outage.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(_SERIAL) and not item.nodeid.startswith(_PARALLEL):
            item.add_marker(pytest.mark.serial)


PROXY_VARIABLES = [
    name
    for base in ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
    for name in (base, base.upper())
]


@pytest.fixture(autouse=True)
def _no_proxy_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway honours the proxy variables (docs/providers.md, "Egress"); a machine that
    sets them must not send the tests' loopback calls through its proxy. The egress tests
    set their own."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


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


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of our own on a free port: FLUSHALL (or SIGSTOP) there touches nothing
    else. Its pid is in ``INFO server`` (``process_id``)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    client = redis.Redis(port=port)
    try:
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    raise AssertionError("redis-server exited") from None
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.send_signal(signal.SIGCONT)  # a test may have left it stopped
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def cluster() -> Iterator[RedisClusterNodes]:
    """A 3-shard Redis Cluster of our own (tests/helpers.redis_cluster), shared by the session's
    tests: each uses keys of its own (a fresh prefix or org). Skipped with the reason when it
    cannot start; under CI that fails instead, as require_redis does."""
    with contextlib.ExitStack() as stack:
        try:
            nodes = stack.enter_context(redis_cluster(3))
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            reason = f"no Redis Cluster: {exc}"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
        yield nodes
