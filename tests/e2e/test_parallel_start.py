"""Several gateway processes starting at once against one fresh PostgreSQL database.

Each ``costwarden serve`` migrates on startup; the migrations take a PostgreSQL advisory
lock, so exactly one process creates the schema (and the single ``policy_state`` row) while
the others wait, and every process comes up healthy.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from costwarden.mock import MockServer
from costwarden.storage.db import create_engine_for
from tests.helpers import (
    free_port,
    gateway_toml,
    scratch_pg_database,
    spawn_gateway,
    stop_gateway,
    wait_healthy,
)

PROCESSES = 4


async def test_processes_starting_together_migrate_once(
    mock: MockServer, tmp_path: Path, pg_ready: None
) -> None:
    with scratch_pg_database() as url:
        started = []
        for i in range(PROCESSES):
            port = free_port()
            config = tmp_path / f"gw{i}.toml"
            config.write_text(gateway_toml(mock.base_url, url, port=port))
            log = tmp_path / f"gw{i}.log"
            started.append((spawn_gateway(config, log), log, f"http://127.0.0.1:{port}"))
        try:
            await asyncio.gather(*(wait_healthy(u, p, log) for p, log, u in started))
        finally:
            codes = [await asyncio.to_thread(stop_gateway, p) for p, _, _ in started]
        for (_, log, _), code in zip(started, codes, strict=True):
            assert code in (0, -15), log.read_text()
            assert "Traceback" not in log.read_text()
        engine = create_engine_for(url)
        try:
            with engine.connect() as conn:
                versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
                states = conn.execute(sa.text("SELECT count(*) FROM policy_state")).scalar_one()
        finally:
            engine.dispose()
        assert len(versions) == 1
        assert states == 1
