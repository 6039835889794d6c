"""Fixtures for storage tests: every backend-facing test runs on SQLite and on PostgreSQL.

PostgreSQL: a session creates its own databases named ``cw_test_<hex>`` (via the admin URL,
``COSTWARDEN_TEST_PG`` as in tests/helpers.py, default
``postgresql://postgres@127.0.0.1:5432/test``) and drops them at the end. If the server is
unreachable the PostgreSQL variants are skipped with the reason shown -- unless the ``CI``
environment variable is set, in which case they fail.

The PostgreSQL helpers (``make_pg_url``, ``drop_pg_database``, the ``pg_databases`` and
``pg_session_url`` fixtures) depend on nothing storage-specific and can move to
``tests/conftest.py``. ``pg_session_url`` is one migrated database shared by the session
(tables are truncated per test); ``tests/conftest.py``'s ``pg_url`` is a fresh database per
test and is deliberately not shadowed here.
"""

from __future__ import annotations

import dataclasses
import os
import random
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Connection, Engine, make_url

from costwarden.analytics.rollup import DIMENSIONS, Totals, hour_of, row_totals
from costwarden.core.records import LedgerRecord
from costwarden.storage import repo
from costwarden.storage.db import create_engine_for, redact_url
from costwarden.storage.ledger_rows import record_to_row
from costwarden.storage.migrate import migrate
from costwarden.storage.partitions import epoch_ms
from costwarden.storage.schema import ledger, metadata, rollup_hourly

PG_ADMIN_URL_ENV = "COSTWARDEN_TEST_PG"
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"

BACKENDS = ["sqlite", "postgresql"]


# --------------------------------------------------------------------------- PostgreSQL


def in_ci() -> bool:
    """True when running under CI (the ``CI`` environment variable is set and non-empty)."""
    return bool(os.environ.get("CI"))


def pg_admin_url() -> str:
    return os.environ.get(PG_ADMIN_URL_ENV) or DEFAULT_PG_ADMIN_URL


def _admin_connect(admin_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(admin_url, autocommit=True, connect_timeout=5)


def make_pg_url(admin_url: str | None = None) -> str:
    """Create a fresh, empty database ``cw_test_<hex>`` and return a URL for it.

    Raises ``psycopg.OperationalError`` if the server cannot be reached.
    """
    admin = admin_url or pg_admin_url()
    name = f"cw_test_{secrets.token_hex(6)}"
    with _admin_connect(admin) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(admin).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str, admin_url: str | None = None) -> None:
    """Drop the database ``url`` points at (terminating leftover connections)."""
    name = make_url(url).database
    assert name and name.startswith("cw_test_"), f"refusing to drop {name!r}"
    with _admin_connect(admin_url or pg_admin_url()) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[Callable[[], str]]:
    """Factory for fresh PostgreSQL databases; all are dropped when the session ends."""
    admin = pg_admin_url()
    try:
        with _admin_connect(admin):
            pass
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        reason = f"PostgreSQL unreachable at {redact_url(admin)}: {first_line}"
        if in_ci():
            pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
        pytest.skip(f"{reason} (under CI this is a failure)")
    created: list[str] = []

    def make() -> str:
        url = make_pg_url(admin)
        created.append(url)
        return url

    yield make
    errors: list[str] = []
    for url in created:
        try:
            drop_pg_database(url, admin)
        except psycopg.Error as exc:  # pragma: no cover - cleanup best effort, but loud
            errors.append(f"{make_url(url).database}: {exc}")
    assert not errors, f"could not drop test databases: {errors}"


@pytest.fixture(scope="session")
def pg_session_url(pg_databases: Callable[[], str]) -> str:
    """One PostgreSQL database for the whole session, migrated to head."""
    url = pg_databases()
    migrate(url)
    return url


