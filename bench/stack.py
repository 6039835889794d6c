"""The system under test: the mock upstream and the gateway as real subprocesses."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from loadgen import BenchError

from costwarden.mock.config import mock_gateway_toml

HOST = "127.0.0.1"
# The gateway reads provider credentials from these; the mock accepts anything.
UPSTREAM_ENV = {
    "OPENAI_API_KEY": "bench-dummy-openai",
    "ANTHROPIC_API_KEY": "bench-dummy-anthropic",
}


class Service:
    """A subprocess in its own process group, its output captured to a log file."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        self._log_file: IO[bytes] = log.open("wb")
        # Own session, so cleanup can kill anything it spawned along with it.
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float) -> int:
        """SIGTERM and wait: the graceful path (the gateway drains its ledger on it)."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{self.name} did not exit within {timeout:g}s of SIGTERM") from None

    def kill(self) -> None:
        """Last resort for cleanup: SIGKILL the whole process group, never raises."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self._log_file.close()

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    # The port may in theory be taken again before the server binds it; on a bench
    # machine that race is not worth a retry loop.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cli() -> list[str]:
    """The ``costwarden`` command of the running interpreter's environment."""
    script = Path(sys.executable).with_name("costwarden")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "costwarden.cli"]


def clean_env() -> dict[str, str]:
    # COSTWARDEN_* variables override the config file: a developer's shell must not
    # silently change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTWARDEN_")}
    return {**env, **UPSTREAM_ENV}


def write_config(path: Path, db: Path, mock_port: int, gateway_port: int, extra: str = "") -> Path:
    """The mock gateway config, with ``extra`` TOML (e.g. a ``[budgets]`` table) appended."""
    mock = f"http://{HOST}:{mock_port}"
    toml = mock_gateway_toml(mock, f"sqlite:///{db}", port=gateway_port) + extra
    path.write_text(toml, encoding="utf-8")
    return path


def create_key(config: Path, env: dict[str, str]) -> tuple[str, str]:
    """A virtual key of org ``bench``: (the key itself, its id for key-scoped limits)."""
    cmd = [*cli(), "keys", "create", "--config", str(config), "--org", "bench", "--json"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise BenchError(f"keys create exited {done.returncode}: {done.stderr.strip()}")
    try:
        created = json.loads(done.stdout)
        return str(created["key"]), str(created["id"])
    except (ValueError, KeyError, TypeError):
        raise BenchError(f"keys create printed no key: {done.stdout!r}") from None


def wait_ready(service: Service, port: int, path: str, timeout: float = 30.0) -> None:
    """Poll ``GET path`` until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise BenchError(f"{service.name} exited with {service.proc.returncode} on start")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if _get_status(port, path) == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"{service.name} did not answer 200 on {path} within {timeout:g}s")


def _get_status(port: int, path: str) -> int:
    return _get(port, path)[0]


def _get(port: int, path: str) -> tuple[int, bytes]:
    # http.client rather than urllib: urllib would honour an http_proxy variable.
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def mock_requests_settled(port: int, timeout: float = 5.0) -> int:
    """The mock's request counter once it has stopped moving.

    When wrk stops, the gateway still finishes the requests it had in flight (and bills
    them); waiting for the counter to settle makes those part of the run that sent them.
    """
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        status, body = _get(port, "/_mock/stats")
        if status != 200:
            raise BenchError(f"mock /_mock/stats answered {status}")
        stats = json.loads(body)
        count = int(stats["requests"])
        if (count == last and stats["in_flight"] == 0) or time.monotonic() > deadline:
            return count
        last = count
        time.sleep(0.2)


def overhead_header_samples(
    port: int, path: str, body: bytes, headers: dict[str, str], count: int
) -> list[float]:
    """``x-costwarden-overhead-ms`` of ``count`` sequential requests on one connection."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    samples: list[float] = []
    try:
        for _ in range(count):
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise BenchError(f"gateway answered {resp.status} to a header sample")
            value = resp.getheader("x-costwarden-overhead-ms")
            if value is None:
                raise BenchError("gateway response has no x-costwarden-overhead-ms header")
            samples.append(float(value))
    finally:
        conn.close()
    return samples


def response_headers(port: int, path: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """The headers of one POST's 200 response (lower-cased names)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise BenchError(f"gateway answered {resp.status} to a sample request")
        return {name.lower(): value for name, value in resp.getheaders()}
    finally:
        conn.close()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def count_ledger_rows(db: Path, *, abandoned: bool = False) -> int:
    """The ledger's rows; with ``abandoned``, only those of requests their client gave up
    on (499: wrk closing its connections at the end of a run)."""
    # Read-only: the benchmark inspects the ledger, it must never be the one writing it.
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    where = " WHERE http_status = 499" if abandoned else ""
    try:
        return int(conn.execute(f"SELECT count(*) FROM ledger{where}").fetchone()[0])
    finally:
        conn.close()
