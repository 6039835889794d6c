"""Shared test helpers: PostgreSQL scratch databases, a live gateway on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import hashlib
import hmac
import io
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
import redis
import redis.asyncio
import uvicorn
from aiohttp import web
from click.testing import CliRunner

import costwarden
from costwarden.alerts.rules import threshold_alert
from costwarden.app.factory import CostwardenApp, create_app
from costwarden.app.server import uvicorn_config
from costwarden.budgets.policy import checks_for
from costwarden.budgets.rebuild import compute_seeds
from costwarden.cli import main
from costwarden.config.settings import load_settings
from costwarden.core.event_kinds import LimitThresholdCrossed
from costwarden.core.records import LedgerRecord
from costwarden.mock import MockServer
from costwarden.mock.config import mock_gateway_toml
from costwarden.storage import policy, repo
from costwarden.storage.alert_records import AlertRecord
from costwarden.storage.alerts import raise_alert
from costwarden.storage.counters import LedgerAggregates
from costwarden.storage.redis import MAX_CONNECTIONS, redis_client
from costwarden.storage.usage import ledger_rows

PG_ADMIN_URL = os.environ.get("COSTWARDEN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
OPENAI_SECRET = "sk-provider-openai-SECRET-0123456789"
ANTHROPIC_SECRET = "sk-ant-provider-SECRET-9876543210"
PROVIDER_ENV = {"CW_TEST_OPENAI_KEY": OPENAI_SECRET, "CW_TEST_ANTHROPIC_KEY": ANTHROPIC_SECRET}


def pg_unavailable_reason() -> str | None:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}"


@contextmanager
def scratch_pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    import psycopg

    name = "cw_test_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def gateway_toml(
    mock_url: str,
    database_url: str,
    *,
    ledger_mode: str = "batched",
    timeout: float = 3.0,
    port: int = 4000,
    extra: str = "",
) -> str:
    """The mock-backed config, with provider credentials read from the test variables."""
    text = mock_gateway_toml(
        mock_url,
        database_url,
        port=port,
        ledger_mode=ledger_mode,
        flush_interval_ms=50,
        key_refresh_seconds=0.2,
        timeout=timeout,
    )
    text = text.replace('"OPENAI_API_KEY"', '"CW_TEST_OPENAI_KEY"').replace(
        '"ANTHROPIC_API_KEY"', '"CW_TEST_ANTHROPIC_KEY"'
    )
    return text + extra


@dataclasses.dataclass
class HostileUpstream:
    """An upstream whose every answer the test writes: ``handler`` answers each request.

    It records what the gateway sent (the raw bodies and the headers), so a test can check
    exactly what went upstream, and serves both wire formats' paths.
    """

    base_url: str = ""
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None
    bodies: list[bytes] = dataclasses.field(default_factory=list)
    headers: list[dict[str, str]] = dataclasses.field(default_factory=list)


@asynccontextmanager
async def hostile_upstream() -> AsyncIterator[HostileUpstream]:
    upstream = HostileUpstream()

    async def route(request: web.Request) -> web.StreamResponse:
        upstream.bodies.append(await request.read())
        upstream.headers.append({k.lower(): v for k, v in request.headers.items()})
        assert upstream.handler is not None, "the test set no handler"
        return await upstream.handler(request)

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", route)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        upstream.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield upstream
    finally:
        await runner.cleanup()


@dataclasses.dataclass
class LiveGateway:
    base_url: str
    key: str
    key_id: str
    app: CostwardenApp
    mock: MockServer | HostileUpstream

    @property
    def openai_url(self) -> str:
        return self.base_url + "/v1"


@asynccontextmanager
async def live_gateway(
    mock: MockServer | HostileUpstream,
    database_url: str,
    tmp_path: Path,
    *,
    ledger_mode: str = "batched",
    timeout: float = 3.0,
    admin_token: str | None = None,
    extra_toml: str = "",
    clock: Callable[[], float] = time.time,
    env: dict[str, str] | None = None,
) -> AsyncIterator[LiveGateway]:
    """A real gateway (uvicorn, loopback, port 0) in this event loop, with one org and key.

    ``extra_toml`` is appended to the config (e.g. ``[budgets]`` or price overrides);
    ``clock`` is the gateway's clock (epoch seconds), for tests that move time; ``env``
    adds environment overrides (e.g. ``COSTWARDEN_HEADER_TIMEOUT_SECONDS``).
    """
    config = tmp_path / f"gw-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(
        gateway_toml(
            mock.base_url, database_url, ledger_mode=ledger_mode, timeout=timeout, extra=extra_toml
        )
    )
    environ: dict[str, Any] = {**os.environ, **PROVIDER_ENV, **(env or {})}
    if admin_token:
        environ["COSTWARDEN_ADMIN_TOKEN"] = admin_token
    settings = load_settings(config, env=environ)
    settings.server.port = 0
    app = create_app(settings, clock=clock)
    server = uvicorn.Server(uvicorn_config(app, settings))
    server.config.log_config = None
    task = asyncio.create_task(server.serve())
    # uvicorn's serve() installs signal handlers only in the main thread; fine under pytest.
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("gateway did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    key, record = await asyncio.to_thread(repo.create_key, app.engine, org="acme", project="web")
    app.keys.apply([record])
    try:
        yield LiveGateway(f"http://127.0.0.1:{port}", key, record.id, app, mock)
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def process_redis(
    url: str, *, timeout: float = 1.0, cluster: bool = False
) -> AsyncIterator[redis.asyncio.Redis | redis.asyncio.RedisCluster]:
    """A Redis client as one gateway process has it (storage.redis.redis_client: one pool,
    the timeout, no retries; a Redis Cluster client with ``cluster``); closed at the end.
    Two of them are two processes."""
    client = redis_client(url, timeout=timeout, max_connections=MAX_CONNECTIONS, cluster=cluster)
    try:
        yield client
    finally:
        await client.aclose()


@dataclasses.dataclass(frozen=True)
class RedisClusterNodes:
    """A Redis Cluster of our own (:func:`redis_cluster`): its nodes' ports, all primaries."""

    ports: tuple[int, ...]

    @property
    def url(self) -> str:
        """The startup URL a gateway's ``[redis] url`` names (one node; the client finds the
        others from it)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{port}/0" for port in self.ports]


@contextmanager
def redis_cluster(shards: int = 3) -> Iterator[RedisClusterNodes]:
    """Start a Redis Cluster of ``shards`` primaries (no replicas) on free loopback ports, in
    a temporary directory; stop the servers and remove the directory at the end. Raises
    RuntimeError with the reason when it cannot start (the caller skips or fails)."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise RuntimeError("redis-server or redis-cli is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="cw-redis-cluster-"))
    procs: list[subprocess.Popen[bytes]] = []
    ports = _cluster_ports(shards)
    try:
        for port in ports:
            log = (workdir / f"redis-{port}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [
                        server, "--port", str(port), "--bind", "127.0.0.1",
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", str(workdir / f"nodes-{port}.conf"),
                        "--save", "", "--appendonly", "no", "--daemonize", "no",
                    ],  # fmt: skip
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                )
            )
            log.close()
        clients = [redis.Redis(port=port, socket_timeout=2) for port in ports]
        try:
            _wait_until(lambda: all(_pings(c) for c in clients), procs, workdir, "ping")
            created = subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                 "--cluster-replicas", "0", "--cluster-yes"],  # fmt: skip
                capture_output=True,
                timeout=60,
                check=False,
            )
            if created.returncode != 0:
                raise RuntimeError(
                    "redis-cli --cluster create failed:\n" + created.stdout.decode(errors="replace")
                    + created.stderr.decode(errors="replace")
                )
            _wait_until(lambda: all(_cluster_ok(c) for c in clients), procs, workdir, "state ok")
        finally:
            for c in clients:
                c.close()
        yield RedisClusterNodes(ports)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _cluster_ports(count: int) -> tuple[int, ...]:
    """Free ports P whose cluster bus port (P + 10000) is free too: a node listens on both,
    and refuses a port above 55535. Drawn below the kernel's ephemeral range (32768 and up),
    where the loopback servers of other tests get theirs."""
    rng = random.Random()
    found: list[int] = []
    while len(found) < count:
        port = rng.randrange(20000, 22768)
        if port in found:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        found.append(port)
    return tuple(found)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def _cluster_ok(client: redis.Redis) -> bool:
    """Whether this node's CLUSTER INFO says ``cluster_state:ok`` (every slot served)."""
    try:
        info = client.execute_command("CLUSTER INFO")
    except (redis.RedisError, OSError):
        return False
    if isinstance(info, dict):  # redis-py parses the reply into a dict
        return str(info.get("cluster_state")) == "ok"
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text