# --------------------------------------------------------------------------- engines


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fresh_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A URL of an empty, unmigrated database on ``backend``."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh' / 'cw.db'}"
    factory: Callable[[], str] = request.getfixturevalue("pg_databases")
    return factory()


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A URL of a migrated database on ``backend`` whose tables are empty."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'cw.db'}"
        migrate(url)
        return url
    url = str(request.getfixturevalue("pg_session_url"))
    engine = create_engine_for(url)
    try:
        with engine.begin() as conn:
            names = ", ".join(t.name for t in metadata.sorted_tables)
            conn.execute(sa.text(f"TRUNCATE {names} CASCADE"))
    finally:
        engine.dispose()
    return url


def migrated_db_url(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> str:
    """A URL of a fresh database of its own on ``backend``, migrated, for a fixture wider
    than one test (``db_url``'s PostgreSQL database is emptied before every test)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('module-db') / 'cw.db'}"
    else:
        factory: Callable[[], str] = request.getfixturevalue("pg_databases")
        url = factory()
    migrate(url)
    return url


@pytest.fixture
def make_engine() -> Iterator[Callable[[str], Engine]]:
    """Create engines that are disposed after the test (no leaked connections)."""
    engines: list[Engine] = []

    def make(url: str) -> Engine:
        engine = create_engine_for(url)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def engine(db_url: str, make_engine: Callable[[str], Engine]) -> Engine:
    """An engine on a migrated, empty database (SQLite and PostgreSQL variants)."""
    return make_engine(db_url)


# --------------------------------------------------------------------------- records


@pytest.fixture
def make_record() -> Callable[..., LedgerRecord]:
    """Build a valid LedgerRecord; keyword arguments override fields."""
    counter = iter(range(1, 10**9))

    def make(**overrides: Any) -> LedgerRecord:
        n = next(counter)
        fields: dict[str, Any] = {
            "request_id": f"req_{secrets.token_hex(8)}",
            "ts": datetime(2024, 11, 21, 12, 0, 0, n % 1_000_000, tzinfo=UTC),
            "endpoint": "chat.completions",
            "status": "success",
            "http_status": 200,
            "provider": "openai",
            "requested_model": "gpt-4o-mini",
            "served_model": "gpt-4o-mini-2024-07-18",
            "input_tokens": 100 + n,
            "output_tokens": 20 + n,
            "cost_usd": Decimal("0.000000037500") * n,
            "latency_ms": 12.5,
            "overhead_ms": 0.25,
        }
        fields.update(overrides)
        return LedgerRecord(**fields)

    return make


# --------------------------------------------------------------------------- policy


class Ctx:
    """An org ``acme`` with a project and two keys (one revoked), and an org ``beta``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.acme, _ = repo.ensure_org(engine, "acme")
        self.beta, _ = repo.ensure_org(engine, "beta")
        self.web = repo.ensure_project(engine, self.acme, "web")
        self.beta_web = repo.ensure_project(engine, self.beta, "web")
        _, key = repo.create_key(engine, org="acme", project="web")
        self.key = key.id
        _, revoked = repo.create_key(engine, org="acme")
        self.revoked = repo.revoke_key(engine, revoked.id).id
        _, beta_key = repo.create_key(engine, org="beta")
        self.beta_key = beta_key.id


@pytest.fixture
def ctx(engine: Engine) -> Ctx:
    return Ctx(engine)


# --------------------------------------------------------------------------- analytics

ORGS = ["org_a", "org_b", None]
MODELS = [("gpt-4o-mini", "gpt-4o-mini-2024-07-18"), ("claude-haiku-4-5", None)]
STATUSES = ["success", "success", "success", "upstream_error", "blocked", "degraded"]


def random_record(rng: random.Random, ts: datetime) -> LedgerRecord:
    """A ledger record with every dimension drawn at random (analytics tests)."""
    requested, served = rng.choice(MODELS)
    tags = rng.choice([{}, {"team": "ml"}, {"team": "web", "env": "prod"}])
    return LedgerRecord(
        request_id=f"req_{rng.getrandbits(96):024x}",
        ts=ts,
        endpoint="chat.completions",
        status=rng.choice(STATUSES),
        http_status=200,
        org_id=rng.choice(ORGS),
        project_id=rng.choice([None, "prj_1", "prj_2"]),
        key_id=rng.choice(["key_1", "key_2"]),
        end_user=rng.choice([None, "alice", "bob"]),
        tags=tags,
        provider=rng.choice(["openai", "anthropic"]),
        requested_model=requested,
        served_model=served,
        input_tokens=rng.randrange(0, 5000),
        cached_input_tokens=rng.randrange(0, 100),
        output_tokens=rng.randrange(0, 2000),
        reasoning_tokens=rng.randrange(0, 50),
        cost_usd=Decimal(rng.randrange(0, 10**10)).scaleb(-12),  # up to $0.01, 12 places
        latency_ms=rng.uniform(1, 3000),
        ttft_ms=rng.choice([None, rng.uniform(1, 500)]),
        overhead_ms=0.3,
    )


def ledger_row(r: LedgerRecord) -> dict[str, Any]:
    """What the ledger row of ``r`` holds, as analytics reads it (model: served, else
    requested)."""
    return {
        "org_id": r.org_id, "project_id": r.project_id, "key_id": r.key_id,
        "end_user": r.end_user, "provider": r.provider,
        "model": r.served_model or r.requested_model, "status": r.status,
        "tags": "{}" if not r.tags else orjson.dumps(r.tags).decode(),
        "input_tokens": r.input_tokens, "cached_input_tokens": r.cached_input_tokens,
        "cache_write_tokens": r.cache_write_tokens, "output_tokens": r.output_tokens,
        "reasoning_tokens": r.reasoning_tokens, "cost_usd": r.cost_usd,
        "saved_usd": r.saved_usd, "latency_ms": r.latency_ms, "ttft_ms": r.ttft_ms, "ts": r.ts,
    }  # fmt: skip


def timed_record(rng: random.Random, ts: datetime) -> LedgerRecord:
    """:func:`random_record` with the id the gateway makes at ``ts``
    (``gateway.proxy.new_request_id``: its month's partition on PostgreSQL)."""
    rid = f"req_{epoch_ms(ts):012x}{rng.getrandbits(48):012x}"
    return dataclasses.replace(random_record(rng, ts), request_id=rid)


def ledger_placement(engine: Engine) -> dict[str, str]:
    """request id -> the partition holding its row (PostgreSQL)."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT request_id, tableoid::regclass::text FROM ledger")
        return {r[0]: r[1] for r in rows}


def insert_records(bind: Engine | Connection, records: list[LedgerRecord], written_ms: int) -> None:
    """``records`` in the ledger as if written at ``written_ms`` (the rollup's watermark runs
    over it); in the caller's transaction when given a Connection."""
    rows = [{**record_to_row(r), "written_ms": written_ms} for r in records]
    if isinstance(bind, Connection):
        bind.execute(ledger.insert(), rows)
        return
    with bind.begin() as conn:
        conn.execute(ledger.insert(), rows)


def expected_hourly(records: list[LedgerRecord]) -> dict[tuple[Any, ...], Totals]:
    """The hourly rollup ``records`` make: (hour, *dimensions) -> totals."""
    out: dict[tuple[Any, ...], Totals] = {}
    for r in records:
        row = ledger_row(r)
        key = (hour_of(r.ts), *(row[d] or "" for d in DIMENSIONS))
        out.setdefault(key, Totals()).add(row_totals(row))
    return out


def hourly_rollup(engine: Engine) -> dict[tuple[Any, ...], Totals]:
    """The hourly rollup in the database, keyed like :func:`expected_hourly`."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(rollup_hourly)).mappings().all()
    return {(row["hour"], *(row[d] for d in DIMENSIONS)): Totals.of(row) for row in rows}
