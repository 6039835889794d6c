"""The workers' metrics exchange over unix sockets (``serve --workers N``), two workers in one
event loop: a scrape of either shows both, a dead worker's socket is removed, a stalled one is
left out within the timeout. (tests/e2e/test_workers.py runs the real processes.)"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from costwarden.app import worker_metrics
from costwarden.app.worker_metrics import WorkerMetrics, socket_path
from costwarden.metrics import MetricsExporter, RequestMetrics
from tests.metrics.test_exporter import row


def _counts(text: bytes) -> dict[str, float]:
    """costwarden_requests_total summed, costwarden_workers, and each worker's requests."""
    out: dict[str, float] = {"requests": 0.0}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if s.name == "costwarden_requests_total":
                out["requests"] += s.value
            elif s.name == "costwarden_workers":
                out["workers"] = s.value
            elif s.name == "costwarden_worker_requests_total":
                out[s.labels["pid"]] = s.value
    return out


def _worker(run_dir: Path, pid: int, rows: int) -> tuple[MetricsExporter, WorkerMetrics]:
    exporter = MetricsExporter(RequestMetrics())
    for i in range(rows):
        exporter.observe(row(request_id=f"req_{pid}_{i}"))
    return exporter, WorkerMetrics(run_dir, exporter, pid=pid)


async def test_either_worker_answers_for_both(tmp_path: Path) -> None:
    a, mesh_a = _worker(tmp_path, 11, rows=3)
    b, mesh_b = _worker(tmp_path, 22, rows=5)
    await mesh_a.start()
    await mesh_b.start()
    try:
        for exporter in (a, b):
            assert _counts(await exporter.render()) == {
                "requests": 8, "workers": 2, "11": 3, "22": 5,
            }  # fmt: skip
        b.observe(row(request_id="late"))  # read when asked, not published on a timer
        assert _counts(await a.render())["22"] == 6
    finally:
        await mesh_b.close()
    assert not socket_path(tmp_path, 22).exists()  # removed by its worker at shutdown
    assert _counts(await a.render()) == {"requests": 3, "workers": 1, "11": 3}
    await mesh_a.close()


async def test_a_dead_workers_socket_is_removed(tmp_path: Path) -> None:
    a, mesh_a = _worker(tmp_path, 11, rows=2)
    await mesh_a.start()
    # What a SIGKILLed worker leaves: a socket file nobody listens on.
    stale = socket_path(tmp_path, 99)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(stale))
    assert stale.exists()
    try:
        assert _counts(await a.render()) == {"requests": 2, "workers": 1, "11": 2}
        assert not stale.exists()
    finally:
        await mesh_a.close()


async def test_a_stalled_worker_is_left_out_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(worker_metrics, "PEER_TIMEOUT_SECONDS", 0.2)
    a, mesh_a = _worker(tmp_path, 11, rows=1)
    await mesh_a.start()
    held: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    stalled = await asyncio.start_unix_server(never_answer, path=str(socket_path(tmp_path, 33)))
    try:
        started = asyncio.get_running_loop().time()
        with caplog.at_level(logging.WARNING):
            assert _counts(await a.render()) == {"requests": 1, "workers": 1, "11": 1}
        assert asyncio.get_running_loop().time() - started < 2
        assert "metrics of worker 33 left out of this scrape: TimeoutError" in caplog.text
        assert socket_path(tmp_path, 33).exists()  # alive: not removed
    finally:
        for writer in held:
            writer.close()
        stalled.close()
        await mesh_a.close()


async def test_garbage_from_a_worker_is_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, mesh_a = _worker(tmp_path, 11, rows=1)
    await mesh_a.start()

    async def garbage(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        writer.close()

    odd = await asyncio.start_unix_server(garbage, path=str(socket_path(tmp_path, 44)))
    try:
        with caplog.at_level(logging.WARNING):
            assert _counts(await a.render()) == {"requests": 1, "workers": 1, "11": 1}
        assert "metrics of worker 44 left out of this scrape: not a metrics scrape" in caplog.text
    finally:
        odd.close()
        await mesh_a.close()