def _wait_until(
    ready: Callable[[], bool], procs: list[subprocess.Popen[bytes]], workdir: Path, what: str
) -> None:
    for _ in range(300):  # 30 s: a busy 2-core machine
        if ready():
            return
        if any(p.poll() is not None for p in procs):
            logs = "".join(p.read_text(errors="replace") for p in workdir.glob("redis-*.log"))
            raise RuntimeError(f"a cluster node exited before {what}:\n{logs}")
        time.sleep(0.1)
    raise RuntimeError(f"the Redis Cluster never reached {what}")


def redis_pid(url: str) -> int:
    """The process id of the redis-server at ``url`` (a test's own, to stop and resume)."""
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def require_redis(url: str) -> None:
    """Skip when no Redis answers at ``url``, with the reason; in CI, fail instead."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
        return
    except (redis.RedisError, OSError) as exc:
        reason = f"Redis not reachable at {url}: {exc}"
    finally:
        client.close()
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@dataclasses.dataclass
class CliResult:
    """What a CLI run printed and its exit code."""

    code: int
    out: str
    err: str

    @property
    def both(self) -> str:
        return self.out + self.err

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


# The CLI as a user runs it: a process of its own. Each one costs about a second of CPU to
# import, so most tests run the command in this process instead (invoke_cli, ainvoke_cli).
# A few still start it, for what only a real process shows: ``python -m costwarden.cli``
# itself, the exit status and stderr as the interpreter leaves them (no traceback), the
# environment and terminal width read at start-up (the rich consoles fix COLUMNS when
# imported), and another process writing the database that a running gateway polls.
CLI = [sys.executable, "-m", "costwarden.cli"]


def cli_env(columns: int = 250, **extra: str) -> dict[str, str]:
    """The test process's environment minus anything costwarden reads; wide tables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("COSTWARDEN_") and k not in PROVIDER_ENV
    }
    env["COLUMNS"] = str(columns)
    env.update(extra)
    return env


