"""``costwarden serve --workers 2`` on PostgreSQL + Redis: one port, both workers serve,
``/metrics`` sums both whichever answers, a killed worker is replaced, and SIGTERM drains
every worker's ledger and exits 0. (The hard budget under ``--workers 2``:
test_budget_concurrency.py.)"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import aiohttp
import openai
from prometheus_client.parser import text_string_to_metric_families

from costwarden.mock import MockServer
from costwarden.storage import repo
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from costwarden.storage.usage import ledger_rows
from tests.e2e.event_streams import REDIS_URL
from tests.helpers import free_port, gateway_toml, spawn_gateway, stop_gateway, wait_healthy

ADMIN_TOKEN = "admin-token-for-workers-test"
BATCH = 20


async def _scrape(url: str) -> tuple[float, dict[str, float]]:
    """(costwarden_requests_total summed, requests by worker pid), on a new connection: the
    kernel may hand it to either worker."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        async with http.get(url + "/metrics", headers=headers) as r:
            assert r.status == 200, await r.text()
            text = await r.text()
    total, workers = 0.0, {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "costwarden_requests_total":
                total += s.value
            elif s.name == "costwarden_worker_requests_total":
                workers[s.labels["pid"]] = s.value
    return total, workers


def _rows(database_url: str, org_id: str) -> int:
    engine = create_engine_for(database_url)
    try:
        return sum(1 for r in ledger_rows(engine, limit=100_000) if r.org_id == org_id)
    finally:
        engine.dispose()


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


async def _until(check: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {seconds:g} s: {what}")


async def test_two_workers_on_one_port(
    mock: MockServer, tmp_path: Path, shared_stack: str
) -> None:
    database_url = shared_stack
    engine = create_engine_for(database_url)
    try:
        migrate(engine)
        key, record = repo.create_key(engine, org="workers")
    finally:
        engine.dispose()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = tmp_path / "gw.toml"
    extra = f'[redis]\nurl = "{REDIS_URL}"\ntimeout_seconds = 10\n'
    config.write_text(gateway_toml(mock.base_url, database_url, port=port, extra=extra))
    log = tmp_path / "gw.log"
    proc = spawn_gateway(config, log, {"COSTWARDEN_ADMIN_TOKEN": ADMIN_TOKEN}, ["--workers", "2"])
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    sent = 0

    async def batch() -> None:
        nonlocal sent
        answers = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"hello {i}"}]
                )
                for i in range(BATCH)
            )
        )
        assert all(a.choices[0].message.content for a in answers)
        sent += BATCH

    try:
        await wait_healthy(url, proc, log)

        async def both_listening() -> bool:
            return len((await _scrape(url))[1]) == 2  # each joins once it is started

        await _until(both_listening, 60, "two workers in /metrics\n" + log.read_text())
        # Traffic until both have served (the kernel picks the worker of each connection).
        for _ in range(25):
            await batch()
            total, workers = await _scrape(url)
            if all(workers.values()):
                break
        assert len(workers) == 2 and all(workers.values()), workers
        pids = {int(p) for p in workers}
        assert {_parent(p) for p in pids} == {proc.pid}  # the supervisor's own workers
        # Whichever worker answers the scrape, it sums both.
        for _ in range(10):
            total, workers = await _scrape(url)
            assert total == sent and sum(workers.values()) == sent, (total, workers, sent)
            assert {int(p) for p in workers} == pids

        async def all_rows_written() -> bool:
            return await asyncio.to_thread(_rows, database_url, record.org_id) == sent

        await _until(all_rows_written, 20, f"{sent} ledger rows")
        # A worker killed outright is replaced; its metrics socket does not linger.
        killed = min(pids)
        os.kill(killed, signal.SIGKILL)

        async def replaced() -> bool:
            found = set((await _scrape(url))[1])
            return len(found) == 2 and str(killed) not in found

        await _until(replaced, 60, "a replacement worker\n" + log.read_text())
        run_dir = Path(re.findall(r"their metrics meet in (\S+)\)", log.read_text())[0])
        assert {p.name for p in run_dir.iterdir()} == {
            f"{p}.sock" for p in (await _scrape(url))[1]
        }
        await batch()  # both serve again
    finally:
        await client.close()
        code = await asyncio.to_thread(stop_gateway, proc)
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text, text
    # Every worker drained its ledger: one row per answer (the killed one's were written).
    assert _rows(database_url, record.org_id) == sent
    assert len(re.findall(r"ledger drained: \d+ rows written", text)) == 2
    assert not run_dir.exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