async def arun_cli(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """The CLI in a subprocess without blocking this event loop (a gateway may run in it);
    for the few tests that need a real process (see CLI), else ainvoke_cli."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env=cli_env() if env is None else env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


# In its own process the CLI configures no logging, so a record at WARNING or above reaches
# the user through Python's last-resort handler: the bare message on stderr. Here pytest's
# handlers would take it instead, and a test asserting what stderr holds (one line, nothing)
# would miss it; so the in-process runs print those records as that handler would. Only the
# CLI's own: the context marks its thread and the tasks and threads it starts (they copy the
# context), not a gateway serving in the test's event loop meanwhile.
_IN_CLI: contextvars.ContextVar[bool] = contextvars.ContextVar("in_cli", default=False)


class _LastResort(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def filter(self, record: logging.LogRecord) -> bool:
        return _IN_CLI.get()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")  # CliRunner's stderr while it runs
        except Exception:
            self.handleError(record)


def invoke_cli(*args: str, env: dict[str, str | None] | None = None) -> CliResult:
    """The CLI in this process (click's runner), in a wide terminal unless COLUMNS (in
    ``env``, or set by the test) says otherwise; an exception other than exit is raised."""
    wide = {"COLUMNS": os.environ.get("COLUMNS", "200")}
    handler = _LastResort()
    root = logging.getLogger()
    marked = _IN_CLI.set(True)
    root.addHandler(handler)
    try:
        result = CliRunner().invoke(main, list(args), env={**wide, **(env or {})})
    finally:
        root.removeHandler(handler)
        _IN_CLI.reset(marked)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)


def exactly(env: Mapping[str, str]) -> dict[str, str | None]:
    """invoke_cli's ``env`` under which the CLI sees exactly ``env`` (as a subprocess given
    it would): every other variable of this process is removed while it runs."""
    return {**{name: None for name in os.environ if name not in env}, **env}


def invoke_cli_as(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """invoke_cli with the environment a subprocess of arun_cli would get (``env``, by
    default cli_env()): the same call, in this process."""
    return invoke_cli(*args, env=exactly(cli_env() if env is None else env))


async def ainvoke_cli(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """invoke_cli_as in a worker thread, so that a gateway, mock or receiver serving in this
    event loop keeps answering the CLI.

    CliRunner swaps sys.stdin/stdout/stderr and os.environ for the whole process while the
    command runs. That is safe here: nothing serving in the loop writes to those streams
    (it logs, and pytest's handlers and _LastResort's filter keep that out of the CLI's
    stderr), and the gateway read its environment when it started (live_gateway). A command
    that runs ``asyncio.run`` gets a loop of its own in the thread, as in its own process."""
    return await asyncio.to_thread(invoke_cli_as, *args, env=env)


def assert_clean_error(result: CliResult, *needles: str) -> str:
    """Exit 2, one line on stderr starting with 'error:', nothing on stdout, no traceback;
    returns the line."""
    assert result.code == 2, result
    assert "Traceback" not in result.both, result.err
    line = result.err.strip()
    assert "\n" not in line, result.err
    assert line.startswith("error: "), line
    assert result.out == "", result.out
    for needle in needles:
        assert needle in line, (needle, line)
    return line


class FakeClock:
    """A clock tests move by hand (epoch seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            if proc.poll() is not None:
                raise AssertionError("gateway exited early:\n" + log.read_text())
            try:
                async with http.get(url + "/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("gateway never became healthy:\n" + log.read_text())


def spawn_gateway(
    config: Path, log: Path, env: dict[str, str] | None = None, args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """``costwarden serve --config`` (and ``args``) as a real process, output to ``log``.

    It imports the same ``costwarden`` as the tests (its source directory first on
    PYTHONPATH): run from a worktree, the gateway runs the worktree's code, not whatever the
    virtualenv has installed."""
    source = str(Path(costwarden.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "costwarden.cli", "serve", "--config", str(config), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **PROVIDER_ENV, "PYTHONPATH": path, **(env or {})},
        )


def stop_gateway(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# $10 per MTok in, $1000 per MTok out: a 1,000-token answer costs $1, so $5 goes in a few calls.
PRICEY = """
[[deployments]]
id = "openai:gpt-4o-mini"
price = { input_mtok = "10", output_mtok = "1000" }
"""
# 2027-03-10 10:00:30 UTC: mid-minute, far from midnight.
T0 = 1_804_672_830.0


async def set_limits(
    gw: LiveGateway, scope: str = "org", subject: str = "", **amounts: Any
) -> None:
    """Set limits on one scope of the live gateway's org ``acme``, and have it load them."""
    await asyncio.to_thread(
        policy.set_limits, gw.app.engine, org="acme", scope=scope, subject=subject, amounts=amounts
    )
    await gw.app.enforcer.refresh()


async def chat(
    gw: LiveGateway, body: dict[str, Any] | None = None, **headers: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST a chat completion (default: "hi" to gpt-4o-mini); (status, body, headers)."""
    payload = body or {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            gw.openai_url + "/chat/completions",
            json=payload,
            headers={"authorization": f"Bearer {gw.key}", **headers},
        ) as r:
            return (
                r.status,
                orjson.loads(await r.read()),
                {k.lower(): v for k, v in r.headers.items()},
            )


async def configure_mock(mock: MockServer, **fields: object) -> None:
    """Change the mock upstream's behaviour through its control API."""
    async with aiohttp.ClientSession() as http:
        async with http.post(mock.base_url + "/_mock/config", json=fields) as r:
            assert r.status == 200, await r.text()


async def mock_last(mock: MockServer, path: str) -> dict[str, Any]:
    """What the mock upstream last received at ``path``: its body and headers."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{mock.base_url}/_mock/last", params={"path": path}) as resp:
            assert resp.status == 200, await resp.text()
            found: dict[str, Any] = await resp.json()
            return found


async def ledger_row(gw: LiveGateway, request_id: str) -> LedgerRecord:
    """The ledger row of one request, after the writer flushed."""
    await gw.app.ledger.flush()
    rows = await asyncio.to_thread(ledger_rows, gw.app.engine, [request_id])
    assert len(rows) == 1, rows
    return rows[0]


async def mock_stats(mock: MockServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(mock.base_url + "/_mock/stats") as r:
            stats: dict[str, Any] = await r.json()
            return stats


async def post_json(
    gw: LiveGateway,
    path: str,
    body: bytes | dict[str, Any],
    key: str | None = "default",
    extra: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST to the gateway with its key (``key=None``: none); (status, JSON body, headers)."""
    headers = {"content-type": "application/json", **(extra or {})}
    if key == "default":
        key = gw.key
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    raw_body = body if isinstance(body, bytes) else orjson.dumps(body)
    data: Any = io.BytesIO(raw_body) if len(raw_body) > 1_000_000 else raw_body
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.base_url + path, data=data, headers=headers) as r:
            raw = await r.read()
            return r.status, orjson.loads(raw), {k.lower(): v for k, v in r.headers.items()}


def openai_error(body: dict[str, Any]) -> dict[str, Any]:
    """The ``error`` of an OpenAI-shaped error body, checked for shape."""
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    return error


def anthropic_error(body: dict[str, Any]) -> dict[str, Any]:
    """The ``error`` of an Anthropic-shaped error body, checked for shape."""
    assert body["type"] == "error", body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    return error


async def seconds_until_unreserved(gw: LiveGateway, org_id: str, within: float) -> float:
    """Seconds until no reservation is left in any calendar counter of the org (inf if not
    within ``within`` seconds)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    enforcer = gw.app.enforcer
    while True:
        checks = checks_for(enforcer.book.for_org(org_id), gw.app.clock(), enforcer.tz)
        views = await enforcer.store.views(checks, gw.app.clock())
        if all(v.reserved == 0 for c, v in zip(checks, views, strict=True) if not c.rolling):
            return loop.time() - start
        if loop.time() - start > within:
            return float("inf")
        await asyncio.sleep(0.05)


async def counters_minus_ledger(
    gw: LiveGateway, org_id: str
) -> tuple[dict[str, dict[str, int]], dict[str, dict[int, int]]]:
    """Per counter of the org, counter minus ledger (nothing when they agree): calendar
    counters' settled and reserved amounts, rolling counters' window totals; and, apart, the
    rolling counters' per-bucket differences (a request counts in the second it reserved in,
    its ledger row in the second it arrived in: they may differ by one)."""
    enforcer = gw.app.enforcer
    await gw.app.ledger.flush()
    now = gw.app.clock()
    checks = checks_for(enforcer.book.for_org(org_id), now, enforcer.tz)
    views = await enforcer.store.views(checks, now)
    families = {(c.limit.org_id, c.limit.scope, c.limit.metric, c.limit.window) for c in checks}
    ledger_sums = LedgerAggregates(gw.app.engine)
    seeds = await asyncio.to_thread(compute_seeds, ledger_sums, families, now, enforcer.tz)
    ledger = seeds[org_id].seeds
    diffs: dict[str, dict[str, int]] = {}
    seams: dict[str, dict[int, int]] = {}
    for check, view in zip(checks, views, strict=True):
        name = f"{check.limit.metric}/{check.limit.window}"
        want = ledger.get(check.key, {} if check.rolling else 0)
        if isinstance(want, dict):
            got = view.buckets
            if sum(got.values()) != sum(want.values()):
                diffs[name] = {"window": sum(got.values()) - sum(want.values())}
            seam = {b: got.get(b, 0) - want.get(b, 0) for b in sorted(set(got) | set(want))}
            if any(seam.values()):
                seams[name] = {b: d for b, d in seam.items() if d}
        elif (view.used, view.reserved) != (want, 0):
            diffs[name] = {"used": view.used - want, "reserved": view.reserved}
    return diffs, seams


class FlakyLink:
    """A TCP proxy on loopback in front of a Redis that can lose answers and hold commands.

    ``url``: the Redis URL to use instead of ``target`` (same database).
    ``drop_answers``: what Redis sends back is thrown away -- a command runs, but its caller
    times out with the outcome unknown. With ``drop_only`` set, only on a connection that
    sent a chunk containing it while ``drop_answers`` was set: a command already in flight
    then, or another connection's, still gets its answer.
    ``holding``: what clients send is held back (each chunk in order, as a stopped Redis keeps
    it in its socket; only chunks containing ``hold_only``, if set), and goes on when
    :meth:`release` lets it, even after its sender gave up -- a command that runs late, after
    commands sent later. Setting it False lets everything through.
    Both deterministic: a stopped Redis (SIGSTOP) cannot be relied on for either.
    """

    def __init__(self, target: str) -> None:
        parsed = urllib.parse.urlsplit(target)
        assert parsed.hostname is not None and parsed.port is not None, target
        self.host, self.port, self._db = parsed.hostname, parsed.port, parsed.path
        self.drop_answers = False
        self.drop_only = b""
        self._holding = False
        self.hold_only = b""
        self._held: list[asyncio.Event] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}{self._db}"

    @property
    def holding(self) -> bool:
        return self._holding

    @holding.setter
    def holding(self, value: bool) -> None:
        self._holding = value
        if not value:
            self.release()

    @property
    def held(self) -> int:
        """How many chunks were held so far (released ones included)."""
        return len(self._held)

    def release(self, *positions: int) -> None:
        """Let held chunks go on: those at ``positions`` (in the order they were held), or
        all of them."""
        for i in positions or range(len(self._held)):
            self._held[i].set()

    async def __aenter__(self) -> FlakyLink:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        marked = [False]  # this connection sent ``drop_only`` while answers were dropped
        commands = asyncio.create_task(self._commands(reader, up_writer, marked))
        answers = asyncio.create_task(self._answers(up_reader, writer, marked))
        self._tasks.update((commands, answers))
        try:
            # Until the client is gone and all it sent went on (held chunks too).
            await asyncio.wait([commands], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (commands, answers):
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, up_writer):
                w.close()

    async def _commands(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, marked: list[bool]
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if self.drop_answers and self.drop_only and self.drop_only in data:
                    marked[0] = True
                if self._holding and self.hold_only in data:
                    gate = asyncio.Event()
                    self._held.append(gate)
                    await gate.wait()
                writer.write(data)
                await writer.drain()
            await asyncio.sleep(0.05)  # let Redis read it before the connection closes

    async def _answers(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, marked: list[bool]
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if not self.drop_answers or (self.drop_only and not marked[0]):
                    writer.write(data)
                    await writer.drain()


def assert_admin_error(r: Any, status: int, kind: str | None = None) -> str:
    """An admin API error: ``status``, JSON ``{"error": {"type", "message"}}``; the message."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    error = r.json()["error"]
    assert isinstance(error["message"], str) and error["message"], error
    if kind is not None:
        assert error["type"] == kind, error
    message: str = error["message"]
    return message


@contextmanager
def database_down(url: str) -> Iterator[None]:
    """The database refuses new connections and its open ones are cut; restored after."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
    try:
        yield
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


class WebhookReceiver:
    """A webhook endpoint on loopback (``url``) that verifies every request's Standard Webhooks
    signature with the ``standardwebhooks`` library: ``verified`` holds the payloads (with
    their ``webhook-id`` as ``id``), ``forged`` counts the ones that failed verification, and
    while ``down`` it answers 503 (counted in ``refused``)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.verified: list[dict[str, Any]] = []
        self.forged = 0
        self.refused = 0
        self.down = False
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError

        if self.down:
            self.refused += 1
            return web.Response(status=503)
        body = await request.read()
        try:
            data = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.forged += 1
            return web.Response(status=400)
        self.verified.append({"id": request.headers["webhook-id"], **data})
        return web.Response(status=204)


@asynccontextmanager
async def webhook_receiver(secret: str) -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret)
    app = web.Application()
    app.router.add_post("/hook", receiver._handle)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
        yield receiver
    finally:
        await runner.cleanup()


def tool_round(i: int) -> list[dict[str, Any]]:
    """An agent's tool round trip: the same call and the same result every time (only the
    call's id differs): sent three times, loop detection pauses the session."""
    call = {"id": f"call_{i}", "type": "function",
            "function": {"name": "lookup_order", "arguments": '{"order": 7}'}}  # fmt: skip
    return [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": f"call_{i}", "content": "status: pending"},
    ]


async def pause_session(
    gw: LiveGateway, session: str, key: str | None = None
) -> tuple[str, list[Any]]:
    """Drive agent session ``session`` of ``key`` (the gateway's own by default) into a tool
    loop, through the openai SDK, until it is paused: (its escalation's id, the messages
    sent). The session board and the ledger are flushed before it returns."""
    async with openai.AsyncOpenAI(
        base_url=gw.openai_url, api_key=key or gw.key, max_retries=0,
        default_headers={"x-costwarden-session": session},
    ) as client:  # fmt: skip
        messages: list[Any] = [{"role": "user", "content": "has order 7 shipped?"}]
        for i in range(5):
            try:
                await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            except openai.ConflictError as exc:
                if gw.app.sessions is not None:
                    await gw.app.sessions.flush()
                await gw.app.ledger.flush()  # usage is read from the ledger's rows
                escalation: str = exc.response.json()["error"]["escalation_id"]
                return escalation, messages
            messages += tool_round(i)
    raise AssertionError("never paused")


async def raise_threshold_alert(
    gw: LiveGateway, pct: int, org: str | None = None
) -> AlertRecord:
    """An alert of org ``org`` (by name; the gateway's own org by default), raised as the
    gateway raises one when a daily USD budget's ``pct`` threshold is crossed: its
    AlertRecord."""
    orgs = await asyncio.to_thread(repo.list_orgs, gw.app.engine)
    org_id = orgs[0].id if org is None else next(o.id for o in orgs if o.name == org)
    crossing = LimitThresholdCrossed(
        org_id=org_id, scope="org", scope_id=org_id, window="day", metric="usd",
        threshold_pct=pct, used="8", limit="10", window_key="until:1",
    )  # fmt: skip
    alert = await asyncio.to_thread(raise_alert, gw.app.engine, threshold_alert(crossing))
    assert alert is not None
    return alert


async def sse_frames(
    lines: AsyncIterator[str],
    *,
    count: int | None = None,
    until: Callable[[dict[str, Any]], bool] | None = None,
    seconds: float = 10,
    raw: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The next events of an SSE stream as {id, event, data (JSON-decoded)}, comments
    skipped: ``count`` of them, or up to and with the first that ``until`` accepts. Every
    line read is appended to ``raw`` when given (to check what the stream never said)."""
    frames: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with asyncio.timeout(seconds):
        async for line in lines:
            if raw is not None:
                raw.append(line)
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                current[name] = orjson.loads(value) if name == "data" else value
                continue
            if current:
                frames.append(current)
                if len(frames) == count or (until is not None and until(current)):
                    return frames
                current = {}
    raise AssertionError(f"the stream ended after {len(frames)} events")


class TcpProxy:
    """A TCP forwarder we can take down and bring back: a database outage on demand."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._writers.clear()
        self._tasks.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()


class PrivatePostgres:
    """A PostgreSQL server of the test's own on a free port (initdb in ``directory``), which
    the test may stop and start: the machine's shared server is never stopped."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        # initdb and postgres refuse to run as root: as root, run them as the postgres user.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.directory / "server.log"), "-w", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.fail("initdb and pg_ctl (PostgreSQL's server binaries) are not on the PATH")
    # Not under pytest's tmp_path: its parents are private to this user, and the server may
    # run as another (postgres, when the tests run as root).
    directory = Path(tempfile.mkdtemp(prefix="cw-pg-"))
    server = PrivatePostgres(directory)
    try:
        server.init()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------- Stripe webhooks


def stripe_signature(payload: bytes, secret: str, *, ts: int | None = None) -> str:
    """A ``Stripe-Signature`` header as Stripe makes it: ``t=<ts>,v1=<hex HMAC-SHA256 of
    "<ts>.<payload>" under the endpoint's secret>`` (``ts`` default: now)."""
    stamp = int(time.time()) if ts is None else ts
    signed = f"{stamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def stripe_subscription_event(
    event_id: str,
    created: int,
    *,
    action: str = "updated",
    subscription: str = "sub_1",
    customer: str | None = "cus_1",
    status: str = "active",
    lookup_key: str | None = "pro_monthly",
    org: str | None = "acme",
) -> dict[str, Any]:
    """A ``customer.subscription.<action>`` event as Stripe sends it (the fields billing
    reads, and a few it does not)."""
    price = {"id": "price_1", "object": "price", "lookup_key": lookup_key, "unit_amount": 2000}
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": created,
        "livemode": False,
        "type": f"customer.subscription.{action}",
        "data": {
            "object": {
                "id": subscription,
                "object": "subscription",
                "customer": customer,
                "status": status,
                "metadata": {} if org is None else {"costwarden_org": org},
                "items": {"object": "list", "data": [{"id": "si_1", "price": price}]},
            }
        },
    }


def stripe_invoice_event(
    event_id: str,
    created: int,
    *,
    type_: str = "invoice.payment_failed",
    invoice: str = "in_1",
    customer: str | None = "cus_1",
    subscription: str = "sub_1",
    org: str | None = None,
) -> dict[str, Any]:
    """An ``invoice.*`` event (the 2025 API's shape: the subscription under ``parent``)."""
    details: dict[str, Any] = {"subscription": subscription, "metadata": {}}
    if org is not None:
        details["metadata"] = {"costwarden_org": org}
    return {
        "id": event_id,
        "object": "event",
        "created": created,
        "type": type_,
        "data": {
            "object": {
                "id": invoice,
                "object": "invoice",
                "customer": customer,
                "amount_due": 2000,
                "parent": {"type": "subscription_details", "subscription_details": details},
            }
        },
    }
